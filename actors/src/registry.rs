//! The registry: one actor that keeps every server's last view and catalog
//! part, and publishes immutable snapshots to the HTTP workers over
//! `tokio::sync::watch` (readers never touch a mailbox).
//!
//! Rebuilds are coalesced: a change marks the registry dirty and schedules
//! one rebuild; changes arriving before it runs ride along. An isolated
//! change (a `list_changed`) is published at once; under a flood (1000
//! servers turning healthy) rebuilds are spaced by a few times the cost of
//! the last one, so the registry never spends most of its time re-copying
//! the catalog.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use indexmap::IndexMap;
use tokio::sync::watch;

use crate::catalog::{Catalog, ServerTools};
use crate::events::DiscoveryEvents;
use crate::status::{ServerView, ServersSnapshot};

/// Never rebuild more often than this under load.
const MIN_REBUILD_SPACING: Duration = Duration::from_millis(5);
/// Spacing as a multiple of the last rebuild's cost.
const REBUILD_COST_FACTOR: u32 = 4;

struct Entry {
    view: ServerView,
    part: Arc<ServerTools>,
}

/// Aggregates upstream results into [`Catalog`] and [`ServersSnapshot`].
pub struct Registry {
    entries: IndexMap<String, Entry>,
    version: u64,
    catalog_tx: watch::Sender<Arc<Catalog>>,
    servers_tx: watch::Sender<Arc<ServersSnapshot>>,
    events: Arc<dyn DiscoveryEvents>,
    tools_dirty: bool,
    servers_dirty: bool,
    rebuild_scheduled: bool,
    last_rebuild: Option<(Instant, Duration)>,
}

impl Registry {
    pub fn new(
        events: Arc<dyn DiscoveryEvents>,
    ) -> (
        Self,
        watch::Receiver<Arc<Catalog>>,
        watch::Receiver<Arc<ServersSnapshot>>,
    ) {
        let (catalog_tx, catalog_rx) = watch::channel(Arc::new(Catalog::empty()));
        let (servers_tx, servers_rx) = watch::channel(Arc::new(ServersSnapshot::default()));
        let registry = Self {
            entries: IndexMap::new(),
            version: 0,
            catalog_tx,
            servers_tx,
            events,
            tools_dirty: false,
            servers_dirty: false,
            rebuild_scheduled: false,
            last_rebuild: None,
        };
        (registry, catalog_rx, servers_rx)
    }

    /// How long a catalog rebuild must still wait (zero: now).
    fn catalog_wait(&self) -> Duration {
        match self.last_rebuild {
            Some((at, cost)) => {
                let spacing = (cost * REBUILD_COST_FACTOR).max(MIN_REBUILD_SPACING);
                spacing.saturating_sub(at.elapsed())
            }
            None => Duration::ZERO,
        }
    }

    fn schedule_rebuild(&mut self, ctx: &mut Context<Self>) {
        if self.rebuild_scheduled {
            return;
        }
        self.rebuild_scheduled = true;
        // Only catalog rebuilds are spaced: a state-only change (an attempt
        // starting) is a cheap snapshot and must not delay the catalog that
        // follows it a millisecond later.
        let wait = if self.tools_dirty {
            self.catalog_wait()
        } else {
            Duration::ZERO
        };
        if wait.is_zero() {
            ctx.notify(Rebuild);
        } else {
            ctx.notify_later(Rebuild, wait);
        }
    }

    /// Publishes what is pending; a catalog whose spacing has not elapsed
    /// (it became dirty after a state-only rebuild was scheduled) is
    /// rescheduled rather than rebuilt early.
    fn rebuild(&mut self, ctx: &mut Context<Self>) {
        if self.servers_dirty {
            let snapshot = ServersSnapshot {
                servers: self
                    .entries
                    .iter()
                    .map(|(name, e)| (name.clone(), e.view.clone()))
                    .collect(),
            };
            self.servers_tx.send_replace(Arc::new(snapshot));
            self.servers_dirty = false;
        }
        if self.tools_dirty && !self.catalog_wait().is_zero() {
            self.schedule_rebuild(ctx);
        } else if self.tools_dirty {
            let started = Instant::now();
            let parts: Vec<Arc<ServerTools>> =
                self.entries.values().map(|e| e.part.clone()).collect();
            let unchanged = self.catalog_tx.borrow().has_parts(&parts);
            if !unchanged {
                self.version += 1;
                let catalog = Catalog::assemble(self.version, parts);
                self.events
                    .catalog_published(catalog.version, catalog.tool_count());
                tracing::debug!(
                    version = catalog.version,
                    tools = catalog.tool_count(),
                    "Published a new catalog."
                );
                self.catalog_tx.send_replace(Arc::new(catalog));
            }
            self.tools_dirty = false;
            self.last_rebuild = Some((Instant::now(), started.elapsed()));
        }
    }
}

// Upstreams report with `do_send`, which ignores the mailbox capacity, so a
// start-up flood is queued rather than pushed back or dropped.
impl Actor for Registry {
    type Context = Context<Self>;
}

/// Sent by the supervisor when it starts an upstream (also a restart with a
/// higher generation): the server appears at once, in config order, and
/// replaces any older incarnation.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Register {
    pub view: ServerView,
}

/// Sent by an upstream whenever its state or tools change. Dropped when the
/// generation is older than the registered one, or the server is gone.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Report {
    pub view: ServerView,
    /// The new catalog part; `None` when the tools did not change.
    pub part: Option<Arc<ServerTools>>,
}

/// Sent by the supervisor when a server is removed: its tools leave the
/// catalog. Ignored if a newer generation has been registered since.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Unregister {
    pub name: String,
    pub generation: u64,
}

/// Test hook: stops the registry, so a test can prove `/healthz` notices
/// an engine that lost it. Nothing in the service sends it.
#[doc(hidden)]
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Halt;

impl Handler<Halt> for Registry {
    type Result = ();

    fn handle(&mut self, _: Halt, ctx: &mut Self::Context) {
        tracing::warn!("The registry was told to stop (test hook).");
        ctx.stop();
    }
}

/// Self-notification: publish pending changes.
#[derive(Message)]
#[rtype(result = "()")]
struct Rebuild;

impl Handler<Register> for Registry {
    type Result = ();

    fn handle(&mut self, msg: Register, ctx: &mut Self::Context) {
        let name = msg.view.name.clone();
        if let Some(existing) = self.entries.get(&name) {
            if existing.view.generation > msg.view.generation {
                return;
            }
        }
        let part = Arc::new(ServerTools::build(&name, "", false, &[]));
        if self
            .entries
            .insert(
                name,
                Entry {
                    view: msg.view,
                    part,
                },
            )
            .is_some()
        {
            self.tools_dirty = true;
        }
        self.servers_dirty = true;
        self.schedule_rebuild(ctx);
    }
}

impl Handler<Report> for Registry {
    type Result = ();

    fn handle(&mut self, msg: Report, ctx: &mut Self::Context) {
        let Some(entry) = self.entries.get_mut(&msg.view.name) else {
            return;
        };
        if entry.view.generation != msg.view.generation {
            tracing::debug!(
                server = %msg.view.name,
                generation = msg.view.generation,
                current = entry.view.generation,
                "Dropped a report from an older incarnation."
            );
            return;
        }
        entry.view = msg.view;
        if let Some(part) = msg.part {
            entry.part = part;
            self.tools_dirty = true;
        }
        self.servers_dirty = true;
        self.schedule_rebuild(ctx);
    }
}

impl Handler<Unregister> for Registry {
    type Result = ();

    fn handle(&mut self, msg: Unregister, ctx: &mut Self::Context) {
        let newer = self
            .entries
            .get(&msg.name)
            .is_some_and(|e| e.view.generation > msg.generation);
        if newer {
            return;
        }
        if self.entries.shift_remove(&msg.name).is_some() {
            self.tools_dirty = true;
            self.servers_dirty = true;
            self.schedule_rebuild(ctx);
        }
    }
}

impl Handler<Rebuild> for Registry {
    type Result = ();

    fn handle(&mut self, _: Rebuild, ctx: &mut Self::Context) {
        self.rebuild_scheduled = false;
        self.rebuild(ctx);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::value::RawValue;

    use super::*;
    use crate::events::NoEvents;
    use crate::mcp::Tool;
    use crate::status::{DiscoveryState, PushStreamState};

    fn view(name: &str, generation: u64) -> ServerView {
        ServerView {
            name: name.into(),
            source: "config",
            transport: "streamable-http",
            negotiated_transport: None,
            endpoint: String::new(),
            state: DiscoveryState::Unknown,
            last_error: None,
            last_success_at: None,
            last_attempt_at: None,
            consecutive_failures: 0,
            next_retry_at: None,
            push_stream: PushStreamState::Disabled,
            push_stream_error: None,
            auth: crate::status::AuthView {
                kind: "none",
                token_expires_at: None,
                last_token_error: None,
            },
            tool_count: 0,
            stale: false,
            protocol_version: None,
            server_info: None,
            listing_warning: None,
            generation,
            first_attempt_done: false,
        }
    }

    fn part(server: &str, tools: &[&str]) -> Arc<ServerTools> {
        let tools: Vec<Tool> = tools
            .iter()
            .map(|n| Tool {
                name: (*n).into(),
                raw: Arc::from(RawValue::from_string(format!("{{\"name\":\"{n}\"}}")).unwrap()),
            })
            .collect();
        Arc::new(ServerTools::build(server, "__", false, &tools))
    }

    async fn settle(rx: &mut watch::Receiver<Arc<Catalog>>, want_tools: usize) -> Arc<Catalog> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let current = rx.borrow_and_update().clone();
            if current.tool_count() == want_tools {
                return current;
            }
            assert!(
                Instant::now() < deadline,
                "catalog never had {want_tools} tools"
            );
            let _ = actix_rt::time::timeout(Duration::from_millis(100), rx.changed()).await;
        }
    }

    #[actix_rt::test]
    async fn drops_reports_of_older_generations_and_unknown_servers() {
        let (registry, mut catalog, _servers) = Registry::new(Arc::new(NoEvents));
        let registry = registry.start();
        registry
            .send(Register { view: view("a", 1) })
            .await
            .unwrap();
        registry
            .send(Register { view: view("a", 2) })
            .await
            .unwrap();
        // The old incarnation reports late: must not land.
        registry
            .send(Report {
                view: view("a", 1),
                part: Some(part("a", &["old"])),
            })
            .await
            .unwrap();
        registry
            .send(Report {
                view: view("ghost", 1),
                part: Some(part("ghost", &["x"])),
            })
            .await
            .unwrap();
        registry
            .send(Report {
                view: view("a", 2),
                part: Some(part("a", &["new"])),
            })
            .await
            .unwrap();
        let cat = settle(&mut catalog, 1).await;
        let body = String::from_utf8(cat.body().to_bytes().to_vec()).unwrap();
        assert!(body.contains("a__new"), "{body}");
        assert!(!body.contains("old") && !body.contains("ghost"), "{body}");
        // An older registration never replaces a newer one.
        registry
            .send(Register { view: view("a", 1) })
            .await
            .unwrap();
        registry
            .send(Unregister {
                name: "a".into(),
                generation: 1,
            })
            .await
            .unwrap();
        let cat = settle(&mut catalog, 1).await;
        assert!(String::from_utf8(cat.body().to_bytes().to_vec())
            .unwrap()
            .contains("a__new"));
        registry
            .send(Unregister {
                name: "a".into(),
                generation: 2,
            })
            .await
            .unwrap();
        settle(&mut catalog, 0).await;
    }

    #[actix_rt::test]
    async fn coalesces_a_flood_of_reports_into_few_versions() {
        let (registry, mut catalog, servers) = Registry::new(Arc::new(NoEvents));
        let registry = registry.start();
        for i in 0..500 {
            registry.do_send(Register {
                view: view(&format!("s{i}"), 1),
            });
        }
        for i in 0..500 {
            let name = format!("s{i}");
            registry.do_send(Report {
                view: view(&name, 1),
                part: Some(part(&name, &["t1", "t2"])),
            });
        }
        let cat = settle(&mut catalog, 1000).await;
        assert!(cat.version < 50, "{} versions for 500 reports", cat.version);
        assert_eq!(servers.borrow().servers.len(), 500);
        assert_eq!(
            servers.borrow().servers.get_index(0).unwrap().0,
            "s0",
            "config order"
        );
    }

    #[actix_rt::test]
    async fn version_only_moves_when_tools_change() {
        let (registry, mut catalog, mut servers) = Registry::new(Arc::new(NoEvents));
        let registry = registry.start();
        registry
            .send(Register { view: view("a", 1) })
            .await
            .unwrap();
        let p = part("a", &["t"]);
        registry
            .send(Report {
                view: view("a", 1),
                part: Some(p.clone()),
            })
            .await
            .unwrap();
        let v1 = settle(&mut catalog, 1).await.version;
        let mut degraded = view("a", 1);
        degraded.state = DiscoveryState::Degraded;
        registry
            .send(Report {
                view: degraded,
                part: None,
            })
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while servers.borrow_and_update().servers["a"].state != DiscoveryState::Degraded {
            assert!(Instant::now() < deadline);
            let _ = actix_rt::time::timeout(Duration::from_millis(100), servers.changed()).await;
        }
        assert_eq!(
            catalog.borrow().version,
            v1,
            "a state change is not a new catalog"
        );
    }
}
