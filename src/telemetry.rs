//! Logging: `tracing` with a `RUST_LOG` filter, as text or JSON, on stderr
//! (stdout belongs to command output such as `check` and `probe --json`).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (coloured on a terminal).
    #[default]
    Text,
    /// One JSON object per line, with the current span's fields.
    Json,
}

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("could not install the log subscriber: {0}")]
    Install(String),
}

/// Installs the global subscriber. `default_directive` (e.g. `info`) applies
/// when `RUST_LOG` is unset; an invalid `RUST_LOG` falls back to it with a
/// warning instead of failing start-up.
pub fn init(format: LogFormat, default_directive: &str) -> Result<(), TelemetryError> {
    let (filter, bad_rust_log) = match EnvFilter::try_from_default_env() {
        Ok(filter) => (filter, None),
        Err(err) => {
            let bad = std::env::var_os(EnvFilter::DEFAULT_ENV).map(|_| err.to_string());
            (EnvFilter::new(default_directive), bad)
        }
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let installed = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .try_init(),
    };
    installed.map_err(|e| TelemetryError::Install(e.to_string()))?;
    if let Some(reason) = bad_rust_log {
        tracing::warn!(
            %reason,
            default = default_directive,
            "Ignoring the invalid RUST_LOG; using the default filter"
        );
    }
    Ok(())
}
