//! Change notifications between replicas sharing one PostgreSQL database.
//!
//! Every write sends `NOTIFY mcp_discovery_servers` in its own transaction,
//! so the notification goes out exactly when the write commits (and never
//! for a write that rolled back). [`StoreChanges`] is the receiving end:
//! one background task holds a `LISTEN` connection of its own and forwards
//! other replicas' notifications; a second task sends a
//! [`StoreChange::Resync`] every resync interval as a safety net (a missed
//! notification, a listener reconnect, a write made by hand in SQL). The
//! consumer answers every item the same way: read the whole list again with
//! [`super::Store::list`] and apply the difference. Both tasks end when the
//! [`StoreChanges`] is dropped.
//!
//! With SQLite there is one process and nobody else writes: the
//! [`StoreChanges`] never yields.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::Stream;
use serde::{Deserialize, Serialize};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use tokio::sync::mpsc;
use tracing::Instrument;

/// PostgreSQL channel of the change notifications.
pub const NOTIFY_CHANNEL: &str = "mcp_discovery_servers";

/// Queue between the listener task and the consumer. When it is full a
/// notification is dropped: harmless, because the consumer still has queued
/// items to handle, each of which re-reads the whole list *after* the
/// dropped write committed.
const QUEUE: usize = 64;
/// Delay before the first attempt to re-establish a failed listener; doubles
/// up to [`RECONNECT_MAX`].
const RECONNECT_INITIAL: Duration = Duration::from_millis(500);
const RECONNECT_MAX: Duration = Duration::from_secs(30);

/// What a write did to a row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeOp {
    Insert,
    Replace,
    Delete,
}

/// Why a full resync is due.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResyncReason {
    /// The periodic safety net (every `StoreOptions::resync_interval`).
    Periodic,
    /// The listener lost its connection and listens again: notifications
    /// sent in between are lost.
    Reconnected,
    /// A notification on the channel that this version cannot read.
    Unreadable,
}

/// One item of [`StoreChanges`]. Whatever it is, the consumer reads the
/// whole list again ([`super::Store::list`]); the fields are for logs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreChange {
    /// Another replica committed a write to this server's row.
    Server {
        name: String,
        op: ChangeOp,
        /// The revision the write took (a delete takes one too; None
        /// only from an older version's notification).
        revision: Option<i64>,
    },
    /// Re-read everything.
    Resync(ResyncReason),
}

/// The payload of a notification (JSON, well under PostgreSQL's 8000 bytes:
/// names are short).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Notice {
    /// The writing [`super::Store`] (random per instance): a replica skips
    /// its own writes.
    pub origin: String,
    pub op: ChangeOp,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<i64>,
}

/// Change notifications from other replicas, from
/// [`super::Store::changes`]. A `Stream` (for `ctx.add_stream`) and an
/// async [`StoreChanges::recv`]; dropping it stops the listener.
#[derive(Debug)]
pub struct StoreChanges {
    rx: mpsc::Receiver<StoreChange>,
    /// SQLite: the only sender, kept here so the receiver stays open and
    /// pending forever instead of ending.
    _idle: Option<mpsc::Sender<StoreChange>>,
}

impl StoreChanges {
    /// A receiver that never yields (a single-process store).
    pub(crate) fn never() -> Self {
        let (tx, rx) = mpsc::channel(1);
        Self {
            rx,
            _idle: Some(tx),
        }
    }

    /// The next change; None only once the background tasks are gone
    /// (the runtime they ran on stopped).
    pub async fn recv(&mut self) -> Option<StoreChange> {
        self.rx.recv().await
    }
}

impl Stream for StoreChanges {
    type Item = StoreChange;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<StoreChange>> {
        self.rx.poll_recv(cx)
    }
}

/// Starts listening: returns once `LISTEN` is in effect, so every write
/// committed by another replica after this returns is reported.
pub(crate) async fn listen(
    options: PgConnectOptions,
    origin: String,
    resync_interval: Duration,
) -> Result<StoreChanges, sqlx::Error> {
    let listener = connect_listener(&options).await?;
    let (tx, rx) = mpsc::channel(QUEUE);
    let span = tracing::info_span!("store_listener", channel = NOTIFY_CHANNEL);
    tokio::spawn(forward(listener, options, origin, tx.clone()).instrument(span.clone()));
    tokio::spawn(resync_ticks(tx, resync_interval).instrument(span));
    Ok(StoreChanges { rx, _idle: None })
}

/// A listener on a pool of one connection of its own (the listener keeps
/// its connection for good; it must not take one from the write pool).
async fn connect_listener(options: &PgConnectOptions) -> Result<PgListener, sqlx::Error> {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .idle_timeout(None)
        .max_lifetime(None)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options.clone())
        .await?;
    let mut listener = PgListener::connect_with(&pool).await?;
    listener.listen(NOTIFY_CHANNEL).await?;
    Ok(listener)
}

/// Forwards notifications until the consumer is gone; re-establishes the
/// listener after an error, with backoff, and asks for a resync then.
async fn forward(
    mut listener: PgListener,
    options: PgConnectOptions,
    origin: String,
    tx: mpsc::Sender<StoreChange>,
) {
    loop {
        let received = tokio::select! {
            () = tx.closed() => return,
            received = listener.try_recv() => received,
        };
        let change = match received {
            Ok(Some(notification)) => {
                match serde_json::from_str::<Notice>(notification.payload()) {
                    Ok(notice) if notice.origin == origin => continue,
                    Ok(notice) => StoreChange::Server {
                        name: notice.name,
                        op: notice.op,
                        revision: notice.revision,
                    },
                    Err(e) => {
                        tracing::debug!(error = %e, "Read an unknown store notification.");
                        StoreChange::Resync(ResyncReason::Unreadable)
                    }
                }
            }
            // Lost and already re-established (eager reconnect).
            Ok(None) => {
                tracing::info!("The store listener reconnected; resyncing.");
                StoreChange::Resync(ResyncReason::Reconnected)
            }
            Err(e) => {
                tracing::warn!(error = %e, "The store listener failed; reconnecting.");
                let Some(fresh) = reconnect(&options, &tx).await else {
                    return;
                };
                listener = fresh;
                StoreChange::Resync(ResyncReason::Reconnected)
            }
        };
        if send(&tx, change).is_err() {
            return;
        }
    }
}

/// A new listener, retried with capped backoff; None once the consumer is
/// gone.
async fn reconnect(
    options: &PgConnectOptions,
    tx: &mpsc::Sender<StoreChange>,
) -> Option<PgListener> {
    let mut delay = RECONNECT_INITIAL;
    loop {
        tokio::select! {
            () = tx.closed() => return None,
            () = tokio::time::sleep(delay) => {}
        }
        match connect_listener(options).await {
            Ok(listener) => {
                tracing::info!("The store listener listens again.");
                return Some(listener);
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?delay, "The store listener could not reconnect.");
                delay = (delay * 2).min(RECONNECT_MAX);
            }
        }
    }
}

/// The periodic safety net.
async fn resync_ticks(tx: mpsc::Sender<StoreChange>, every: Duration) {
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = tx.closed() => return,
            _ = ticks.tick() => {}
        }
        if send(&tx, StoreChange::Resync(ResyncReason::Periodic)).is_err() {
            return;
        }
    }
}

/// Queues `change`; a full queue drops it (see [`QUEUE`]). Err: the
/// consumer is gone.
fn send(tx: &mpsc::Sender<StoreChange>, change: StoreChange) -> Result<(), ()> {
    match tx.try_send(change) {
        Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => Ok(()),
        Err(mpsc::error::TrySendError::Closed(_)) => Err(()),
    }
}
