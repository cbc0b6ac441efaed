//! The open-file limit: raised to the hard limit at start, and checked
//! against what the configured servers need (issue 13: 10,000 upstreams
//! on one machine).
//!
//! The estimate is an upper bound: one descriptor per HTTP upstream (its
//! pooled connection during a round or a call; a round's listing closes
//! it), one more per push stream it may open (a connection of its own,
//! ADR 0027), three per
//! stdio child (its pipes), plus [`HEADROOM`] for the listener, the API's
//! clients, the store and the log. Not fitting is a loud warning, not a
//! refusal to start: the bound counts push streams an upstream may never
//! open, so a config it flags can still run; what must never happen is the
//! 4000th upstream failing with `EMFILE` and nobody told why.

use discovery_config::{Config, ServerSpec, TransportKind};

/// Descriptors kept for everything that is not an upstream.
pub const HEADROOM: u64 = 256;

/// Descriptors a server may hold at once.
pub fn per_server(spec: &ServerSpec) -> u64 {
    match spec.transport() {
        TransportKind::Stdio => 3,
        // SSE: the event stream plus the POST connection.
        TransportKind::Sse => 2,
        TransportKind::StreamableHttp | TransportKind::Auto => 1 + u64::from(spec.push),
    }
}

/// Descriptors the configured servers need at most, headroom included.
pub fn needed(config: &Config) -> u64 {
    HEADROOM + config.servers.values().map(per_server).sum::<u64>()
}

/// What [`raise`] found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The soft limit before.
    pub before: u64,
    /// The soft limit now.
    pub soft: u64,
    pub hard: u64,
}

/// Raises the soft open-file limit to the hard one.
#[cfg(unix)]
pub fn raise() -> std::io::Result<Limits> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (before, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if before < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    Ok(Limits { before, soft, hard })
}

/// The message when `needed` descriptors do not fit in `limits`, or None.
pub fn shortfall(limits: Limits, needed: u64, servers: usize) -> Option<String> {
    (needed > limits.soft).then(|| {
        format!(
            "The open-file limit (RLIMIT_NOFILE soft {soft}, hard {hard}) is below the {needed} \
             descriptors {servers} configured servers may need ({HEADROOM} of them headroom): \
             connections past the limit fail with \"Too many open files\". Hint: raise the \
             hard limit (`ulimit -Hn`, systemd LimitNOFILE=, docker --ulimit nofile=) to at \
             least {needed}",
            soft = limits.soft,
            hard = limits.hard,
        )
    })
}

/// At start: raises the limit and warns, naming the numbers, when the
/// configured servers may not fit.
pub fn raise_and_check(config: &Config) {
    #[cfg(unix)]
    match raise() {
        Ok(limits) => {
            if limits.soft != limits.before {
                tracing::debug!(
                    from = limits.before,
                    to = limits.soft,
                    "Raised the open-file limit to the hard limit."
                );
            }
            if let Some(msg) = shortfall(limits, needed(config), config.servers.len()) {
                tracing::warn!("{msg}");
            }
        }
        Err(err) => {
            tracing::warn!(error = %err, "Could not read or raise the open-file limit (RLIMIT_NOFILE).")
        }
    }
    #[cfg(not(unix))]
    let _ = config;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raise_reaches_the_hard_limit() {
        let limits = raise().unwrap();
        assert_eq!(limits.soft, limits.hard);
        assert!(limits.soft >= limits.before);
    }

    #[test]
    fn shortfall_names_the_limit_and_the_numbers() {
        let limits = Limits {
            before: 1024,
            soft: 1024,
            hard: 1024,
        };
        assert_eq!(shortfall(limits, 1024, 700), None);
        let msg = shortfall(limits, 20_256, 10_000).unwrap();
        for part in [
            "RLIMIT_NOFILE soft 1024, hard 1024",
            "20256",
            "10000 configured servers",
        ] {
            assert!(msg.contains(part), "{msg}");
        }
    }
}
