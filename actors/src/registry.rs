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

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use indexmap::IndexMap;
use tokio::sync::watch;

use crate::catalog::{Catalog, ServerTools};
use crate::events::DiscoveryEvents;
use crate::status::{ServerView, ServersSnapshot};
use crate::tools::ToolProblem;

/// Never rebuild more often than this under load.
const MIN_REBUILD_SPACING: Duration = Duration::from_millis(5);
/// Spacing as a multiple of the last rebuild's cost.
const REBUILD_COST_FACTOR: u32 = 4;

struct Entry {
    view: ServerView,
    part: Arc<ServerTools>,
    /// `part` without the entries whose public name another server also
    /// publishes; `None` when nothing clashes.
    published: Option<Arc<ServerTools>>,
    /// This server's side of the clashes, as its view reports them.
    clashes: Vec<ToolProblem>,
    /// The invalid-tool count last sent to the metrics.
    invalid_emitted: Option<usize>,
}

impl Entry {
    fn new(view: ServerView, part: Arc<ServerTools>) -> Self {
        Self {
            view,
            part,
            published: None,
            clashes: Vec::new(),
            invalid_emitted: None,
        }
    }

    /// The part the catalog publishes.
    fn published(&self) -> Arc<ServerTools> {
        self.published.clone().unwrap_or_else(|| self.part.clone())
    }

    /// The view as `/v1/servers` shows it: with the clashes.
    fn shown_view(&self) -> ServerView {
        let mut view = self.view.clone();
        if !self.clashes.is_empty() {
            view.tool_report = Arc::new(view.tool_report.with_more_invalid(&self.clashes));
            view.tool_count = self.published.as_ref().map_or(view.tool_count, |p| p.len());
        }
        view
    }
}

/// Public names of every server's part, counted by hash, so a clash
/// between two servers is found without looking at every name on every
/// rebuild: only when some hash is counted twice.
#[derive(Default)]
struct NameCounts {
    counts: HashMap<u64, u32>,
    /// How many hashes are counted more than once.
    repeated: usize,
}

impl NameCounts {
    fn add(&mut self, part: &ServerTools) {
        for e in part.entries() {
            let n = self.counts.entry(e.name_hash).or_default();
            *n += 1;
            if *n == 2 {
                self.repeated += 1;
            }
        }
    }

    fn remove(&mut self, part: &ServerTools) {
        for e in part.entries() {
            if let Some(n) = self.counts.get_mut(&e.name_hash) {
                *n -= 1;
                if *n == 1 {
                    self.repeated -= 1;
                }
                if *n == 0 {
                    self.counts.remove(&e.name_hash);
                }
            }
        }
    }

    fn is_repeated(&self, hash: u64) -> bool {
        self.counts.get(&hash).is_some_and(|n| *n > 1)
    }
}

/// Aggregates upstream results into [`Catalog`] and [`ServersSnapshot`].
pub struct Registry {
    entries: IndexMap<String, Entry>,
    names: NameCounts,
    /// Some entry has clashes (or its part changed while it had some).
    clashes_pending: bool,
    version: u64,
    catalog_tx: watch::Sender<Arc<Catalog>>,
    servers_tx: watch::Sender<Arc<ServersSnapshot>>,
    events: Arc<dyn DiscoveryEvents>,
    tools_dirty: bool,
    servers_dirty: bool,
    rebuild_scheduled: bool,
    last_rebuild: Option<(Instant, Duration)>,
    /// When the last server snapshot was built and what it cost: at 10k
    /// servers one is 10k views, and a flood of state changes (each
    /// server connecting, initializing, healthy) rebuilt it once per
    /// change, the superlinear part of a 10k start-up (issue 13).
    last_servers: Option<(Instant, Duration)>,
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
            names: NameCounts::default(),
            clashes_pending: false,
            version: 0,
            catalog_tx,
            servers_tx,
            events,
            tools_dirty: false,
            servers_dirty: false,
            rebuild_scheduled: false,
            last_rebuild: None,
            last_servers: None,
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

    /// How long a server snapshot must still wait: spaced by a few times
    /// its own cost (no minimum: with a few servers it costs microseconds,
    /// so an isolated change is still published at once).
    fn servers_wait(&self) -> Duration {
        match self.last_servers {
            Some((at, cost)) => (cost * REBUILD_COST_FACTOR).saturating_sub(at.elapsed()),
            None => Duration::ZERO,
        }
    }

    fn schedule_rebuild(&mut self, ctx: &mut Context<Self>) {
        if self.rebuild_scheduled {
            return;
        }
        self.rebuild_scheduled = true;
        // A state-only change is spaced by the snapshot's own cost (small
        // next to the catalog's, so it hardly delays a catalog that follows
        // it a millisecond later); a catalog change by the catalog's.
        let wait = if self.tools_dirty {
            self.catalog_wait()
        } else {
            self.servers_wait()
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
        if self.tools_dirty && (self.names.repeated > 0 || self.clashes_pending) {
            self.resolve_clashes();
        }
        let catalog_due = self.tools_dirty && self.catalog_wait().is_zero();
        if self.servers_dirty && (catalog_due || self.servers_wait().is_zero()) {
            let started = Instant::now();
            let snapshot = ServersSnapshot {
                servers: self
                    .entries
                    .iter()
                    .map(|(name, e)| (name.clone(), e.shown_view()))
                    .collect(),
            };
            for (name, e) in self.entries.iter_mut() {
                let invalid = e.view.tool_report.invalid_total + e.clashes.len();
                if e.invalid_emitted != Some(invalid) {
                    self.events.invalid_tools(name, invalid);
                    e.invalid_emitted = Some(invalid);
                }
            }
            // The old snapshot is dropped here too (when no reader holds it):
            // part of the cost.
            drop(self.servers_tx.send_replace(Arc::new(snapshot)));
            self.servers_dirty = false;
            self.last_servers = Some((Instant::now(), started.elapsed()));
        }
        if self.tools_dirty && !self.catalog_wait().is_zero() {
            self.schedule_rebuild(ctx);
        } else if self.tools_dirty {
            let started = Instant::now();
            let parts: Vec<Arc<ServerTools>> =
                self.entries.values().map(Entry::published).collect();
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
        if self.servers_dirty {
            // Spaced: built on the next turn.
            self.schedule_rebuild(ctx);
        }
    }
}

impl Registry {
    /// Replaces a server's part, keeping the name counts right.
    fn set_part(&mut self, name: &str, part: Arc<ServerTools>) {
        let Some(entry) = self.entries.get_mut(name) else {
            return;
        };
        self.names.remove(&entry.part);
        self.names.add(&part);
        entry.part = part;
        if entry.published.take().is_some() || !entry.clashes.is_empty() {
            self.clashes_pending = true;
        }
    }

    /// Finds public names published by more than one server and leaves
    /// every side of each out, reporting it in each server's view with the
    /// other server's name: neither silently shadows the other. Runs only
    /// while some name hash is counted twice or a clash was seen.
    fn resolve_clashes(&mut self) {
        let mut owners: HashMap<&str, Vec<usize>> = HashMap::new();
        if self.names.repeated > 0 {
            for (i, e) in self.entries.values().enumerate() {
                for t in e.part.entries() {
                    if self.names.is_repeated(t.name_hash) {
                        owners.entry(t.name.as_str()).or_default().push(i);
                    }
                }
            }
        }
        owners.retain(|_, v| {
            v.dedup();
            v.len() > 1
        });
        let mut found: Vec<(Vec<ToolProblem>, HashSet<String>)> =
            vec![(Vec::new(), HashSet::new()); self.entries.len()];
        for (public, servers) in &owners {
            for &i in servers {
                let others: Vec<&str> = servers
                    .iter()
                    .filter(|&&j| j != i)
                    .filter_map(|&j| self.entries.get_index(j).map(|(n, _)| n.as_str()))
                    .collect();
                let Some((_, entry)) = self.entries.get_index(i) else {
                    continue;
                };
                let upstream = entry
                    .part
                    .entries()
                    .iter()
                    .find(|t| t.name == *public)
                    .map(|t| t.upstream_name().to_owned());
                found[i].0.push(ToolProblem {
                    name: upstream,
                    reason: mcp_clip(&format!(
                        "its public name {public:?} is also published by server {}; neither is \
                         published",
                        others
                            .iter()
                            .map(|o| format!("{o:?}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )),
                });
                found[i].1.insert((*public).to_owned());
            }
        }
        let mut any = false;
        for ((name, entry), (mut clashes, names)) in self.entries.iter_mut().zip(found) {
            clashes.sort_by(|a, b| a.name.cmp(&b.name));
            any |= !clashes.is_empty();
            if clashes == entry.clashes && (clashes.is_empty() || entry.published.is_some()) {
                continue;
            }
            if !clashes.is_empty() && clashes != entry.clashes {
                tracing::warn!(
                    server = %name,
                    tools = clashes.len(),
                    "Left tools out of the catalog: another server publishes the same public names."
                );
            }
            let names: HashSet<&str> = names.iter().map(String::as_str).collect();
            entry.published = (!clashes.is_empty()).then(|| Arc::new(entry.part.without(&names)));
            entry.clashes = clashes;
            self.servers_dirty = true;
        }
        self.clashes_pending = any;
    }
}

fn mcp_clip(text: &str) -> String {
    crate::mcp::error::clip(text, 300)
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
        if let Some(old) = self.entries.insert(name, Entry::new(msg.view, part)) {
            self.names.remove(&old.part);
            self.clashes_pending |= !old.clashes.is_empty();
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
            let name = entry.view.name.clone();
            self.set_part(&name, part);
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
        if let Some(old) = self.entries.shift_remove(&msg.name) {
            self.names.remove(&old.part);
            self.clashes_pending |= !old.clashes.is_empty();
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
            next_refresh_at: None,
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
            cache: None,
            tool_report: Arc::default(),
            generation,
            first_attempt_done: false,
            call_timeout: std::time::Duration::from_secs(60),
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

    #[derive(Default)]
    struct InvalidCounts(std::sync::Mutex<Vec<(String, usize)>>);

    impl crate::events::DiscoveryEvents for InvalidCounts {
        fn invalid_tools(&self, server: &str, count: usize) {
            self.0.lock().unwrap().push((server.to_owned(), count));
        }
    }

    async fn servers_until(
        rx: &mut watch::Receiver<Arc<ServersSnapshot>>,
        ok: impl Fn(&ServersSnapshot) -> bool,
    ) -> Arc<ServersSnapshot> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let current = rx.borrow_and_update().clone();
            if ok(&current) {
                return current;
            }
            assert!(Instant::now() < deadline, "servers never got there");
            let _ = actix_rt::time::timeout(Duration::from_millis(100), rx.changed()).await;
        }
    }

    #[actix_rt::test]
    async fn a_public_name_clash_leaves_both_out_and_reports_both() {
        let events = Arc::new(InvalidCounts::default());
        let (registry, mut catalog, mut servers) = Registry::new(events.clone());
        let registry = registry.start();
        for name in ["a", "a_"] {
            registry.do_send(Register {
                view: view(name, 1),
            });
        }
        // `a` + `_x` and `a_` + `x` are both `a___x`.
        registry.do_send(Report {
            view: view("a", 1),
            part: Some(part("a", &["_x", "ok"])),
        });
        registry.do_send(Report {
            view: view("a_", 1),
            part: Some(part("a_", &["x"])),
        });
        let cat = settle(&mut catalog, 1).await;
        let body = String::from_utf8(cat.body().to_bytes().to_vec()).unwrap();
        assert!(body.contains("a__ok") && !body.contains("a___x"), "{body}");
        let snap = servers_until(&mut servers, |s| {
            s.servers
                .values()
                .all(|v| !v.tool_report.invalid_tools.is_empty())
        })
        .await;
        let a = &snap.servers["a"];
        assert_eq!(a.tool_count, 1);
        assert_eq!(a.tool_report.invalid_tools[0].name.as_deref(), Some("_x"));
        assert!(
            a.tool_report.invalid_tools[0]
                .reason
                .contains("server \"a_\""),
            "{:?}",
            a.tool_report.invalid_tools
        );
        let b = &snap.servers["a_"];
        assert_eq!(b.tool_count, 0);
        assert_eq!(b.tool_report.invalid_tools[0].name.as_deref(), Some("x"));
        assert!(b.tool_report.invalid_tools[0]
            .reason
            .contains("server \"a\""));
        let counts = events.0.lock().unwrap().clone();
        assert!(
            counts.contains(&("a".into(), 1)) && counts.contains(&("a_".into(), 1)),
            "{counts:?}"
        );

        // The other side gone: the tool is published again, the report cleared.
        registry
            .send(Unregister {
                name: "a_".into(),
                generation: 1,
            })
            .await
            .unwrap();
        let cat = settle(&mut catalog, 2).await;
        let body = String::from_utf8(cat.body().to_bytes().to_vec()).unwrap();
        assert!(body.contains("a___x"), "{body}");
        servers_until(&mut servers, |s| {
            s.servers.len() == 1 && s.servers["a"].tool_report.invalid_tools.is_empty()
        })
        .await;
        assert_eq!(events.0.lock().unwrap().last(), Some(&("a".into(), 0)));
    }

    #[test]
    fn name_counts_track_repeats() {
        let mut n = NameCounts::default();
        let a = part("a", &["_x"]);
        let b = part("a_", &["x"]);
        n.add(&a);
        assert_eq!(n.repeated, 0);
        n.add(&b);
        assert_eq!(n.repeated, 1);
        n.remove(&a);
        assert_eq!(n.repeated, 0);
        n.remove(&b);
        assert!(n.counts.is_empty());
    }
}
