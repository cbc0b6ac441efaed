//! The cache hints of the endpoint's answers (ADR 0017): `ttlMs` is how
//! long an answer cannot change without a notification the client can
//! get, the time until the soonest scheduled re-listing among the servers
//! it covers, capped by `mcp.max_ttl`; `cacheScope` is `private` when reads
//! are protected or any covered server said `private`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use chrono::{DateTime, Utc};
use discovery_actors::mcp::cache::CacheScope;
use discovery_actors::{DiscoveryState, ServersSnapshot};
use discovery_config::Config;

use super::listing::Scope;

/// What the covered servers allow an answer to promise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hint {
    /// The soonest scheduled change; None when nothing is scheduled (no
    /// server covered), `DateTime::MIN_UTC` when one can come any moment.
    pub due: Option<DateTime<Utc>>,
    /// Some covered server's own answer was `private`.
    pub private_upstream: bool,
}

impl Hint {
    /// Of `servers` as `scope` covers them under `config`.
    pub fn of(servers: &ServersSnapshot, config: &Config, scope: &Scope) -> Self {
        let mut due: Option<DateTime<Utc>> = None;
        let mut private_upstream = false;
        for (name, view) in &servers.servers {
            if !scope.covers(name, config) {
                continue;
            }
            let next = match view.state {
                // Starting: its first listing can land at any moment.
                DiscoveryState::Unknown | DiscoveryState::Connecting => DateTime::<Utc>::MIN_UTC,
                DiscoveryState::Healthy | DiscoveryState::Degraded => {
                    view.next_refresh_at.unwrap_or(DateTime::<Utc>::MIN_UTC)
                }
            };
            due = Some(due.map_or(next, |d| d.min(next)));
            if view
                .cache
                .is_some_and(|c| c.scope == Some(CacheScope::Private))
            {
                private_upstream = true;
            }
        }
        Self {
            due,
            private_upstream,
        }
    }

    /// `ttlMs` at `now`.
    pub fn ttl_ms(&self, now: DateTime<Utc>, max_ttl: Duration) -> u64 {
        let max = u64::try_from(max_ttl.as_millis()).unwrap_or(u64::MAX);
        match self.due {
            None => max,
            Some(due) => {
                let left = (due - now).num_milliseconds();
                u64::try_from(left).unwrap_or(0).min(max)
            }
        }
    }

    /// `cacheScope` under `config`.
    pub fn scope(&self, config: &Config) -> &'static str {
        if config.admin.protect_reads || self.private_upstream {
            "private"
        } else {
            "public"
        }
    }
}

/// [`Hint`]s per scope, computed once per servers snapshot (at 10k
/// servers, a walk over every view per request would cost more than the
/// answer).
#[derive(Default)]
pub struct Hints {
    cache: Mutex<HashMap<Scope, HintEntry>>,
}

/// A hint and what it was computed from.
struct HintEntry {
    servers: Weak<ServersSnapshot>,
    config: Weak<Config>,
    hint: Hint,
}

impl Hints {
    pub fn get(&self, servers: &Arc<ServersSnapshot>, config: &Arc<Config>, scope: &Scope) -> Hint {
        let mut cache = super::lock(&self.cache);
        if let Some(e) = cache.get(scope) {
            let same_servers = e
                .servers
                .upgrade()
                .is_some_and(|s| Arc::ptr_eq(&s, servers));
            let same_config = e.config.upgrade().is_some_and(|c| Arc::ptr_eq(&c, config));
            if same_servers && same_config {
                return e.hint;
            }
        }
        let hint = Hint::of(servers, config, scope);
        if cache.len() > 4096 {
            cache.clear();
        }
        cache.insert(
            scope.clone(),
            HintEntry {
                servers: Arc::downgrade(servers),
                config: Arc::downgrade(config),
                hint,
            },
        );
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use discovery_actors::mcp::cache::CacheHint;
    use discovery_actors::status::CacheView;
    use discovery_actors::ServerView;
    use indexmap::IndexMap;

    fn view(name: &str, state: DiscoveryState, next: Option<DateTime<Utc>>) -> ServerView {
        let cfg = discovery_config::load_str(
            &format!("servers:\n  {name}: {{url: 'http://127.0.0.1:1/mcp'}}\n"),
            discovery_config::Format::Yaml,
            None,
            &[],
        )
        .unwrap();
        let mut v = discovery_actors::upstream::initial_view(&cfg.servers[name], 1);
        v.state = state;
        v.next_refresh_at = next;
        v
    }

    fn snapshot(views: Vec<ServerView>) -> ServersSnapshot {
        ServersSnapshot {
            servers: views
                .into_iter()
                .map(|v| (v.name.clone(), v))
                .collect::<IndexMap<_, _>>(),
        }
    }

    #[test]
    fn ttl_is_the_time_to_the_soonest_scheduled_change_capped() {
        let now = Utc::now();
        let in_ = |s: i64| Some(now + chrono::Duration::seconds(s));
        let servers = snapshot(vec![
            view("a", DiscoveryState::Healthy, in_(60)),
            view("b", DiscoveryState::Healthy, in_(20)),
            view("c", DiscoveryState::Degraded, in_(5)),
        ]);
        let cfg = discovery_config::load_str(
            "views:\n  ab:\n    servers: [a, b]\n",
            discovery_config::Format::Yaml,
            None,
            &[],
        )
        .unwrap();
        let max = Duration::from_secs(300);
        let all = Hint::of(&servers, &cfg, &Scope::All);
        assert_eq!(all.ttl_ms(now, max), 5_000);
        let ab = Hint::of(&servers, &cfg, &Scope::View("ab".into()));
        assert_eq!(ab.ttl_ms(now, max), 20_000);
        let a = Hint::of(&servers, &cfg, &Scope::Server("a".into()));
        assert_eq!(
            a.ttl_ms(now, Duration::from_secs(30)),
            30_000,
            "capped by max_ttl"
        );
        assert_eq!(
            a.ttl_ms(now + chrono::Duration::seconds(90), max),
            0,
            "overdue"
        );
        // A server still starting can change at once.
        let starting = snapshot(vec![
            view("a", DiscoveryState::Healthy, in_(60)),
            view("b", DiscoveryState::Connecting, None),
        ]);
        assert_eq!(Hint::of(&starting, &cfg, &Scope::All).ttl_ms(now, max), 0);
        // Nothing covered: nothing can change on a schedule.
        let none = Hint::of(&servers, &cfg, &Scope::Server("zzz".into()));
        assert_eq!(none.ttl_ms(now, max), 300_000);
    }

    #[test]
    fn scope_is_private_when_reads_are_protected_or_an_upstream_said_so() {
        let mut private = view("p", DiscoveryState::Healthy, None);
        private.cache = Some(CacheView::new(
            CacheHint {
                ttl_ms: 0,
                scope: Some(CacheScope::Private),
            },
            Utc::now(),
        ));
        let servers = snapshot(vec![view("a", DiscoveryState::Healthy, None), private]);
        let open = Config::embedded_defaults();
        assert_eq!(
            Hint::of(&servers, &open, &Scope::Server("a".into())).scope(&open),
            "public"
        );
        assert_eq!(
            Hint::of(&servers, &open, &Scope::All).scope(&open),
            "private"
        );
        let mut protected = Config::embedded_defaults();
        protected.admin.protect_reads = true;
        assert_eq!(
            Hint::of(&servers, &protected, &Scope::Server("a".into())).scope(&protected),
            "private"
        );
    }
}
