//! The Supervisor: the one actor that owns the running configuration and
//! every [`Upstream`]. It applies a [`ConfigDiff`] (start added, stop
//! removed, restart changed with a new generation, leave unchanged alone)
//! and spreads upstreams over a fixed pool of arbiters sized to the cores.
//!
//! An upstream that is gone without being told to stop (a panic in one of
//! its handlers, its arbiter dying) reports [`UpstreamExited`] from the drop
//! of its state; the supervisor restarts it, same spec, new generation,
//! after a capped backoff (`UPSTREAM_RESTART_*`), and logs it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use discovery_config::{
    diff_servers, server_from_value, Config, ConfigDiff, ConfigErrors, ServerName, ServerSource,
    ServerSpec,
};
use futures_util::future::join_all;
use indexmap::IndexMap;
use tokio::sync::watch;

use crate::catalog::Catalog;
use crate::events::DiscoveryEvents;
use crate::registry::{Register, Registry, Unregister};
use crate::status::ServersSnapshot;
use crate::upstream::{initial_view, Halt, Refresh, Stop, Upstream, UpstreamExited, UpstreamInit};

/// Restart delay of an upstream actor that died: doubling from the first
/// up to the cap; an incarnation that ran for `UPSTREAM_RESTART_RESET`
/// starts the count over.
const UPSTREAM_RESTART_INITIAL: Duration = Duration::from_millis(100);
const UPSTREAM_RESTART_MAX: Duration = Duration::from_secs(30);
const UPSTREAM_RESTART_RESET: Duration = Duration::from_secs(60);

/// Handles to a running engine. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    pub supervisor: Addr<Supervisor>,
    /// The registry; `/healthz` checks it is still running
    /// (`Addr::connected`, no mailbox round trip).
    pub registry: Addr<Registry>,
    /// Latest catalog; read with `borrow()`, lock-free for practical purposes.
    pub catalog: watch::Receiver<Arc<Catalog>>,
    /// Latest per-server status.
    pub servers: watch::Receiver<Arc<ServersSnapshot>>,
}

/// Starts registry + supervisor on the current System and applies `config`.
/// Must be called from within a running actix System.
pub fn start_engine(config: Arc<Config>, events: Arc<dyn DiscoveryEvents>) -> Engine {
    let (registry, catalog, servers) = Registry::new(events.clone());
    let registry = registry.start();
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let supervisor = Supervisor::new(registry.clone(), events, workers).start();
    supervisor.do_send(ApplyConfig(config));
    Engine {
        supervisor,
        registry,
        catalog,
        servers,
    }
}

struct Running {
    addr: Addr<Upstream>,
    generation: u64,
    spec: Arc<ServerSpec>,
    started: Instant,
    /// Unexpected exits in a row (for the restart backoff).
    restarts: u32,
}

/// Owns every upstream. Exactly one per engine.
pub struct Supervisor {
    registry: Addr<Registry>,
    events: Arc<dyn DiscoveryEvents>,
    arbiters: Vec<Arbiter>,
    next_arbiter: usize,
    next_generation: u64,
    separator: String,
    upstreams: IndexMap<ServerName, Running>,
    /// The last applied configuration (its globals apply to API servers).
    config: Arc<Config>,
    /// Servers registered over the API, as registered (raw config
    /// entries): their effective settings are recomputed on every reload.
    api: IndexMap<ServerName, serde_json::Value>,
    shutting_down: bool,
}

impl Supervisor {
    /// `workers` arbiter threads host the upstreams (at least one).
    pub fn new(registry: Addr<Registry>, events: Arc<dyn DiscoveryEvents>, workers: usize) -> Self {
        let arbiters = (0..workers.max(1)).map(|_| Arbiter::new()).collect();
        Self {
            registry,
            events,
            arbiters,
            next_arbiter: 0,
            next_generation: 0,
            separator: String::new(),
            upstreams: IndexMap::new(),
            config: Arc::new(Config::embedded_defaults()),
            api: IndexMap::new(),
            shutting_down: false,
        }
    }

    fn start_upstream(&mut self, spec: Arc<ServerSpec>, ctx: &mut Context<Self>) {
        self.start_upstream_after(spec, 0, ctx);
    }

    /// Starts an upstream that has died `restarts` times in a row.
    fn start_upstream_after(
        &mut self,
        spec: Arc<ServerSpec>,
        restarts: u32,
        ctx: &mut Context<Self>,
    ) {
        self.next_generation += 1;
        let generation = self.next_generation;
        // Register first so the server shows (and orders) at once, and so a
        // late report of an older incarnation is already outdated.
        self.registry.do_send(Register {
            view: initial_view(&spec, generation),
        });
        let init = UpstreamInit {
            spec: spec.clone(),
            generation,
            separator: self.separator.clone(),
            registry: self.registry.clone(),
            events: self.events.clone(),
            exited: ctx.address().downgrade().recipient(),
        };
        let index = self.next_arbiter % self.arbiters.len();
        self.next_arbiter = self.next_arbiter.wrapping_add(1);
        let addr = match self.arbiters.get(index) {
            Some(arbiter) => {
                Upstream::start_in_arbiter(&arbiter.handle(), move |_| Upstream::new(init))
            }
            None => Upstream::new(init).start(),
        };
        self.upstreams.insert(
            spec.name.clone(),
            Running {
                addr,
                generation,
                spec,
                started: Instant::now(),
                restarts,
            },
        );
    }

    /// Stops an upstream without waiting; its tools leave the catalog.
    fn stop_upstream(&mut self, name: &ServerName, removed: bool) {
        if let Some(running) = self.upstreams.shift_remove(name) {
            running.addr.do_send(Stop);
            if removed {
                self.registry.do_send(Unregister {
                    name: name.to_string(),
                    generation: running.generation,
                });
                self.events.server_removed(name.as_str());
            }
        }
    }
}

impl Actor for Supervisor {
    type Context = Context<Self>;

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        for arbiter in &self.arbiters {
            arbiter.stop();
        }
    }
}

impl Supervisor {
    /// Every server that should run under `config`: the file's, then the
    /// API's with their effective settings under `config`'s globals. A
    /// name in both is an error (the reload that adds it is rejected).
    fn desired(
        &self,
        config: &Config,
        api: &IndexMap<ServerName, serde_json::Value>,
    ) -> Result<IndexMap<ServerName, ServerSpec>, ApplyError> {
        let mut out = config.servers.clone();
        let taken: Vec<String> = api
            .keys()
            .filter(|name| out.contains_key(*name))
            .map(ToString::to_string)
            .collect();
        if !taken.is_empty() {
            return Err(ApplyError::NameTaken(taken));
        }
        for (name, entry) in api {
            match server_from_value(
                name.as_str(),
                entry.clone(),
                &config.discovery,
                &config.catalog.separator,
                ServerSource::Api,
            ) {
                Ok(spec) => {
                    out.insert(name.clone(), spec);
                }
                // Valid when registered; invalid under the new globals (a new
                // separator inside its name): keep what runs, say why.
                Err(errors) => {
                    tracing::warn!(server = %name, errors = %errors, "A registered server is not valid under the new configuration; it keeps its settings.");
                    if let Some(running) = self.upstreams.get(name) {
                        out.insert(name.clone(), (*running.spec).clone());
                    }
                }
            }
        }
        Ok(out)
    }

    /// Makes the running upstreams match `desired`: start added, stop
    /// removed, restart changed, leave the others alone.
    fn converge(
        &mut self,
        desired: &IndexMap<ServerName, ServerSpec>,
        separator: &str,
        ctx: &mut Context<Self>,
    ) -> ConfigDiff {
        let current: IndexMap<ServerName, ServerSpec> = self
            .upstreams
            .iter()
            .map(|(name, r)| (name.clone(), (*r.spec).clone()))
            .collect();
        let mut diff = diff_servers(&current, desired);
        // The separator is part of every tool name: a new one changes all.
        if separator != self.separator {
            self.separator = separator.to_owned();
            diff.changed.append(&mut diff.unchanged);
        }
        for name in &diff.removed {
            self.stop_upstream(name, true);
        }
        for name in &diff.changed {
            self.stop_upstream(name, false);
        }
        for name in diff.added.iter().chain(&diff.changed) {
            if let Some(spec) = desired.get(name) {
                self.start_upstream(Arc::new(spec.clone()), ctx);
            }
        }
        // Keep the desired order (file order, then API registrations).
        self.upstreams
            .sort_by_cached_key(|name, _| desired.get_index_of(name));
        diff
    }

    fn is_file_server(&self, name: &ServerName) -> bool {
        self.config.servers.contains_key(name)
    }
}

/// Why a configuration was not applied (nothing changed).
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("server name(s) {} are already registered over the API. Hint: delete them with DELETE /v1/servers/NAME first, or pick other names", .0.join(", "))]
    NameTaken(Vec<String>),
    #[error("the engine is shutting down")]
    ShuttingDown,
}

/// Sent by the service (start-up, reload): diff against the running servers
/// and start / stop / restart upstreams accordingly. Replies with the diff,
/// or why nothing was applied.
#[derive(Message)]
#[rtype(result = "Result<ConfigDiff, ApplyError>")]
pub struct ApplyConfig(pub Arc<Config>);

impl Handler<ApplyConfig> for Supervisor {
    type Result = Result<ConfigDiff, ApplyError>;

    fn handle(&mut self, msg: ApplyConfig, ctx: &mut Self::Context) -> Self::Result {
        if self.shutting_down {
            return Err(ApplyError::ShuttingDown);
        }
        let config = msg.0;
        let desired = self.desired(&config, &self.api)?;
        let diff = self.converge(&desired, &config.catalog.separator, ctx);
        self.config = config;
        tracing::info!(
            added = diff.added.len(),
            removed = diff.removed.len(),
            changed = diff.changed.len(),
            unchanged = diff.unchanged.len(),
            "Applied configuration."
        );
        Ok(diff)
    }
}

/// Why a runtime (API) registration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ApiServerError {
    #[error("server {0:?} is defined in the configuration file; it can only be changed there")]
    FileServer(String),
    #[error("no server named {0:?} was registered over the API")]
    NotFound(String),
    #[error("{0}")]
    Invalid(ConfigErrors),
    #[error("the engine is shutting down")]
    ShuttingDown,
}

/// Sent by the API after a registration (POST) or replacement (PUT) was
/// stored: start the server, or restart it if its settings changed. The
/// same path as a file server; only the source differs.
#[derive(Message)]
#[rtype(result = "Result<(), ApiServerError>")]
pub struct UpsertApiServer {
    pub name: ServerName,
    pub entry: serde_json::Value,
}

impl Handler<UpsertApiServer> for Supervisor {
    type Result = Result<(), ApiServerError>;

    fn handle(&mut self, msg: UpsertApiServer, ctx: &mut Self::Context) -> Self::Result {
        if self.shutting_down {
            return Err(ApiServerError::ShuttingDown);
        }
        if self.is_file_server(&msg.name) {
            return Err(ApiServerError::FileServer(msg.name.to_string()));
        }
        server_from_value(
            msg.name.as_str(),
            msg.entry.clone(),
            &self.config.discovery,
            &self.config.catalog.separator,
            ServerSource::Api,
        )
        .map_err(ApiServerError::Invalid)?;
        let mut api = self.api.clone();
        api.insert(msg.name, msg.entry);
        let config = self.config.clone();
        let desired = self
            .desired(&config, &api)
            .map_err(|e| ApiServerError::FileServer(e.to_string()))?;
        self.api = api;
        self.converge(&desired, &config.catalog.separator, ctx);
        Ok(())
    }
}

/// Sent by the API after a deletion was stored: stop the server.
#[derive(Message)]
#[rtype(result = "Result<(), ApiServerError>")]
pub struct RemoveApiServer {
    pub name: ServerName,
}

impl Handler<RemoveApiServer> for Supervisor {
    type Result = Result<(), ApiServerError>;

    fn handle(&mut self, msg: RemoveApiServer, ctx: &mut Self::Context) -> Self::Result {
        if self.is_file_server(&msg.name) {
            return Err(ApiServerError::FileServer(msg.name.to_string()));
        }
        if self.api.shift_remove(&msg.name).is_none() {
            return Err(ApiServerError::NotFound(msg.name.to_string()));
        }
        let config = self.config.clone();
        let api = self.api.clone();
        if let Ok(desired) = self.desired(&config, &api) {
            self.converge(&desired, &config.catalog.separator, ctx);
        }
        Ok(())
    }
}

/// Sent at start-up with the stored registrations, and whenever another
/// replica changed them: the API servers become exactly these (invalid
/// or clashing entries are logged and skipped).
#[derive(Message)]
#[rtype(result = "()")]
pub struct SyncApiServers {
    pub entries: Vec<(String, serde_json::Value)>,
}

impl Handler<SyncApiServers> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: SyncApiServers, ctx: &mut Self::Context) {
        if self.shutting_down {
            return;
        }
        let mut api = IndexMap::new();
        for (name, entry) in msg.entries {
            let Ok(name) = ServerName::parse(&name, &self.config.catalog.separator) else {
                tracing::warn!(server = %name, "Skipped a stored server with an invalid name.");
                continue;
            };
            if self.is_file_server(&name) {
                tracing::warn!(server = %name, "Skipped a stored server whose name the configuration file now uses.");
                continue;
            }
            api.insert(name, entry);
        }
        let config = self.config.clone();
        if let Ok(desired) = self.desired(&config, &api) {
            self.api = api;
            self.converge(&desired, &config.catalog.separator, ctx);
        }
    }
}

/// Sent by `POST /v1/servers/{name}/refresh`.
#[derive(Message)]
#[rtype(result = "Result<(), UnknownServer>")]
pub struct RefreshServer {
    pub name: String,
}

#[derive(Debug, thiserror::Error)]
#[error("no server named {0:?}")]
pub struct UnknownServer(pub String);

impl Handler<RefreshServer> for Supervisor {
    type Result = Result<(), UnknownServer>;

    fn handle(&mut self, msg: RefreshServer, _ctx: &mut Self::Context) -> Self::Result {
        match self.upstreams.get(msg.name.as_str()) {
            Some(running) => {
                running.addr.do_send(Refresh);
                Ok(())
            }
            None => Err(UnknownServer(msg.name)),
        }
    }
}

/// Sent once at shutdown: stop every upstream (DELETE sessions, kill stdio
/// children), waiting at most `deadline`, then stop the worker arbiters.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown {
    pub deadline: Duration,
}

impl Handler<Shutdown> for Supervisor {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, msg: Shutdown, _ctx: &mut Self::Context) -> Self::Result {
        self.shutting_down = true;
        let stops: Vec<_> = self
            .upstreams
            .drain(..)
            .map(|(_, running)| running.addr.send(Stop))
            .collect();
        let count = stops.len();
        let wait = async move {
            if actix_rt::time::timeout(msg.deadline, join_all(stops))
                .await
                .is_err()
            {
                tracing::warn!(
                    upstreams = count,
                    deadline_ms = msg.deadline.as_millis() as u64,
                    "Some upstreams did not stop before the shutdown deadline."
                );
            }
        };
        Box::pin(wait.into_actor(self).map(|(), _act, ctx| ctx.stop()))
    }
}

impl Handler<UpstreamExited> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: UpstreamExited, ctx: &mut Self::Context) {
        if self.shutting_down {
            return;
        }
        // Stopped on purpose (removed, restarted by a reload): already gone
        // from `upstreams`, or replaced by a newer generation.
        let Some(running) = self.upstreams.get(&msg.name) else {
            return;
        };
        if running.generation != msg.generation {
            return;
        }
        let restarts = if running.started.elapsed() >= UPSTREAM_RESTART_RESET {
            0
        } else {
            running.restarts
        };
        let delay = UPSTREAM_RESTART_INITIAL
            .saturating_mul(1 << restarts.min(16))
            .min(UPSTREAM_RESTART_MAX);
        tracing::error!(
            server = %msg.name,
            generation = msg.generation,
            restarts,
            restart_in_ms = delay.as_millis() as u64,
            "Upstream actor stopped unexpectedly; restarting it."
        );
        let name = msg.name;
        let generation = msg.generation;
        ctx.run_later(delay, move |act, ctx| {
            if act.shutting_down {
                return;
            }
            // Still the dead incarnation (no reload replaced or removed it
            // meanwhile)?
            let spec = match act.upstreams.get(&name) {
                Some(r) if r.generation == generation => r.spec.clone(),
                _ => return,
            };
            // Replaced in place: the entry keeps its position in the order.
            act.start_upstream_after(spec, restarts.saturating_add(1), ctx);
        });
    }
}

/// Test hook: stops the named upstream as if it had ended on its own, to
/// prove it is noticed and restarted. Nothing in the service sends it.
#[doc(hidden)]
#[derive(Message)]
#[rtype(result = "bool")]
pub struct HaltUpstream {
    pub name: String,
}

impl Handler<HaltUpstream> for Supervisor {
    type Result = bool;

    fn handle(&mut self, msg: HaltUpstream, _ctx: &mut Self::Context) -> bool {
        match self.upstreams.get(msg.name.as_str()) {
            Some(running) => {
                running.addr.do_send(Halt);
                true
            }
            None => false,
        }
    }
}

/// Test only: the address of a running upstream.
#[cfg(test)]
#[derive(Message)]
#[rtype(result = "Option<Addr<Upstream>>")]
struct UpstreamAddr(String);

#[cfg(test)]
impl Handler<UpstreamAddr> for Supervisor {
    type Result = Option<Addr<Upstream>>;

    fn handle(&mut self, msg: UpstreamAddr, _ctx: &mut Self::Context) -> Self::Result {
        self.upstreams.get(msg.0.as_str()).map(|r| r.addr.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::NoEvents;
    use crate::mcp::test_server::{start, Behavior};
    use crate::status::DiscoveryState;

    async fn wait_view(
        engine: &Engine,
        what: &str,
        pred: impl Fn(&crate::status::ServerView) -> bool,
    ) -> crate::status::ServerView {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut rx = engine.servers.clone();
        loop {
            if let Some(v) = rx.borrow_and_update().servers.get("a").cloned() {
                if pred(&v) {
                    return v;
                }
            }
            assert!(Instant::now() < deadline, "server never {what}");
            let _ = actix_rt::time::timeout(Duration::from_millis(100), rx.changed()).await;
        }
    }

    #[actix_rt::test]
    async fn an_upstream_that_panics_is_restarted() {
        let server = start(Behavior::default()).await;
        let yaml = format!(
            "discovery: {{ poll_interval: 10m }}\nservers:\n  a: {{ url: \"{}\", transport: streamable-http }}\n",
            server.url("/mcp")
        );
        let config =
            discovery_config::load_str(&yaml, discovery_config::Format::Yaml, None, &[]).unwrap();
        let engine = start_engine(Arc::new(config), Arc::new(NoEvents));
        let first = wait_view(&engine, "healthy", |v| v.state == DiscoveryState::Healthy).await;
        let addr = engine
            .supervisor
            .send(UpstreamAddr("a".into()))
            .await
            .unwrap()
            .unwrap();
        addr.do_send(crate::upstream::PanicForTest);
        let again = wait_view(&engine, "restarted and healthy", |v| {
            v.generation > first.generation && v.state == DiscoveryState::Healthy
        })
        .await;
        assert_eq!(again.tool_count, 2);
        assert!(!addr.connected(), "the panicked actor is gone");
        // A server stopped on purpose is not brought back.
        engine
            .supervisor
            .send(Shutdown {
                deadline: Duration::from_secs(5),
            })
            .await
            .unwrap();
        assert!(!engine.supervisor.connected());
    }
}
