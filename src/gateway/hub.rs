//! list_changed fan-out to the endpoint's listening clients: modern
//! `subscriptions/listen` streams and 2025 GET streams alike.
//!
//! One task watches the catalog and the config. On every change it takes,
//! per listener, the listing of the listener's scope (pre-serialized and
//! shared, so a thousand listeners of `/mcp` cost one listing) and sends
//! the listener's own pre-built frame when the listing's fingerprint
//! differs from the one it last saw: one notification per catalog version
//! that changes what it sees, and none for a change elsewhere. Bursts
//! coalesce in the `watch` channels (the task always reads the newest).
//!
//! Each listener has a small bounded queue: a client that does not read
//! (a slow or stuck socket) fills it and is disconnected and counted; the
//! others are never held up by it.

use std::collections::HashMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use discovery_actors::Catalog;
use discovery_config::Config;
use tokio::sync::{mpsc, watch};

use super::listing::{Listings, Scope};
use crate::metrics::Metrics;

/// Frames a listener may have queued before it counts as not reading.
pub const LISTENER_QUEUE: usize = 8;
/// SSE comment sent on an idle stream, so proxies and clients see it alive.
pub const KEEPALIVE: Duration = Duration::from_secs(15);

struct Entry {
    scope: Scope,
    /// The listing fingerprint this listener was last told about (or saw
    /// when it connected).
    seen: u64,
    frame: Bytes,
    tx: mpsc::Sender<Bytes>,
    /// The 2025 session whose GET stream this is.
    session: Option<String>,
}

/// The listeners, and the fan-out task's inputs.
pub struct Hub {
    entries: Mutex<HashMap<u64, Entry>>,
    next_id: std::sync::atomic::AtomicU64,
    started: AtomicBool,
    metrics: Arc<Metrics>,
}

impl Hub {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            entries: Mutex::default(),
            next_id: 1.into(),
            started: AtomicBool::new(false),
            metrics,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Entry>> {
        super::lock(&self.entries)
    }

    /// Registers a listener of `scope` that has seen listing `seen`, and
    /// returns its SSE body: `first` (the acknowledgement, for a listen),
    /// then `frame` at each change, keep-alive comments in between.
    pub fn listen(
        self: &Arc<Self>,
        scope: Scope,
        seen: u64,
        first: Option<Bytes>,
        frame: Bytes,
        session: Option<String>,
    ) -> ListenerStream {
        let (tx, rx) = mpsc::channel(LISTENER_QUEUE);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(
            id,
            Entry {
                scope,
                seen,
                frame,
                tx,
                session,
            },
        );
        self.metrics.mcp_listener(1);
        let mut keepalive = tokio::time::interval(KEEPALIVE);
        keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ListenerStream {
            id,
            hub: self.clone(),
            first,
            rx,
            keepalive,
            skipped_first_tick: false,
        }
    }

    fn remove(&self, id: u64) {
        if self.lock().remove(&id).is_some() {
            self.metrics.mcp_listener(-1);
        }
    }

    /// Ends the GET streams of a 2025 session (DELETE, expiry).
    pub fn close_session(&self, session: &str) {
        let mut entries = self.lock();
        let before = entries.len();
        entries.retain(|_, e| e.session.as_deref() != Some(session));
        let gone = before - entries.len();
        drop(entries);
        self.metrics
            .mcp_listener(-i64::try_from(gone).unwrap_or(i64::MAX));
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Starts the fan-out task once, on the caller's runtime (an HTTP
    /// worker's); it ends when the catalog's sender is gone.
    pub fn start(
        self: &Arc<Self>,
        catalog: watch::Receiver<Arc<Catalog>>,
        config: watch::Receiver<Arc<Config>>,
        listings: Arc<Listings>,
    ) {
        if self.started.swap(true, Ordering::AcqRel) {
            return;
        }
        let hub = self.clone();
        actix_rt::spawn(async move {
            // However the task ends (its worker's runtime dropped, the
            // catalog gone), the next request starts another.
            let _restart = Restart(hub.clone());
            hub.run(catalog, config, listings).await
        });
    }

    async fn run(
        self: Arc<Self>,
        mut catalog: watch::Receiver<Arc<Catalog>>,
        mut config: watch::Receiver<Arc<Config>>,
        listings: Arc<Listings>,
    ) {
        loop {
            tokio::select! {
                changed = catalog.changed() => if changed.is_err() { break },
                changed = config.changed() => if changed.is_err() { break },
            }
            let current = catalog.borrow_and_update().clone();
            let cfg = config.borrow_and_update().clone();
            self.fan_out(&current, &cfg, &listings);
        }
    }

    /// One round: tell every listener whose view changed.
    pub fn fan_out(&self, catalog: &Catalog, config: &Arc<Config>, listings: &Listings) {
        let mut entries = self.lock();
        let mut fingerprints: HashMap<Scope, Option<u64>> = HashMap::new();
        let mut sent = 0u64;
        let mut dropped = Vec::new();
        for (id, entry) in entries.iter_mut() {
            let fp = *fingerprints.entry(entry.scope.clone()).or_insert_with(|| {
                listings
                    .get(catalog, &entry.scope, config)
                    .map(|l| l.fingerprint)
            });
            // A view removed by a reload: its listeners are told (their
            // next list gets the error that explains it), once.
            let fp = fp.unwrap_or(0);
            if fp == entry.seen {
                continue;
            }
            match entry.tx.try_send(entry.frame.clone()) {
                Ok(()) => {
                    entry.seen = fp;
                    sent += 1;
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    dropped.push(*id);
                    self.metrics.mcp_listener_dropped();
                    tracing::info!(
                        scope = ?entry.scope,
                        "Disconnected an MCP client that did not read its list_changed notifications."
                    );
                }
                Err(mpsc::error::TrySendError::Closed(_)) => dropped.push(*id),
            }
        }
        for id in &dropped {
            entries.remove(id);
        }
        drop(entries);
        if !dropped.is_empty() {
            self.metrics
                .mcp_listener(-i64::try_from(dropped.len()).unwrap_or(i64::MAX));
        }
        if sent > 0 {
            self.metrics.list_changed_sent(sent);
        }
        listings.prune(config);
    }
}

/// Marks the fan-out task as gone when dropped.
struct Restart(Arc<Hub>);

impl Drop for Restart {
    fn drop(&mut self) {
        self.0.started.store(false, Ordering::Release);
    }
}

/// The SSE body of one listener. Dropping it (the client went away)
/// unregisters the listener.
pub struct ListenerStream {
    id: u64,
    hub: Arc<Hub>,
    first: Option<Bytes>,
    rx: mpsc::Receiver<Bytes>,
    keepalive: tokio::time::Interval,
    skipped_first_tick: bool,
}

impl futures_util::Stream for ListenerStream {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(first) = self.first.take() {
            return Poll::Ready(Some(Ok(first)));
        }
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(frame)) => return Poll::Ready(Some(Ok(frame))),
            // Removed by the hub (disconnected, session ended).
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => {}
        }
        while self.keepalive.poll_tick(cx).is_ready() {
            // `interval` ticks at once when created; the stream just
            // started (or sent its first frame), so that one is skipped.
            if !self.skipped_first_tick {
                self.skipped_first_tick = true;
                continue;
            }
            return Poll::Ready(Some(Ok(Bytes::from_static(b": keep-alive\n\n"))));
        }
        Poll::Pending
    }
}

impl Drop for ListenerStream {
    fn drop(&mut self) {
        self.hub.remove(self.id);
    }
}

/// One SSE `message` event carrying `json`.
pub fn sse_event(json: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(json.len() + 24);
    out.extend_from_slice(b"event: message\ndata: ");
    out.extend_from_slice(json);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use discovery_actors::catalog::ServerTools;
    use discovery_actors::mcp::Tool;
    use futures_util::StreamExt;
    use serde_json::json;

    fn part(server: &str, tools: &[&str]) -> Arc<ServerTools> {
        let tools: Vec<Tool> = tools
            .iter()
            .map(|n| Tool {
                name: (*n).to_owned(),
                raw: serde_json::value::to_raw_value(
                    &json!({"name": n, "inputSchema": {"type": "object"}}),
                )
                .unwrap()
                .into(),
            })
            .collect();
        Arc::new(ServerTools::build(server, "__", false, &tools))
    }

    async fn next_frame(s: &mut ListenerStream) -> Option<Bytes> {
        tokio::time::timeout(Duration::from_millis(200), s.next())
            .await
            .ok()
            .flatten()
            .map(|r| r.unwrap())
    }

    #[actix_rt::test]
    async fn listeners_hear_only_changes_to_what_they_see_and_slow_ones_are_dropped() {
        let metrics = Arc::new(Metrics::new().unwrap());
        let hub = Arc::new(Hub::new(metrics.clone()));
        let listings = Listings::default();
        let config = Arc::new(Config::embedded_defaults());
        let a = part("a", &["x"]);
        let v1 = Catalog::assemble(1, vec![a.clone(), part("b", &["y"])]);
        let seen =
            |scope: &Scope, c: &Catalog| listings.get(c, scope, &config).unwrap().fingerprint;
        let scope_a = Scope::Server("a".into());
        let mut all = hub.listen(
            Scope::All,
            seen(&Scope::All, &v1),
            Some(Bytes::from_static(b"ack")),
            Bytes::from_static(b"all"),
            None,
        );
        let mut only_a = hub.listen(
            scope_a.clone(),
            seen(&scope_a, &v1),
            None,
            Bytes::from_static(b"a"),
            None,
        );
        let slow = hub.listen(
            Scope::All,
            seen(&Scope::All, &v1),
            None,
            Bytes::from_static(b"slow"),
            None,
        );
        assert_eq!(hub.len(), 3);
        assert_eq!(next_frame(&mut all).await.as_deref(), Some(&b"ack"[..]));
        // b changes: `/mcp` listeners hear it, `/mcp/a` does not.
        let v2 = Catalog::assemble(2, vec![a.clone(), part("b", &["y", "z"])]);
        hub.fan_out(&v2, &config, &listings);
        assert_eq!(next_frame(&mut all).await.as_deref(), Some(&b"all"[..]));
        assert_eq!(next_frame(&mut only_a).await, None);
        // The same content again (a new version, nothing new): silence.
        let v3 = Catalog::assemble(3, vec![a.clone(), part("b", &["y", "z"])]);
        hub.fan_out(&v3, &config, &listings);
        assert_eq!(next_frame(&mut all).await, None);
        // `slow` never reads: after LISTENER_QUEUE changes it is dropped.
        for i in 0..=LISTENER_QUEUE {
            let names: Vec<String> = (0..=i).map(|n| format!("t{n}")).collect();
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            let c = Catalog::assemble(10 + i as u64, vec![a.clone(), part("b", &refs)]);
            hub.fan_out(&c, &config, &listings);
            assert!(
                next_frame(&mut all).await.is_some(),
                "a reading listener hears every change"
            );
        }
        assert_eq!(hub.len(), 2, "the slow listener is gone");
        assert!(metrics
            .render()
            .unwrap()
            .contains("mcp_discovery_mcp_listeners_dropped_total 1"));
        drop(slow);
        drop(only_a);
        assert_eq!(hub.len(), 1);
        assert!(metrics
            .render()
            .unwrap()
            .contains("mcp_discovery_mcp_listeners 1"));
    }
}
