//! The PushStream: a child of an Upstream that holds the push stream of its
//! session open, and tells its parent what it hears (`list_changed`) and how
//! it is doing (a [`PushStreamState`]). One actor, two stream kinds (ADR
//! 0015): the optional GET SSE stream of a 2025 Streamable HTTP session, or
//! the `subscriptions/listen` request of a 2026-07-28 server. Backoff, the
//! idle watchdog, state reporting and epochs are the same for both.
//!
//! Its failure is a message, never a cancellation: nothing the stream does
//! can touch a discovery in flight or the server's discovery state. GET 405
//! (listen: 405, 404, -32601) means the server has no push stream
//! (`unsupported`, the actor stops; polling covers). Any other failure
//! (status, reset, malformed event, oversized event, silence longer than
//! `push_idle_timeout`, a listen not acknowledged within `request_timeout`)
//! is `failed`, then a reconnect with backoff (at least the server's
//! `retry`, at most `backoff.max`). The GET stream resumes with
//! `Last-Event-ID`, and its end is a failure too. A listen has no event
//! ids: its graceful end (the `complete` result, or a clean close) reopens
//! it at once, and once the new one is acknowledged the parent refetches
//! (delivery is best-effort: a change may have been missed).

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix::WeakRecipient;
use discovery_config::BackoffSettings;
use futures_util::stream;
use rand::Rng;
use tracing::Instrument;

use super::state::backoff_delay;
use super::{ChildExited, ChildKind};
use crate::mcp::jsonrpc::{Incoming, METHOD_NOT_FOUND};
use crate::mcp::{McpError, PushEvents, PushOpened, PushStop, Session};
use crate::status::PushStreamState;

/// A stream that stayed open this long is healthy again: the next failure
/// starts the backoff from `initial`.
const STABLE_AFTER: Duration = Duration::from_secs(30);

/// A listen that ends gracefully sooner than this after it opened, twice in
/// a row, is reopened with backoff instead of at once: a server that
/// completes every subscription at once must not be hammered.
const QUICK_END: Duration = Duration::from_secs(1);

/// The first frame of a listen stream.
const ACKNOWLEDGED: &str = "notifications/subscriptions/acknowledged";

/// Sent by the PushStream to its Upstream. `epoch` tells streams of an
/// older session (already stopped, messages still queued) from the current.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct PushEvent {
    pub epoch: u64,
    pub kind: PushEventKind,
}

#[derive(Debug)]
pub enum PushEventKind {
    /// The stream's state changed; `error` is the last failure, if any.
    Status {
        state: PushStreamState,
        error: Option<String>,
        /// Set when this is a reconnection after a failure (for metrics).
        reconnecting: bool,
    },
    /// `notifications/{tools,prompts,resources}/list_changed`.
    ListChanged { method: String },
    /// The server no longer knows the session (404 on GET): the Upstream
    /// should rediscover, which re-initializes.
    SessionGone,
    /// A listen was reopened after a graceful end: a change may have been
    /// missed meanwhile, the Upstream should refetch.
    Resync,
}

/// Sent by the Upstream to stop its PushStream (`stopping`, new session).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct StopPushStream;

/// Everything a PushStream needs from its parent.
pub struct PushStreamInit {
    pub session: Session,
    pub epoch: u64,
    pub backoff: BackoffSettings,
    pub idle_timeout: Duration,
    /// How long a listen may take to be acknowledged (`request_timeout`).
    pub ack_timeout: Duration,
    pub parent: WeakRecipient<PushEvent>,
    pub exited: WeakRecipient<ChildExited>,
    pub span: tracing::Span,
}

type Item = Result<Vec<Incoming>, PushStop>;

/// Holds one session's GET push stream open.
pub struct PushStream {
    init: PushStreamInit,
    last_event_id: Option<String>,
    retry: Option<Duration>,
    failures: u32,
    /// The reading of the current stream, and its watchdog state.
    reading: Option<SpawnHandle>,
    received: Rc<Cell<u64>>,
    last_received: u64,
    last_progress: Instant,
    connected_at: Option<Instant>,
    stop_requested: bool,
    /// The current stream is a listen (not the GET stream).
    listen: bool,
    /// The idle watchdog applies to the current stream (not a stdio
    /// listen, whose child the transport watches).
    watched: bool,
    /// The current stream is a listen that has not been acknowledged yet.
    awaiting_ack: bool,
    /// Counts opened streams, so a late ack timer knows its own.
    opened_count: u64,
    /// Refetch once the reopened listen is acknowledged.
    resync_on_ack: bool,
    /// Graceful listen ends in a row that came soon after opening.
    quick_ends: u32,
}

impl PushStream {
    pub fn new(init: PushStreamInit) -> Self {
        Self {
            init,
            last_event_id: None,
            retry: None,
            failures: 0,
            reading: None,
            received: Rc::new(Cell::new(0)),
            last_received: 0,
            last_progress: Instant::now(),
            connected_at: None,
            stop_requested: false,
            listen: false,
            watched: true,
            awaiting_ack: false,
            opened_count: 0,
            resync_on_ack: false,
            quick_ends: 0,
        }
    }

    fn tell(&self, kind: PushEventKind) {
        if let Some(parent) = self.init.parent.upgrade() {
            parent.do_send(PushEvent {
                epoch: self.init.epoch,
                kind,
            });
        }
    }

    fn status(&self, state: PushStreamState, error: Option<String>) {
        self.tell(PushEventKind::Status {
            state,
            error,
            reconnecting: self.failures > 0 && state == PushStreamState::Connecting,
        });
    }

    fn connect(&mut self, ctx: &mut Context<Self>) {
        self.status(PushStreamState::Connecting, None);
        let session = self.init.session.clone();
        let last_event_id = self.last_event_id.clone();
        let open = async move { session.open_push_stream(last_event_id.as_deref()).await }
            .instrument(self.init.span.clone());
        ctx.spawn(open.into_actor(self).map(|opened, act, ctx| match opened {
            None => {
                // Not a Streamable HTTP session: nothing to hold open.
                act.stop_requested = true;
                ctx.stop();
            }
            Some(Ok(PushOpened::Unsupported)) => {
                let why = match act.init.session.era() {
                    crate::mcp::era::EraKind::Modern => "subscriptions/listen: 405, 404 or -32601",
                    crate::mcp::era::EraKind::Legacy => "GET 405",
                };
                act.unsupported(why, ctx)
            }
            Some(Ok(PushOpened::Stream(events))) => act.opened(events, ctx),
            Some(Err(error)) => {
                if matches!(error, McpError::HttpStatus { status: 404, .. }) {
                    act.tell(PushEventKind::SessionGone);
                }
                act.failed(crate::error_chain(&error), ctx);
            }
        }));
    }

    fn opened(&mut self, events: Box<PushEvents>, ctx: &mut Context<Self>) {
        self.received = events.received();
        self.last_received = self.received.get();
        self.last_progress = Instant::now();
        self.connected_at = Some(Instant::now());
        self.opened_count += 1;
        self.listen = events.is_listen();
        self.watched = events.watched();
        if self.listen {
            // `connecting` until the server acknowledges the subscription.
            self.awaiting_ack = true;
            let opened = self.opened_count;
            ctx.run_later(self.init.ack_timeout, move |act, ctx| {
                if act.awaiting_ack && act.opened_count == opened && act.reading.is_some() {
                    act.failed(
                        format!(
                            "subscriptions/listen was not acknowledged within {} (discovery.request_timeout)",
                            humantime::format_duration(act.init.ack_timeout)
                        ),
                        ctx,
                    );
                }
            });
        } else {
            let _g = self.init.span.enter();
            tracing::debug!(
                resumed_from = self.last_event_id.as_deref().unwrap_or(""),
                "Push stream connected."
            );
            drop(_g);
            self.status(PushStreamState::Connected, None);
        }
        // Event by event; the stream ends after its first error.
        let items = stream::unfold(Some(events), |state| async move {
            let mut events = state?;
            let item = events.next_messages().await;
            let id = events.last_event_id().to_owned();
            let retry = events.retry();
            let next = item.is_ok().then_some(events);
            Some(((item, id, retry), next))
        });
        self.reading = Some(ctx.add_stream(items));
    }

    /// Stops reading the current stream.
    fn drop_stream(&mut self, ctx: &mut Context<Self>) {
        if let Some(handle) = self.reading.take() {
            ctx.cancel_future(handle);
        }
        self.awaiting_ack = false;
    }

    /// The server has no push stream: report it and stop.
    fn unsupported(&mut self, reason: &str, ctx: &mut Context<Self>) {
        self.drop_stream(ctx);
        {
            let _g = self.init.span.enter();
            tracing::info!(reason = %reason, "Server has no push stream; polling covers.");
        }
        self.status(PushStreamState::Unsupported, None);
        self.stop_requested = true;
        ctx.stop();
    }

    /// A listen ended gracefully: reopen at once (and refetch once the new
    /// one is acknowledged), unless it keeps ending right after it opens.
    fn ended_gracefully(&mut self, reason: String, ctx: &mut Context<Self>) {
        let quick = self.connected_at.is_some_and(|at| at.elapsed() < QUICK_END);
        if quick && self.quick_ends >= 1 {
            return self.failed(format!("{reason}, again right after it opened"), ctx);
        }
        self.quick_ends = if quick { self.quick_ends + 1 } else { 0 };
        self.drop_stream(ctx);
        self.connected_at = None;
        {
            let _g = self.init.span.enter();
            tracing::debug!(reason = %reason, "Listen stream ended; reopening it.");
        }
        self.resync_on_ack = true;
        self.connect(ctx);
    }

    /// Records a failure and schedules the reconnection.
    fn failed(&mut self, reason: String, ctx: &mut Context<Self>) {
        self.drop_stream(ctx);
        if self
            .connected_at
            .take()
            .is_some_and(|at| at.elapsed() >= STABLE_AFTER)
        {
            self.failures = 0;
        }
        self.failures = self.failures.saturating_add(1);
        let jitter = rand::rng().random_range(0.0..=1.0);
        let delay = reconnect_delay(&self.init.backoff, self.failures, jitter, self.retry);
        {
            let _g = self.init.span.enter();
            tracing::info!(
                error = %reason,
                retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                "Push stream failed; discovery is not affected."
            );
        }
        self.status(PushStreamState::Failed, Some(reason));
        ctx.run_later(delay, |act, ctx| act.connect(ctx));
    }

    fn watch_idle(&mut self, ctx: &mut Context<Self>) {
        let idle = self.init.idle_timeout;
        let period = (idle / 4).clamp(Duration::from_millis(10), Duration::from_secs(5));
        ctx.run_interval(period, move |act, ctx| {
            if act.reading.is_none() || !act.watched {
                return;
            }
            let now = act.received.get();
            if now != act.last_received {
                act.last_received = now;
                act.last_progress = Instant::now();
            } else if act.last_progress.elapsed() >= idle {
                act.failed(
                    format!(
                        "idle: no bytes for {} (discovery.push_idle_timeout)",
                        humantime::format_duration(idle)
                    ),
                    ctx,
                );
            }
        });
    }

    fn on_message(&mut self, message: Incoming, ctx: &mut Context<Self>) {
        match message {
            Incoming::Notification { method, .. } if method == ACKNOWLEDGED => {
                if !std::mem::take(&mut self.awaiting_ack) {
                    return;
                }
                {
                    let _g = self.init.span.enter();
                    tracing::debug!("Listen stream acknowledged.");
                }
                self.status(PushStreamState::Connected, None);
                if std::mem::take(&mut self.resync_on_ack) {
                    self.tell(PushEventKind::Resync);
                }
            }
            Incoming::Notification { method, .. } if method.ends_with("/list_changed") => {
                self.tell(PushEventKind::ListChanged { method });
            }
            Incoming::Notification { method, .. } => {
                let _g = self.init.span.enter();
                tracing::debug!(method = %method, "Ignored a notification on the push stream.");
            }
            Incoming::Request { id, method, params } => {
                let session = self.init.session.clone();
                let answer =
                    async move { session.answer_server_request(&id, &method, params).await }
                        .instrument(self.init.span.clone());
                ctx.spawn(answer.into_actor(self));
            }
            Incoming::Response { .. } => {
                let _g = self.init.span.enter();
                tracing::debug!("Ignored a response on the push stream.");
            }
        }
    }
}

/// The backoff delay, or the server's `retry` when longer, but never more
/// than `backoff.max`: `retry` is the server's advice, and a huge one
/// (`retry: 999999999999`) must not park the stream for years.
fn reconnect_delay(
    backoff: &BackoffSettings,
    failures: u32,
    jitter: f64,
    retry: Option<Duration>,
) -> Duration {
    backoff_delay(backoff, failures, jitter).max(retry.unwrap_or_default().min(backoff.max))
}

impl Actor for PushStream {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.watch_idle(ctx);
        self.connect(ctx);
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        if !self.stop_requested {
            if let Some(parent) = self.init.exited.upgrade() {
                parent.do_send(ChildExited {
                    kind: ChildKind::PushStream,
                    reason: "push stream actor stopped unexpectedly".into(),
                });
            }
        }
    }
}

impl StreamHandler<(Item, String, Option<Duration>)> for PushStream {
    fn handle(
        &mut self,
        (item, last_event_id, retry): (Item, String, Option<Duration>),
        ctx: &mut Self::Context,
    ) {
        if !last_event_id.is_empty() {
            self.last_event_id = Some(last_event_id);
        }
        if retry.is_some() {
            self.retry = retry;
        }
        let listen = self.listen;
        match item {
            Ok(messages) => {
                for message in messages {
                    self.on_message(message, ctx);
                }
            }
            Err(PushStop::Rejected(McpError::JsonRpc {
                code: METHOD_NOT_FOUND,
                ..
            })) => self.unsupported("subscriptions/listen: method not found", ctx),
            Err(stop @ (PushStop::End | PushStop::Complete)) if listen => {
                self.ended_gracefully(stop.to_string(), ctx)
            }
            Err(stop) => self.failed(stop.to_string(), ctx),
        }
    }

    // Ends after an error (handled above) or when cancelled; either way
    // the actor lives on.
    fn finished(&mut self, _ctx: &mut Self::Context) {}
}

impl Handler<StopPushStream> for PushStream {
    type Result = ();

    fn handle(&mut self, _: StopPushStream, ctx: &mut Self::Context) {
        self.stop_requested = true;
        ctx.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_servers_retry_is_honoured_up_to_backoff_max() {
        let b = BackoffSettings {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(2),
        };
        assert_eq!(
            reconnect_delay(&b, 1, 1.0, None),
            Duration::from_millis(100)
        );
        let retry = Some(Duration::from_millis(1500));
        assert_eq!(
            reconnect_delay(&b, 1, 1.0, retry),
            Duration::from_millis(1500)
        );
        let huge = Some(Duration::from_millis(999_999_999_999));
        assert_eq!(reconnect_delay(&b, 1, 0.0, huge), Duration::from_secs(2));
        let max = Some(Duration::from_millis(u64::MAX));
        assert_eq!(
            reconnect_delay(&b, u32::MAX, 1.0, max),
            Duration::from_secs(2)
        );
    }
}
