//! Supervisor actor: owns every upstream, applies config diffs.
//! TODO(lead): implementation; the public API below is fixed.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use discovery_config::{Config, ConfigDiff};
use tokio::sync::watch;

use crate::catalog::Catalog;
use crate::events::DiscoveryEvents;
use crate::status::ServersSnapshot;

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
pub fn start_engine(_config: Arc<Config>, _events: Arc<dyn DiscoveryEvents>) -> Engine {
    unimplemented!()
}

pub struct Supervisor {}

impl Actor for Supervisor {
    type Context = Context<Self>;
}

/// Sent by the service (start-up, reload): diff against the running config
/// and start / stop / restart upstreams accordingly.
#[derive(Message)]
#[rtype(result = "ConfigDiff")]
pub struct ApplyConfig(pub Arc<Config>);

/// Sent by `POST /v1/servers/{name}/refresh`.
#[derive(Message)]
#[rtype(result = "Result<(), UnknownServer>")]
pub struct RefreshServer {
    pub name: String,
}

#[derive(Debug, thiserror::Error)]
#[error("no server named {0:?}")]
pub struct UnknownServer(pub String);

/// Sent once at shutdown: stop every upstream (DELETE sessions, kill stdio
/// children), waiting at most `deadline`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown {
    pub deadline: Duration,
}
