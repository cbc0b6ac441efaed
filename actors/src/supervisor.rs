//! The Supervisor: the one actor that owns the running configuration and
//! every [`Upstream`]. It applies a [`ConfigDiff`] (start added, stop
//! removed, restart changed with a new generation, leave unchanged alone)
//! and spreads upstreams over a fixed pool of arbiters sized to the cores.
//!
//! An upstream that is gone without being told to stop (a panic in one of
//! its handlers, its arbiter dying) reports [`UpstreamExited`] from the drop
//! of its state; the supervisor restarts it, same spec, new generation,
//! after a capped backoff (`UPSTREAM_RESTART_*`), and logs it.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use discovery_config::{
    diff_servers, server_from_value, Config, ConfigDiff, ConfigErrors, ServerName, ServerSource,
    ServerSpec, TransportKind,
};
use futures_util::future::join_all;
use indexmap::IndexMap;
use tokio::sync::watch;

use crate::attempts::AttemptGate;
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
    /// Where `tools/call` goes for each running server (see [`crate::calls`]).
    pub calls: watch::Receiver<crate::calls::CallRoutesSnapshot>,
}

/// Starts registry + supervisor on the current System and applies `config`.
/// Must be called from within a running actix System.
pub fn start_engine(config: Arc<Config>, events: Arc<dyn DiscoveryEvents>) -> Engine {
    let (registry, catalog, servers) = Registry::new(events.clone());
    let registry = registry.start();
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let supervisor = Supervisor::new(registry.clone(), events, workers);
    let calls = supervisor.call_routes();
    let supervisor = supervisor.start();
    supervisor.do_send(ApplyConfig(config));
    Engine {
        calls,
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
    /// Publishes [`crate::calls::CallRoutes`].
    calls: watch::Sender<crate::calls::CallRoutesSnapshot>,
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
    api: IndexMap<ServerName, ApiEntry>,
    /// Names deleted over the API, with the delete's store revision: a
    /// replica sync that still shows an older row of one is stale.
    tombstones: HashMap<ServerName, i64>,
    /// Names a `POST` is registering right now (the store write is under
    /// way): a reload may not take them for the file meanwhile.
    reserved: HashSet<ServerName>,
    /// Stored stdio servers not started because stdio registration is off
    /// (logged once each).
    stdio_blocked: BTreeSet<ServerName>,
    /// `discovery.max_concurrent_attempts`, shared by every upstream.
    gate: AttemptGate,
    shutting_down: bool,
}

/// A server registered over the API: its entry as registered, and the
/// store revision of that entry.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiEntry {
    pub entry: serde_json::Value,
    pub revision: i64,
}

impl Supervisor {
    /// `workers` arbiter threads host the upstreams (at least one).
    pub fn new(registry: Addr<Registry>, events: Arc<dyn DiscoveryEvents>, workers: usize) -> Self {
        let arbiters = (0..workers.max(1)).map(|_| Arbiter::new()).collect();
        let gate = AttemptGate::new(
            Config::DEFAULT_MAX_CONCURRENT_ATTEMPTS as usize,
            events.clone(),
        );
        Self {
            gate,
            registry,
            events,
            arbiters,
            next_arbiter: 0,
            next_generation: 0,
            separator: String::new(),
            upstreams: IndexMap::new(),
            config: Arc::new(Config::embedded_defaults()),
            api: IndexMap::new(),
            tombstones: HashMap::new(),
            reserved: HashSet::new(),
            stdio_blocked: BTreeSet::new(),
            shutting_down: false,
            calls: watch::Sender::new(Arc::default()),
        }
    }

    /// Where calls go; the supervisor republishes it as upstreams start
    /// and stop.
    pub fn call_routes(&self) -> watch::Receiver<crate::calls::CallRoutesSnapshot> {
        self.calls.subscribe()
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
            gate: self.gate.clone(),
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
        api: &IndexMap<ServerName, ApiEntry>,
    ) -> Result<Desired, ApplyError> {
        let mut out = config.servers.clone();
        let taken: Vec<String> = api
            .keys()
            .chain(&self.reserved)
            .filter(|name| out.contains_key(*name) || config.views.contains_key(*name))
            .map(ToString::to_string)
            .collect();
        if !taken.is_empty() {
            return Err(ApplyError::NameTaken(taken));
        }
        let stdio_allowed = stdio_registration_allowed(config);
        let mut blocked = BTreeSet::new();
        for (name, api_entry) in api {
            match server_from_value(
                name.as_str(),
                api_entry.entry.clone(),
                &discovery_config::ServerDefaults::of(config),
                &config.catalog.separator,
                ServerSource::Api,
            ) {
                // A process start nobody allowed (any more): not started,
                // the row is kept for when it is allowed again.
                Ok(spec) if !stdio_allowed && spec.transport() == TransportKind::Stdio => {
                    blocked.insert(name.clone());
                }
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
        Ok(Desired {
            servers: out,
            blocked,
        })
    }

    /// Remembers which stored stdio servers are held back, warning once
    /// for each newly held back.
    fn note_blocked(&mut self, blocked: BTreeSet<ServerName>) {
        for name in blocked.difference(&self.stdio_blocked) {
            tracing::warn!(server = %name, "Did not start a stdio server registered over the API: admin.allow_stdio_registration is off (or admin.api_keys is empty). The stored registration is kept; DELETE /v1/servers/NAME removes it.");
        }
        self.stdio_blocked = blocked;
    }

    /// Computes and converges to the desired set for `api`, then keeps it.
    fn apply_api(
        &mut self,
        api: IndexMap<ServerName, ApiEntry>,
        ctx: &mut Context<Self>,
    ) -> Result<(), ApplyError> {
        let config = self.config.clone();
        let desired = self.desired(&config, &api)?;
        self.api = api;
        self.converge(&desired.servers, &config.catalog.separator, ctx);
        self.note_blocked(desired.blocked);
        Ok(())
    }

    fn generation_of(&self, name: &ServerName) -> Option<u64> {
        self.upstreams.get(name).map(|r| r.generation)
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
        if !(diff.added.is_empty() && diff.removed.is_empty() && diff.changed.is_empty()) {
            self.publish_routes();
        }
        diff
    }

    /// Publishes where calls go: every running upstream's newest
    /// generation (a removed server's route is gone). Once per change of
    /// the set, not per upstream: 1000 servers at start-up are one
    /// snapshot.
    fn publish_routes(&self) {
        let routes: crate::calls::CallRoutes = self
            .upstreams
            .iter()
            .map(|(name, running)| (name.to_string(), running.addr.clone().recipient()))
            .collect();
        self.calls.send_replace(Arc::new(routes));
    }

    fn is_file_server(&self, name: &ServerName) -> bool {
        self.config.servers.contains_key(name)
    }
}

/// What should run: every server's effective spec, plus the API servers
/// held back by the stdio policy.
struct Desired {
    servers: IndexMap<ServerName, ServerSpec>,
    blocked: BTreeSet<ServerName>,
}

/// Whether API-registered stdio servers may run: only with the flag on and
/// admin keys set (validation refuses the flag without keys; a reload
/// that removes the keys stops them).
fn stdio_registration_allowed(config: &Config) -> bool {
    config.admin.allow_stdio_registration && !config.admin.api_keys.is_empty()
}

/// The API servers after a replica sync: the snapshot's rows, except where
/// what runs is newer. A row older than the running revision is stale
/// (ignored); a row no newer than a local delete is stale; a running
/// server missing from the snapshot was deleted only if its revision is
/// covered by the snapshot (`as_of`), else it was written after the
/// snapshot and stays; names in `keep` (rows that could not be decoded)
/// stay as they run. Tombstones the snapshot covers are dropped.
pub fn merge_sync(
    current: &IndexMap<ServerName, ApiEntry>,
    tombstones: &mut HashMap<ServerName, i64>,
    snapshot: IndexMap<ServerName, ApiEntry>,
    as_of: i64,
    keep: &HashSet<ServerName>,
) -> IndexMap<ServerName, ApiEntry> {
    let mut out = IndexMap::new();
    for (name, row) in snapshot {
        match current.get(&name) {
            Some(running) if running.revision > row.revision => {
                tracing::debug!(server = %name, running = running.revision, stored = row.revision, "Ignored a stale stored row.");
                out.insert(name, running.clone());
                continue;
            }
            _ => {}
        }
        if tombstones
            .get(&name)
            .is_some_and(|&deleted| row.revision <= deleted)
        {
            tracing::debug!(server = %name, stored = row.revision, "Ignored a stored row older than its deletion.");
            continue;
        }
        out.insert(name, row);
    }
    for (name, running) in current {
        if out.contains_key(name) {
            continue;
        }
        if keep.contains(name) || running.revision > as_of {
            out.insert(name.clone(), running.clone());
        }
    }
    tombstones.retain(|_, deleted| *deleted > as_of);
    out
}

/// Why a configuration was not applied (nothing changed).
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("server or view name(s) {} are already registered over the API. Hint: delete them with DELETE /v1/servers/NAME first, or pick other names", .0.join(", "))]
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
        // Before the servers start, so the first attempts see the limit.
        self.gate.set_limit(config.max_concurrent_attempts as usize);
        let diff = self.converge(&desired.servers, &config.catalog.separator, ctx);
        self.config = config;
        self.note_blocked(desired.blocked);
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

/// Sent by the API before it stores a new registration (POST), under the
/// name's lock: holds the name so that a reload cannot give it to a file
/// server while the store write is under way. Released by the
/// [`UpsertApiServer`] that follows, or by [`ReleaseApiName`].
#[derive(Message)]
#[rtype(result = "Result<(), ApiServerError>")]
pub struct ReserveApiName {
    pub name: ServerName,
}

impl Handler<ReserveApiName> for Supervisor {
    type Result = Result<(), ApiServerError>;

    fn handle(&mut self, msg: ReserveApiName, _ctx: &mut Self::Context) -> Self::Result {
        if self.shutting_down {
            return Err(ApiServerError::ShuttingDown);
        }
        if self.is_file_server(&msg.name) {
            return Err(ApiServerError::FileServer(msg.name.to_string()));
        }
        self.reserved.insert(msg.name);
        Ok(())
    }
}

/// Sent by the API when a reserved registration was not stored after all.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ReleaseApiName {
    pub name: ServerName,
}

impl Handler<ReleaseApiName> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: ReleaseApiName, _ctx: &mut Self::Context) {
        self.reserved.remove(&msg.name);
    }
}

/// What an [`UpsertApiServer`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UpsertOutcome {
    /// The running upstream's generation (None: held back by the stdio
    /// policy, not running).
    pub generation: Option<u64>,
    /// False when the effective settings did not change: the server runs
    /// on as it was, and the published view is its real state.
    pub restarted: bool,
}

/// Sent by the API after a registration (POST) or replacement (PUT) was
/// stored, under the name's lock: start the server, or restart it if its
/// settings changed. The same path as a file server; only the source
/// differs. An entry older than what runs (a newer revision came from
/// another replica meanwhile) changes nothing.
#[derive(Message)]
#[rtype(result = "Result<UpsertOutcome, ApiServerError>")]
pub struct UpsertApiServer {
    pub name: ServerName,
    pub entry: serde_json::Value,
    /// The store revision of this entry.
    pub revision: i64,
}

impl Handler<UpsertApiServer> for Supervisor {
    type Result = Result<UpsertOutcome, ApiServerError>;

    fn handle(&mut self, msg: UpsertApiServer, ctx: &mut Self::Context) -> Self::Result {
        self.reserved.remove(&msg.name);
        if self.shutting_down {
            return Err(ApiServerError::ShuttingDown);
        }
        if self.is_file_server(&msg.name) {
            return Err(ApiServerError::FileServer(msg.name.to_string()));
        }
        server_from_value(
            msg.name.as_str(),
            msg.entry.clone(),
            &discovery_config::ServerDefaults::of(&self.config),
            &self.config.catalog.separator,
            ServerSource::Api,
        )
        .map_err(ApiServerError::Invalid)?;
        // Older than what runs, or than a delete already applied: another
        // write of this name got here first (a replica's, through a sync).
        let newer = self
            .api
            .get(&msg.name)
            .is_some_and(|running| running.revision > msg.revision)
            || self
                .tombstones
                .get(&msg.name)
                .is_some_and(|&deleted| deleted > msg.revision);
        let before = self.generation_of(&msg.name);
        if self
            .tombstones
            .get(&msg.name)
            .is_some_and(|&deleted| deleted < msg.revision)
        {
            self.tombstones.remove(&msg.name);
        }
        if !newer {
            let mut api = self.api.clone();
            api.insert(
                msg.name.clone(),
                ApiEntry {
                    entry: msg.entry,
                    revision: msg.revision,
                },
            );
            self.apply_api(api, ctx)
                .map_err(|e| ApiServerError::FileServer(e.to_string()))?;
        }
        let generation = self.generation_of(&msg.name);
        Ok(UpsertOutcome {
            generation,
            restarted: generation != before,
        })
    }
}

/// Sent by the API for `DELETE /v1/servers/{name}`, under the name's lock,
/// after the row was deleted (`revision`: the delete's store revision) or
/// found missing (None): the server stops either way, so a row already
/// gone still reaches the engine. Replies whether a server was running.
#[derive(Message)]
#[rtype(result = "Result<bool, ApiServerError>")]
pub struct RemoveApiServer {
    pub name: ServerName,
    pub revision: Option<i64>,
}

impl Handler<RemoveApiServer> for Supervisor {
    type Result = Result<bool, ApiServerError>;

    fn handle(&mut self, msg: RemoveApiServer, ctx: &mut Self::Context) -> Self::Result {
        if self.is_file_server(&msg.name) {
            return Err(ApiServerError::FileServer(msg.name.to_string()));
        }
        if let Some(revision) = msg.revision {
            let tomb = self.tombstones.entry(msg.name.clone()).or_insert(revision);
            *tomb = (*tomb).max(revision);
            // A newer registration (another replica's, after this delete)
            // stays.
            if self
                .api
                .get(&msg.name)
                .is_some_and(|running| running.revision > revision)
            {
                return Ok(false);
            }
        }
        let mut api = self.api.clone();
        let Some(_) = api.shift_remove(&msg.name) else {
            return Ok(false);
        };
        // Removing a name cannot make the set clash with the file.
        let _ = self.apply_api(api, ctx);
        Ok(true)
    }
}

/// One stored registration, for [`SyncApiServers`].
#[derive(Clone, Debug)]
pub struct StoredEntry {
    pub name: String,
    pub entry: serde_json::Value,
    pub revision: i64,
}

/// Sent at start-up with the stored registrations, and whenever another
/// replica changed them: the API servers become these, except where what
/// runs is newer ([`merge_sync`]); invalid or clashing entries are logged
/// and skipped.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SyncApiServers {
    pub entries: Vec<StoredEntry>,
    /// The store's write counter when the entries were read.
    pub as_of: i64,
    /// Rows that could not be decoded: what runs under these names stays.
    pub undecodable: Vec<String>,
}

impl Handler<SyncApiServers> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: SyncApiServers, ctx: &mut Self::Context) {
        if self.shutting_down {
            return;
        }
        let mut snapshot = IndexMap::new();
        for stored in msg.entries {
            let Ok(name) = ServerName::parse(&stored.name, &self.config.catalog.separator) else {
                tracing::warn!(server = %stored.name, "Skipped a stored server with an invalid name.");
                continue;
            };
            if self.is_file_server(&name) {
                tracing::warn!(server = %name, "Skipped a stored server whose name the configuration file now uses.");
                continue;
            }
            snapshot.insert(
                name,
                ApiEntry {
                    entry: stored.entry,
                    revision: stored.revision,
                },
            );
        }
        let keep: HashSet<ServerName> = msg
            .undecodable
            .iter()
            .filter_map(|n| ServerName::parse(n, &self.config.catalog.separator).ok())
            .collect();
        let mut tombstones = std::mem::take(&mut self.tombstones);
        let api = merge_sync(&self.api, &mut tombstones, snapshot, msg.as_of, &keep);
        self.tombstones = tombstones;
        if let Err(e) = self.apply_api(api, ctx) {
            tracing::warn!(error = %e, "Did not apply the stored servers.");
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
        self.publish_routes();
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
            act.publish_routes();
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
    use serde_json::json;

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

    fn name(n: &str) -> ServerName {
        ServerName::parse(n, "__").unwrap()
    }

    fn entries(list: &[(&str, i64)]) -> IndexMap<ServerName, ApiEntry> {
        list.iter()
            .map(|&(n, revision)| {
                (
                    name(n),
                    ApiEntry {
                        entry: json!({"url": format!("http://{n}/{revision}")}),
                        revision,
                    },
                )
            })
            .collect()
    }

    fn revisions(map: &IndexMap<ServerName, ApiEntry>) -> Vec<(String, i64)> {
        map.iter()
            .map(|(n, e)| (n.to_string(), e.revision))
            .collect()
    }

    #[test]
    fn a_stale_row_is_ignored_and_a_newer_one_applied() {
        let current = entries(&[("a", 7), ("b", 3)]);
        let snapshot = entries(&[("a", 5), ("b", 9)]);
        let merged = merge_sync(&current, &mut HashMap::new(), snapshot, 9, &HashSet::new());
        assert_eq!(revisions(&merged), [("a".into(), 7), ("b".into(), 9)]);
        assert_eq!(
            merged[&name("a")],
            current[&name("a")],
            "the running entry stays"
        );
    }

    #[test]
    fn a_missing_row_is_a_delete_only_when_the_snapshot_covers_it() {
        let current = entries(&[("old", 4), ("new", 12)]);
        let merged = merge_sync(
            &current,
            &mut HashMap::new(),
            IndexMap::new(),
            10,
            &HashSet::new(),
        );
        assert_eq!(revisions(&merged), [("new".into(), 12)]);
    }

    #[test]
    fn a_row_older_than_a_local_delete_stays_deleted() {
        let mut tombstones = HashMap::from([(name("gone"), 8)]);
        let snapshot = entries(&[("gone", 6)]);
        let merged = merge_sync(
            &IndexMap::new(),
            &mut tombstones,
            snapshot,
            7,
            &HashSet::new(),
        );
        assert!(merged.is_empty());
        assert!(tombstones.contains_key(&name("gone")), "not covered yet");
        // Registered again elsewhere after the delete: taken.
        let snapshot = entries(&[("gone", 11)]);
        let merged = merge_sync(
            &IndexMap::new(),
            &mut tombstones,
            snapshot,
            11,
            &HashSet::new(),
        );
        assert_eq!(revisions(&merged), [("gone".into(), 11)]);
        assert!(tombstones.is_empty(), "covered by the snapshot");
    }

    #[test]
    fn an_undecodable_row_leaves_what_runs() {
        let current = entries(&[("bad", 2)]);
        let keep = HashSet::from([name("bad")]);
        let merged = merge_sync(&current, &mut HashMap::new(), IndexMap::new(), 20, &keep);
        assert_eq!(revisions(&merged), [("bad".into(), 2)]);
    }
}
