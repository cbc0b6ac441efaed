//! The Supervisor: the one actor that owns the running configuration and
//! every [`Upstream`]. It applies a [`ConfigDiff`] (start added, stop
//! removed, restart changed with a new generation, leave unchanged alone)
//! and spreads upstreams over a fixed pool of arbiters sized to the cores.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use discovery_config::{diff_servers, Config, ConfigDiff, ServerName, ServerSpec};
use futures_util::future::join_all;
use indexmap::IndexMap;
use tokio::sync::watch;

use crate::catalog::Catalog;
use crate::events::DiscoveryEvents;
use crate::registry::{Register, Registry, Unregister};
use crate::status::ServersSnapshot;
use crate::upstream::{initial_view, Refresh, Stop, Upstream, UpstreamInit};

/// Handles to a running engine. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    pub supervisor: Addr<Supervisor>,
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
    let supervisor = Supervisor::new(registry, events, workers).start();
    supervisor.do_send(ApplyConfig(config));
    Engine {
        supervisor,
        catalog,
        servers,
    }
}

struct Running {
    addr: Addr<Upstream>,
    generation: u64,
    spec: Arc<ServerSpec>,
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
            shutting_down: false,
        }
    }

    fn start_upstream(&mut self, spec: Arc<ServerSpec>) {
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

/// Sent by the service (start-up, reload): diff against the running servers
/// and start / stop / restart upstreams accordingly. Replies with the diff.
#[derive(Message)]
#[rtype(result = "ConfigDiff")]
pub struct ApplyConfig(pub Arc<Config>);

impl Handler<ApplyConfig> for Supervisor {
    type Result = MessageResult<ApplyConfig>;

    fn handle(&mut self, msg: ApplyConfig, _ctx: &mut Self::Context) -> Self::Result {
        if self.shutting_down {
            return MessageResult(ConfigDiff::default());
        }
        let config = msg.0;
        let current: IndexMap<ServerName, ServerSpec> = self
            .upstreams
            .iter()
            .map(|(name, r)| (name.clone(), (*r.spec).clone()))
            .collect();
        let mut diff = diff_servers(&current, &config.servers);
        // The separator is part of every tool name: a new one changes all.
        if config.catalog.separator != self.separator {
            self.separator = config.catalog.separator.clone();
            diff.changed.append(&mut diff.unchanged);
        }
        for name in &diff.removed {
            self.stop_upstream(name, true);
        }
        for name in &diff.changed {
            self.stop_upstream(name, false);
        }
        for name in diff.added.iter().chain(&diff.changed) {
            if let Some(spec) = config.servers.get(name) {
                self.start_upstream(Arc::new(spec.clone()));
            }
        }
        // Keep config order for the registry's listing of new servers.
        self.upstreams
            .sort_by_cached_key(|name, _| config.servers.get_index_of(name));
        tracing::info!(
            added = diff.added.len(),
            removed = diff.removed.len(),
            changed = diff.changed.len(),
            unchanged = diff.unchanged.len(),
            "Applied configuration."
        );
        MessageResult(diff)
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
