//! The compressed bodies, computed on one thread of their own and kept for
//! the current catalog version only.
//!
//! A request asks for a body in a coding: ready, it gets the bytes; not
//! ready, it gets None (and serves another coding) and the body is
//! scheduled, once. The whole catalog is also compressed as soon as a new
//! version is published, in the codings clients asked for during the last
//! [`DEMAND_WINDOW`] (so a re-listing client finds it ready, while start-up
//! floods of versions nobody reads cost nothing). `?server=` bodies and
//! `/mcp` pieces are computed on first ask.
//!
//! The publisher never waits: the worker reads the catalog's `watch`
//! channel like any reader, and when it falls behind it skips to the
//! newest version. Bodies of older versions are dropped when a newer one
//! is seen; `/mcp` pieces when their listing is dropped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use discovery_actors::Catalog;
use tokio::sync::{mpsc, watch};

use super::codec::{self, DeflatePiece};
use super::Coding;
use crate::gateway::listing::Listing;
use crate::lock;

/// How long a request for a compressed catalog keeps the worker
/// compressing each new version ahead of the next request.
pub const DEMAND_WINDOW: Duration = Duration::from_secs(600);

/// Where a body's computation stands.
enum Slot<T> {
    Empty,
    Pending,
    Ready(T),
    /// The compressor failed (logged once); served in another coding.
    Failed,
}

impl<T: Clone> Slot<T> {
    /// The value if ready; otherwise marks it pending when `schedule` and
    /// it was not asked for yet, and says whether a job must be queued.
    fn take_or_schedule(&mut self, schedule: bool) -> (Option<T>, bool) {
        match self {
            Slot::Ready(v) => (Some(v.clone()), false),
            Slot::Empty if schedule => {
                *self = Slot::Pending;
                (None, true)
            }
            _ => (None, false),
        }
    }
}

/// One catalog version's bodies in each coding (the whole catalog, or
/// one server's part of it).
struct VersionBodies {
    catalog: Weak<Catalog>,
    version: u64,
    gzip: Slot<Bytes>,
    zstd: Slot<Bytes>,
}

impl VersionBodies {
    fn new(catalog: &Arc<Catalog>) -> Self {
        Self {
            catalog: Arc::downgrade(catalog),
            version: catalog.version,
            gzip: Slot::Empty,
            zstd: Slot::Empty,
        }
    }

    fn is_for(&self, catalog: &Arc<Catalog>) -> bool {
        std::ptr::eq(self.catalog.as_ptr(), Arc::as_ptr(catalog))
    }

    fn slot(&mut self, coding: Coding) -> Option<&mut Slot<Bytes>> {
        match coding {
            Coding::Gzip => Some(&mut self.gzip),
            Coding::Zstd => Some(&mut self.zstd),
            Coding::Identity => None,
        }
    }
}

/// Looks `catalog`'s body up in `entry`, replacing an older version's
/// entry (its bodies are dropped here). A request that raced a publish
/// and holds an older catalog than the entry gets nothing.
fn lookup(
    entry: &mut Option<VersionBodies>,
    catalog: &Arc<Catalog>,
    coding: Coding,
    schedule: bool,
) -> (Option<Bytes>, bool) {
    let stale = entry.as_ref().is_none_or(|e| {
        !e.is_for(catalog) && (e.version <= catalog.version || e.catalog.strong_count() == 0)
    });
    if stale {
        *entry = Some(VersionBodies::new(catalog));
    }
    match entry.as_mut().filter(|e| e.is_for(catalog)) {
        Some(e) => e
            .slot(coding)
            .map_or((None, false), |s| s.take_or_schedule(schedule)),
        None => (None, false),
    }
}

/// A listing's piece: its whole tools array (`page` None) or one page.
type PieceKey = (usize, Option<usize>);

struct PieceEntry {
    listing: Weak<Listing>,
    piece: Slot<Arc<DeflatePiece>>,
}

enum Job {
    Catalog {
        catalog: Weak<Catalog>,
        coding: Coding,
    },
    Server {
        catalog: Weak<Catalog>,
        server: String,
        coding: Coding,
    },
    Piece {
        listing: Weak<Listing>,
        key: PieceKey,
    },
}

/// A test fault: while closed, the worker holds every compression back
/// (a slow compressor), so tests can publish versions and serve requests
/// meanwhile. Never set outside tests ([`crate::AppOptions`]).
#[doc(hidden)]
#[derive(Debug, Default)]
pub struct Gate {
    closed: Mutex<bool>,
    opened: Condvar,
    held: AtomicUsize,
}

impl Gate {
    pub fn closed() -> Arc<Self> {
        let gate = Self::default();
        *lock(&gate.closed) = true;
        Arc::new(gate)
    }

    pub fn open(&self) {
        *lock(&self.closed) = false;
        self.opened.notify_all();
    }

    /// How many compressions wait at the gate now (0 or 1: one worker).
    pub fn held(&self) -> usize {
        self.held.load(Ordering::SeqCst)
    }

    fn pass(&self) {
        let mut closed = lock(&self.closed);
        if *closed {
            self.held.fetch_add(1, Ordering::SeqCst);
            while *closed {
                closed = self
                    .opened
                    .wait(closed)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
            }
            self.held.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

struct Shared {
    catalog: Mutex<Option<VersionBodies>>,
    servers: Mutex<HashMap<String, Option<VersionBodies>>>,
    pieces: Mutex<HashMap<PieceKey, PieceEntry>>,
    /// When a request last wanted the whole catalog in gzip / zstd
    /// (milliseconds since `epoch`, 0: never).
    asked: [AtomicU64; 2],
    epoch: Instant,
    gate: Option<Arc<Gate>>,
}

/// The compressed bodies and the thread that computes them; one per
/// application, shared by the HTTP workers.
pub struct Compressor {
    shared: Arc<Shared>,
    /// None when the worker could not start: everything is identity.
    jobs: Option<mpsc::UnboundedSender<Job>>,
}

impl Compressor {
    /// Starts the worker thread on `catalog` (the engine's channel).
    pub fn start(catalog: watch::Receiver<Arc<Catalog>>, gate: Option<Arc<Gate>>) -> Self {
        let shared = Arc::new(Shared {
            catalog: Mutex::new(None),
            servers: Mutex::default(),
            pieces: Mutex::default(),
            asked: [AtomicU64::new(0), AtomicU64::new(0)],
            epoch: Instant::now(),
            gate,
        });
        let (tx, rx) = mpsc::unbounded_channel();
        let worker = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("mcpd-compress".into())
            .spawn(move || worker.run(rx, catalog));
        let jobs = match spawned {
            Ok(_) => Some(tx),
            Err(err) => {
                tracing::error!(error = %err, "Could not start the compression thread; every answer is sent uncompressed.");
                None
            }
        };
        Self { shared, jobs }
    }

    /// The whole catalog in `coding`, if ready. `schedule`: compute it if
    /// it is not (and count the ask as demand for the next versions).
    pub fn catalog_body(
        &self,
        catalog: &Arc<Catalog>,
        coding: Coding,
        schedule: bool,
    ) -> Option<Bytes> {
        if schedule {
            self.shared.note_demand(coding);
        }
        let (ready, queue) = lookup(&mut lock(&self.shared.catalog), catalog, coding, schedule);
        if queue {
            self.queue(Job::Catalog {
                catalog: Arc::downgrade(catalog),
                coding,
            });
        }
        ready
    }

    /// `?server=`'s body in `coding`, if ready.
    pub fn server_body(
        &self,
        catalog: &Arc<Catalog>,
        server: &str,
        coding: Coding,
        schedule: bool,
    ) -> Option<Bytes> {
        let (ready, queue) = {
            let mut servers = lock(&self.shared.servers);
            let entry = match servers.get_mut(server) {
                Some(e) => e,
                None if schedule => servers.entry(server.to_owned()).or_default(),
                None => return None,
            };
            lookup(entry, catalog, coding, schedule)
        };
        if queue {
            self.queue(Job::Server {
                catalog: Arc::downgrade(catalog),
                server: server.to_owned(),
                coding,
            });
        }
        ready
    }

    /// The deflate piece of `listing`'s tools array (`page` None) or of
    /// one page, if ready.
    pub fn listing_piece(
        &self,
        listing: &Arc<Listing>,
        page: Option<usize>,
        schedule: bool,
    ) -> Option<Arc<DeflatePiece>> {
        let key = (Arc::as_ptr(listing) as usize, page);
        let (ready, queue) = {
            let mut pieces = lock(&self.shared.pieces);
            let same = pieces.get(&key).is_some_and(|e| {
                e.listing
                    .upgrade()
                    .is_some_and(|l| Arc::ptr_eq(&l, listing))
            });
            if !same {
                if !schedule {
                    return None;
                }
                // A new listing (or a freed one's address reused).
                pieces.retain(|_, e| e.listing.strong_count() > 0);
                pieces.insert(
                    key,
                    PieceEntry {
                        listing: Arc::downgrade(listing),
                        piece: Slot::Empty,
                    },
                );
            }
            match pieces.get_mut(&key) {
                Some(e) => e.piece.take_or_schedule(schedule),
                None => (None, false),
            }
        };
        if queue {
            self.queue(Job::Piece {
                listing: Arc::downgrade(listing),
                key,
            });
        }
        ready
    }

    fn queue(&self, job: Job) {
        let sent = self.jobs.as_ref().is_some_and(|tx| tx.send(job).is_ok());
        if !sent {
            tracing::debug!("The compression thread is gone; answering uncompressed.");
        }
    }

    /// Bodies held now (tests: old versions are dropped).
    #[doc(hidden)]
    pub fn held_bodies(&self) -> usize {
        let count = |e: &VersionBodies| {
            [&e.gzip, &e.zstd]
                .iter()
                .filter(|s| matches!(s, Slot::Ready(_)))
                .count()
        };
        lock(&self.shared.catalog).as_ref().map_or(0, count)
            + lock(&self.shared.servers)
                .values()
                .flatten()
                .map(count)
                .sum::<usize>()
            + lock(&self.shared.pieces)
                .values()
                .filter(|e| matches!(e.piece, Slot::Ready(_)))
                .count()
    }
}

impl Shared {
    fn note_demand(&self, coding: Coding) {
        let Some(i) = demand_index(coding) else {
            return;
        };
        // At least 1, so that 0 keeps meaning "never".
        let now = self.epoch.elapsed().as_millis() as u64 + 1;
        // One store a second at most: readers at 20k req/s share the line.
        let last = self.asked[i].load(Ordering::Relaxed);
        if last == 0 || now.saturating_sub(last) > 1000 {
            self.asked[i].store(now, Ordering::Relaxed);
        }
    }

    fn in_demand(&self, coding: Coding) -> bool {
        let Some(i) = demand_index(coding) else {
            return false;
        };
        let asked = self.asked[i].load(Ordering::Relaxed);
        let now = self.epoch.elapsed().as_millis() as u64 + 1;
        asked > 0 && now.saturating_sub(asked) <= DEMAND_WINDOW.as_millis() as u64
    }

    /// The worker: new catalog versions first, then queued jobs. Whole
    /// catalog compressions are spaced by [`SPACING_FACTOR`] times the cost
    /// of the last one (as the registry spaces its rebuilds), so a flood of
    /// versions with a compressed reader (a start-up) costs at most about a
    /// fifth of a core; a job that comes too soon waits, the newest per
    /// coding only.
    fn run(
        self: Arc<Self>,
        mut jobs: mpsc::UnboundedReceiver<Job>,
        catalog: watch::Receiver<Arc<Catalog>>,
    ) {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
        {
            Ok(rt) => rt,
            Err(err) => {
                tracing::error!(error = %err, "Could not start the compression thread's runtime; every answer is sent uncompressed.");
                return;
            }
        };
        let mut catalog = Some(catalog);
        let mut spacing = Spacing::default();
        runtime.block_on(async {
            loop {
                let wake = spacing.wake();
                tokio::select! {
                    biased;
                    latest = next_version(&mut catalog) => {
                        for job in self.on_version(&latest) {
                            self.whole(job, &mut spacing);
                        }
                    }
                    () = sleep_until(wake), if wake.is_some() => {
                        for job in spacing.take() {
                            self.whole(job, &mut spacing);
                        }
                    }
                    job = jobs.recv() => match job {
                        Some(job @ Job::Catalog { .. }) => self.whole(job, &mut spacing),
                        Some(job) => {
                            self.run_job(job);
                        }
                        None => break,
                    },
                }
            }
        });
    }

    /// Runs a whole-catalog job now, or defers it until the spacing allows.
    fn whole(&self, job: Job, spacing: &mut Spacing) {
        if !spacing.ready() {
            spacing.defer(job);
            return;
        }
        if let Some(cost) = self.run_job(job) {
            spacing.ran(cost);
        }
    }

    /// A new version: drop what older ones left, and the whole-catalog
    /// jobs for the codings in demand.
    fn on_version(&self, catalog: &Arc<Catalog>) -> Vec<Job> {
        lock(&self.servers).retain(|_, e| {
            e.as_ref()
                .is_some_and(|e| e.version >= catalog.version && e.catalog.strong_count() > 0)
        });
        lock(&self.pieces).retain(|_, e| e.listing.strong_count() > 0);
        let mut jobs = Vec::new();
        for coding in [Coding::Zstd, Coding::Gzip] {
            if !self.in_demand(coding) {
                continue;
            }
            let (_, queue) = lookup(&mut lock(&self.catalog), catalog, coding, true);
            if queue {
                jobs.push(Job::Catalog {
                    catalog: Arc::downgrade(catalog),
                    coding,
                });
            }
        }
        // Nothing asked for: the old version's bodies go now, not at the
        // next ask.
        let mut whole = lock(&self.catalog);
        if whole.as_ref().is_some_and(|e| e.version < catalog.version) {
            *whole = None;
        }
        jobs
    }

    /// Runs `job` unless superseded; how long the compression took.
    fn run_job(&self, job: Job) -> Option<Duration> {
        match job {
            Job::Catalog { catalog, coding } => {
                let catalog = catalog.upgrade()?;
                if !self.still_pending(&self.catalog, &catalog, coding) {
                    return None;
                }
                self.wait_gate();
                let started = Instant::now();
                let result = compress(coding, &catalog.body().chunks);
                let cost = started.elapsed();
                let mut whole = lock(&self.catalog);
                store(whole.as_mut(), &catalog, coding, result);
                Some(cost)
            }
            Job::Server {
                catalog,
                server,
                coding,
            } => {
                let catalog = catalog.upgrade()?;
                let pending = lock(&self.servers).get_mut(&server).is_some_and(|e| {
                    e.as_mut()
                        .filter(|e| e.is_for(&catalog))
                        .and_then(|e| e.slot(coding))
                        .is_some_and(|s| matches!(s, Slot::Pending))
                });
                if !pending {
                    return None;
                }
                self.wait_gate();
                let started = Instant::now();
                let body = catalog.render_filtered(Some(&server), None);
                let result = compress(coding, &body.chunks);
                let cost = started.elapsed();
                let mut servers = lock(&self.servers);
                let entry = servers.get_mut(&server).and_then(Option::as_mut);
                store(entry, &catalog, coding, result);
                Some(cost)
            }
            Job::Piece { listing, key } => {
                let listing = listing.upgrade()?;
                self.wait_gate();
                let started = Instant::now();
                let chunks = match key.1 {
                    None => listing.body.clone(),
                    Some(page) => listing.pages.get(page).cloned().into_iter().collect(),
                };
                let slot = match DeflatePiece::compress(&chunks) {
                    Ok(piece) => Slot::Ready(Arc::new(piece)),
                    Err(err) => {
                        tracing::warn!(error = %err, "Could not compress an MCP listing; it is sent uncompressed.");
                        Slot::Failed
                    }
                };
                let cost = started.elapsed();
                if let Some(e) = lock(&self.pieces).get_mut(&key) {
                    if e.listing
                        .upgrade()
                        .is_some_and(|l| Arc::ptr_eq(&l, &listing))
                    {
                        e.piece = slot;
                    }
                }
                Some(cost)
            }
        }
    }

    fn still_pending(
        &self,
        entry: &Mutex<Option<VersionBodies>>,
        catalog: &Arc<Catalog>,
        coding: Coding,
    ) -> bool {
        lock(entry)
            .as_mut()
            .filter(|e| e.is_for(catalog))
            .and_then(|e| e.slot(coding))
            .is_some_and(|s| matches!(s, Slot::Pending))
    }

    fn wait_gate(&self) {
        if let Some(gate) = &self.gate {
            gate.pass();
        }
    }
}

/// A whole-catalog compression may start this many times its last cost
/// after that one ended.
const SPACING_FACTOR: u32 = 4;

/// When the next whole-catalog compression may start, and the jobs that
/// wait for it (the newest per coding).
#[derive(Default)]
struct Spacing {
    next: Option<Instant>,
    waiting: Vec<Job>,
}

impl Spacing {
    fn ready(&self) -> bool {
        self.next.is_none_or(|at| Instant::now() >= at)
    }

    /// A compression that took `cost` just ended.
    fn ran(&mut self, cost: Duration) {
        self.next = Some(Instant::now() + cost * SPACING_FACTOR);
    }

    fn defer(&mut self, job: Job) {
        let coding = |j: &Job| match j {
            Job::Catalog { coding, .. } => Some(*coding),
            _ => None,
        };
        let c = coding(&job);
        self.waiting.retain(|j| coding(j) != c);
        self.waiting.push(job);
    }

    fn wake(&self) -> Option<Instant> {
        (!self.waiting.is_empty()).then_some(self.next).flatten()
    }

    fn take(&mut self) -> Vec<Job> {
        std::mem::take(&mut self.waiting)
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// The newest catalog once it changes; never, once the engine is gone.
async fn next_version(rx: &mut Option<watch::Receiver<Arc<Catalog>>>) -> Arc<Catalog> {
    if let Some(r) = rx {
        if r.changed().await.is_ok() {
            return r.borrow_and_update().clone();
        }
    }
    *rx = None;
    std::future::pending().await
}

fn compress(coding: Coding, chunks: &[Bytes]) -> std::io::Result<Bytes> {
    match coding {
        Coding::Gzip => codec::gzip(chunks),
        Coding::Zstd => codec::zstd(chunks),
        Coding::Identity => Err(std::io::Error::other("identity is not compressed")),
    }
}

/// Puts a finished body in place, if the entry is still `catalog`'s.
fn store(
    entry: Option<&mut VersionBodies>,
    catalog: &Arc<Catalog>,
    coding: Coding,
    result: std::io::Result<Bytes>,
) {
    let Some(slot) = entry
        .filter(|e| e.is_for(catalog))
        .and_then(|e| e.slot(coding))
    else {
        return;
    };
    *slot = match result {
        Ok(bytes) => Slot::Ready(bytes),
        Err(err) => {
            tracing::warn!(error = %err, version = catalog.version, coding = ?coding, "Could not compress the catalog; it is sent in another coding.");
            Slot::Failed
        }
    };
}

fn demand_index(coding: Coding) -> Option<usize> {
    match coding {
        Coding::Gzip => Some(0),
        Coding::Zstd => Some(1),
        Coding::Identity => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use discovery_actors::catalog::ServerTools;
    use discovery_actors::mcp::Tool;
    use std::io::Read;

    fn catalog(version: u64, tools: usize) -> Arc<Catalog> {
        let tools: Vec<Tool> = (0..tools)
            .map(|i| {
                let raw =
                    serde_json::json!({"name": format!("t{i}"), "description": "x".repeat(50)});
                Tool {
                    name: format!("t{i}"),
                    raw: serde_json::value::to_raw_value(&raw).unwrap().into(),
                }
            })
            .collect();
        let part = Arc::new(ServerTools::build("a", "__", false, &tools));
        Arc::new(Catalog::assemble(version, vec![part]))
    }

    /// Asks until the body is ready (the worker is a real thread).
    fn wait_body(c: &Compressor, catalog: &Arc<Catalog>, coding: Coding) -> Bytes {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(b) = c.catalog_body(catalog, coding, true) {
                return b;
            }
            assert!(Instant::now() < deadline, "never compressed");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn a_body_is_computed_once_and_old_versions_are_dropped() {
        let v1 = catalog(1, 40);
        let (tx, rx) = watch::channel(v1.clone());
        let c = Compressor::start(rx, None);
        // The first ask is not answered compressed: it schedules.
        assert!(c.catalog_body(&v1, Coding::Gzip, true).is_none());
        let gz = wait_body(&c, &v1, Coding::Gzip);
        let mut plain = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut plain)
            .unwrap();
        assert_eq!(plain, v1.body().to_bytes());
        // The same bytes every time (computed once).
        let again = c.catalog_body(&v1, Coding::Gzip, true).unwrap();
        assert_eq!(again.as_ptr(), gz.as_ptr());
        assert_eq!(c.held_bodies(), 1);
        // A new version: gzip was asked for, so it is compressed ahead
        // of the next ask, and v1's body is gone.
        let v2 = catalog(2, 41);
        tx.send_replace(v2.clone());
        let deadline = Instant::now() + Duration::from_secs(20);
        while c.catalog_body(&v2, Coding::Gzip, false).is_none() {
            assert!(Instant::now() < deadline, "v2 never compressed ahead");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(c.held_bodies(), 1);
        // zstd was never asked for: not computed.
        assert!(c.catalog_body(&v2, Coding::Zstd, false).is_none());
        // A request that still holds v1 gets nothing, and does not bring
        // v1 back.
        assert!(c.catalog_body(&v1, Coding::Gzip, true).is_none());
        assert!(c.catalog_body(&v2, Coding::Gzip, false).is_some());
    }

    #[test]
    fn a_held_compression_never_holds_up_readers_and_is_skipped_once_superseded() {
        let gate = Gate::closed();
        let v1 = catalog(1, 40);
        let (tx, rx) = watch::channel(v1.clone());
        let c = Compressor::start(rx, Some(gate.clone()));
        assert!(c.catalog_body(&v1, Coding::Zstd, true).is_none());
        let deadline = Instant::now() + Duration::from_secs(20);
        while gate.held() == 0 {
            assert!(Instant::now() < deadline, "the job never reached the gate");
            std::thread::sleep(Duration::from_millis(5));
        }
        // Publishing goes through; readers get None at once.
        let v2 = catalog(2, 41);
        tx.send_replace(v2.clone());
        assert!(c.catalog_body(&v2, Coding::Zstd, true).is_none());
        assert!(c.catalog_body(&v1, Coding::Zstd, true).is_none());
        gate.open();
        let z = wait_body(&c, &v2, Coding::Zstd);
        assert_eq!(
            zstd::stream::decode_all(&z[..]).unwrap(),
            v2.body().to_bytes()
        );
        // v1's body, finished after v2 was published, was never kept.
        assert_eq!(c.held_bodies(), 1);
    }

    #[test]
    fn server_bodies_follow_the_version() {
        let v1 = catalog(1, 30);
        let (_tx, rx) = watch::channel(v1.clone());
        let c = Compressor::start(rx, None);
        let deadline = Instant::now() + Duration::from_secs(20);
        let gz = loop {
            if let Some(b) = c.server_body(&v1, "a", Coding::Gzip, true) {
                break b;
            }
            assert!(Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(5));
        };
        let mut plain = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut plain)
            .unwrap();
        assert_eq!(plain, v1.render_filtered(Some("a"), None).to_bytes());
        // Another version of the catalog: not v1's body.
        let v2 = catalog(2, 30);
        assert!(c.server_body(&v2, "a", Coding::Gzip, false).is_none());
    }
}
