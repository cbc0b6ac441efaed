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
        if now.saturating_sub(self.asked[i].load(Ordering::Relaxed)) > 1000 {
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

    /// The worker: new catalog versions first, then queued jobs.
    fn run(
        self: Arc<Self>,
        mut jobs: mpsc::UnboundedReceiver<Job>,
        catalog: watch::Receiver<Arc<Catalog>>,
    ) {
        let runtime = match tokio::runtime::Builder::new_current_thread().build() {
            Ok(rt) => rt,
            Err(err) => {
                tracing::error!(error = %err, "Could not start the compression thread's runtime; every answer is sent uncompressed.");
                return;
            }
        };
        let mut catalog = Some(catalog);
        runtime.block_on(async {
            loop {
                tokio::select! {
                    biased;
                    latest = next_version(&mut catalog) => self.on_version(&latest),
                    job = jobs.recv() => match job {
                        Some(job) => self.run_job(job),
                        None => break,
                    },
                }
            }
        });
    }

    /// A new version: drop what older ones left, and compress it ahead in
    /// the codings in demand.
    fn on_version(&self, catalog: &Arc<Catalog>) {
        lock(&self.servers).retain(|_, e| {
            e.as_ref()
                .is_some_and(|e| e.version >= catalog.version && e.catalog.strong_count() > 0)
        });
        lock(&self.pieces).retain(|_, e| e.listing.strong_count() > 0);
        for coding in [Coding::Zstd, Coding::Gzip] {
            if !self.in_demand(coding) {
                continue;
            }
            let (_, queue) = lookup(&mut lock(&self.catalog), catalog, coding, true);
            if queue {
                self.run_job(Job::Catalog {
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
    }

    fn run_job(&self, job: Job) {
        match job {
            Job::Catalog { catalog, coding } => {
                let Some(catalog) = catalog.upgrade() else {
                    return;
                };
                if !self.still_pending(&self.catalog, &catalog, coding) {
                    return;
                }
                self.wait_gate();
                let result = compress(coding, &catalog.body().chunks);
                let mut whole = lock(&self.catalog);
                store(whole.as_mut(), &catalog, coding, result);
            }
            Job::Server {
                catalog,
                server,
                coding,
            } => {
                let Some(catalog) = catalog.upgrade() else {
                    return;
                };
                let pending = lock(&self.servers).get_mut(&server).is_some_and(|e| {
                    e.as_mut()
                        .filter(|e| e.is_for(&catalog))
                        .and_then(|e| e.slot(coding))
                        .is_some_and(|s| matches!(s, Slot::Pending))
                });
                if !pending {
                    return;
                }
                self.wait_gate();
                let body = catalog.render_filtered(Some(&server), None);
                let result = compress(coding, &body.chunks);
                let mut servers = lock(&self.servers);
                let entry = servers.get_mut(&server).and_then(Option::as_mut);
                store(entry, &catalog, coding, result);
            }
            Job::Piece { listing, key } => {
                let Some(listing) = listing.upgrade() else {
                    return;
                };
                self.wait_gate();
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
                if let Some(e) = lock(&self.pieces).get_mut(&key) {
                    if e.listing
                        .upgrade()
                        .is_some_and(|l| Arc::ptr_eq(&l, &listing))
                    {
                        e.piece = slot;
                    }
                }
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

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
