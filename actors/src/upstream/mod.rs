//! The Upstream actor: one per server. It owns the MCP session and the
//! discovery state machine ([`state::Discovery`]), and starts child actors
//! (the [`poller::Poller`] now; push stream and token refresher in their own
//! issues) that report to it by message. It never awaits a child, and no
//! discovery work is tied to anything but its own lifetime: every network
//! call runs in a `ctx.spawn`ed future with its own timeout. A relayed
//! `tools/call` (`call`, ADR 0018) is a task of its own beside them.

mod call;
pub mod poller;
pub mod push_stream;
pub mod state;
pub mod token;

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use chrono::Utc;
use discovery_config::{AuthConfig, Endpoint, ServerSpec, TransportKind};
use rand::Rng;
use tracing::Instrument;

use crate::attempts::{AttemptGate, AttemptPermit};
use crate::catalog::ServerTools;
use crate::events::{DiscoveryEvents, RefreshOutcome};
use crate::mcp::{
    self, BearerSlot, ClientOptions, Inventory, McpError, Notification, Session, Target, Tool,
};
use crate::registry::{Registry, Report};
use crate::status::{DiscoveryState, PushStreamState, ServerView};
use poller::{Poll, Poller, StopPoller};
use push_stream::{PushEvent, PushEventKind, PushStream, PushStreamInit, StopPushStream};
use state::{Discovery, Trigger};
use token::{GetToken, StopTokenRefresher, TokenEvent, TokenRefresher, TokenRefresherInit};

/// Why a discovery round failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error(transparent)]
    Mcp(#[from] McpError),
    /// No OAuth2 token could be had (the refresher's error, as a sentence;
    /// it may quote the identity provider, so it is clipped).
    #[error("{}", crate::mcp::error::Clip(.0, crate::mcp::error::UPSTREAM_TEXT_MAX))]
    Token(String),
    /// A second 401, right after a fresh token.
    #[error("upstream rejected a freshly issued token (401)")]
    TokenRejected,
}

/// One connect (if needed) and listing, the session handed back either way.
type Attempt = Result<(Session, Inventory), (Option<Session>, McpError)>;

async fn discover_once(
    session: Option<Session>,
    target: &Target,
    options: ClientOptions,
    known: Option<mcp::era::EraKind>,
) -> Attempt {
    let session = match session {
        Some(session) => session,
        None => mcp::connect_known(target, options, known)
            .await
            .map_err(|e| (None, e))?,
    };
    // Prompts and resources come after, apart (`Upstream::list_extras`):
    // they never hold the tools back.
    match session.list_tools_hinted().await {
        Ok((tools, cache)) => Ok((
            session,
            Inventory {
                tools,
                cache,
                ..Inventory::default()
            },
        )),
        Err(e) => Err((Some(session), e)),
    }
}

fn is_401(error: &McpError) -> bool {
    error.http_status() == Some(401)
}

async fn fetch_token(tokens: &Addr<TokenRefresher>, fresh: bool) -> Result<String, UpstreamError> {
    match tokens.send(GetToken { fresh }).await {
        Ok(Ok(token)) => Ok(token),
        Ok(Err(error)) => Err(UpstreamError::Token(error)),
        Err(_) => Err(UpstreamError::Token(
            "the token refresher is not running".into(),
        )),
    }
}

/// How long closing a session may take when the actor stops.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Restart delay of a child that exited unexpectedly (capped backoff).
const CHILD_RESTART_INITIAL: Duration = Duration::from_millis(100);
const CHILD_RESTART_MAX: Duration = Duration::from_secs(30);
/// Most characters of a `last_error` (or push / token error) kept: each
/// upstream-provided piece is already clipped where errors are rendered
/// (`mcp::error`), this bounds the sentence as a whole.
const ERROR_TEXT_MAX: usize = 2048;

/// Everything an Upstream needs from its creator.
pub struct UpstreamInit {
    pub spec: Arc<ServerSpec>,
    pub generation: u64,
    pub separator: String,
    pub registry: Addr<Registry>,
    pub events: Arc<dyn DiscoveryEvents>,
    /// Told when this upstream is gone, however it went (see [`ExitNotice`]).
    pub exited: actix::WeakRecipient<UpstreamExited>,
    /// The engine-wide bound on attempts in flight.
    pub gate: AttemptGate,
}

/// Sent to the supervisor when an upstream actor is gone: from the drop
/// of its state, so also after a panic in a handler (the actor's task is
/// dropped without `stopped()`) or when its arbiter dies. The supervisor
/// ignores it for an upstream it stopped itself.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct UpstreamExited {
    pub name: discovery_config::ServerName,
    pub generation: u64,
}

/// Sends [`UpstreamExited`] when dropped (the last field of [`Upstream`]).
struct ExitNotice {
    to: actix::WeakRecipient<UpstreamExited>,
    name: discovery_config::ServerName,
    generation: u64,
}

impl Drop for ExitNotice {
    fn drop(&mut self) {
        if let Some(to) = self.to.upgrade() {
            to.do_send(UpstreamExited {
                name: self.name.clone(),
                generation: self.generation,
            });
        }
    }
}

/// One upstream server's discovery.
pub struct Upstream {
    spec: Arc<ServerSpec>,
    generation: u64,
    separator: String,
    registry: Addr<Registry>,
    events: Arc<dyn DiscoveryEvents>,
    span: tracing::Span,
    discovery: Discovery,
    session: Option<Session>,
    /// The task forwarding the current session's transport notifications.
    notifications: Option<SpawnHandle>,
    in_flight: Option<SpawnHandle>,
    /// A trigger that arrived while an attempt was in flight: run once more
    /// afterwards, so a `list_changed` is never lost (and a burst of them
    /// costs at most one extra round).
    pending: Option<Trigger>,
    retry_timer: Option<SpawnHandle>,
    stale_timer: Option<SpawnHandle>,
    /// The refresh a positive `ttlMs` brought forward (see `arm_ttl_refresh`).
    ttl_timer: Option<SpawnHandle>,
    /// When `ttl_timer` fires.
    ttl_due: Option<chrono::DateTime<Utc>>,
    /// The cache hints of the last successful listing (tools, then prompts
    /// and resources combined in), and when the tools were received.
    cache: Option<(mcp::cache::CacheHint, Instant, chrono::DateTime<Utc>)>,
    /// Catalog part of the last successful listing (filtered tools),
    /// flagged stale while degraded.
    part: Arc<ServerTools>,
    info: Option<mcp::ServerInfo>,
    /// The era the last session spoke: a legacy verdict lets the next
    /// connect skip the `server/discover` probe. Forgotten when an attempt
    /// fails, so a server that changed is probed again.
    era: Option<mcp::era::EraKind>,
    poller: Option<Addr<Poller>>,
    /// The push stream child of the current session (Streamable HTTP).
    push: Option<Addr<PushStream>>,
    /// Tells messages of the current push stream from older ones.
    push_epoch: u64,
    /// The session id the push stream was opened for.
    push_session: Option<String>,
    push_state: PushStreamState,
    push_error: Option<String>,
    /// OAuth2: the token child, and the slot every request reads the
    /// current access token from.
    tokens: Option<Addr<TokenRefresher>>,
    bearer: Option<BearerSlot>,
    token_expires_at: Option<chrono::DateTime<Utc>>,
    last_token_error: Option<String>,
    child_restarts: u32,
    stopping: bool,
    /// The prompts/resources listing of the current session, after tools.
    extras: Option<SpawnHandle>,
    listing_warning: Option<String>,
    /// What the last listing had that the catalog leaves out or flags.
    tool_report: Arc<crate::tools::ToolReport>,
    /// Set when this actor stops: every call in flight (its own task, see
    /// `call`) is cancelled upstream and answers `Stopping`.
    calls_stop: tokio::sync::watch::Sender<bool>,
    gate: AttemptGate,
    _exit_notice: ExitNotice,
}

impl Upstream {
    pub fn new(init: UpstreamInit) -> Self {
        let span = tracing::info_span!(
            "upstream",
            server = %init.spec.name,
            generation = init.generation
        );
        let part = Arc::new(ServerTools::build(init.spec.name.as_str(), "", false, &[]));
        let spec_ref = init.spec.clone();
        Self {
            spec: init.spec,
            generation: init.generation,
            separator: init.separator,
            registry: init.registry,
            events: init.events,
            span,
            discovery: Discovery::new(),
            session: None,
            notifications: None,
            in_flight: None,
            pending: None,
            retry_timer: None,
            stale_timer: None,
            ttl_timer: None,
            ttl_due: None,
            cache: None,
            part,
            info: None,
            era: None,
            poller: None,
            push: None,
            push_epoch: 0,
            push_session: None,
            push_state: initial_push_state(&spec_ref),
            push_error: None,
            tokens: None,
            bearer: None,
            token_expires_at: None,
            last_token_error: None,
            child_restarts: 0,
            stopping: false,
            extras: None,
            listing_warning: None,
            tool_report: Arc::default(),
            calls_stop: tokio::sync::watch::Sender::new(false),
            gate: init.gate,
            _exit_notice: ExitNotice {
                to: init.exited,
                name: spec_ref.name.clone(),
                generation: init.generation,
            },
        }
    }

    /// The view `/v1/servers` shows; also what the supervisor registers.
    pub fn view(&self) -> ServerView {
        initial_view(&self.spec, self.generation).with(|v| {
            v.state = self.discovery.state();
            v.last_error = self.discovery.last_error.clone();
            v.last_success_at = self.discovery.last_success_at;
            v.last_attempt_at = self.discovery.last_attempt_at;
            v.consecutive_failures = self.discovery.consecutive_failures;
            v.next_retry_at = self.discovery.next_retry_at;
            v.next_refresh_at = self.next_refresh_at();
            v.first_attempt_done = self.discovery.first_attempt_done;
            v.tool_count = self.part.len();
            v.stale = self.part.stale;
            v.push_stream = self.push_state;
            v.push_stream_error = self.push_error.clone();
            v.auth.token_expires_at = self.token_expires_at;
            v.auth.last_token_error = self.last_token_error.clone();
            if let Some(info) = &self.info {
                v.negotiated_transport = Some(info.transport);
                v.protocol_version = Some(info.protocol_version.clone());
                v.server_info = Some(info.server_info.clone());
            }
            v.listing_warning = self.listing_warning.clone();
            v.tool_report = self.tool_report.clone();
            v.cache = self
                .cache
                .map(|(hint, _, at)| crate::status::CacheView::new(hint, at));
        })
    }

    /// The earliest scheduled re-listing: the poller's next tick can come
    /// `poll_interval` less its jitter after the last attempt, the `ttlMs`
    /// timer when it is armed, a degraded server's retry.
    fn next_refresh_at(&self) -> Option<chrono::DateTime<Utc>> {
        match self.discovery.state() {
            DiscoveryState::Healthy => {
                let interval = self.spec.discovery.poll_interval;
                let earliest = interval.saturating_sub(state::fraction(interval, poller::JITTER));
                let poll = self.discovery.last_attempt_at.map(|at| {
                    at + chrono::Duration::from_std(earliest).unwrap_or(chrono::Duration::MAX)
                });
                match (poll, self.ttl_due) {
                    (Some(p), Some(t)) => Some(p.min(t)),
                    (p, t) => p.or(t),
                }
            }
            DiscoveryState::Degraded => self.discovery.next_retry_at,
            DiscoveryState::Unknown | DiscoveryState::Connecting => None,
        }
    }

    fn report(&self, part_changed: bool) {
        self.registry.do_send(Report {
            view: self.view(),
            part: part_changed.then(|| self.part.clone()),
        });
    }

    /// Replaces the catalog part.
    fn set_part(&mut self, part: ServerTools) {
        self.events.tool_count(self.spec.name.as_str(), part.len());
        self.part = Arc::new(part);
    }

    fn set_state_event(&self, before: DiscoveryState) {
        let now = self.discovery.state();
        if now != before {
            self.events.state_changed(self.spec.name.as_str(), now);
        }
    }

    /// Starts a discovery round if the state machine accepts `trigger`; if
    /// one is in flight, remembers to run again afterwards.
    fn start_attempt(&mut self, trigger: Trigger, ctx: &mut Context<Self>) {
        if self.stopping {
            return;
        }
        if self.in_flight.is_some() {
            if trigger != Trigger::Poll {
                self.pending = Some(trigger);
            } else {
                let _g = self.span.enter();
                tracing::debug!("Skipped a poll: a refresh is in flight.");
            }
            return;
        }
        if !self.discovery.accepts(trigger) {
            return;
        }
        if let Some(timer) = self.retry_timer.take() {
            ctx.cancel_future(timer);
        }
        let before = self.discovery.state();
        self.discovery.begin(Utc::now());
        self.set_state_event(before);
        self.report(false);
        {
            let _g = self.span.enter();
            tracing::debug!(trigger = trigger.as_str(), "Discovery started.");
        }

        // Wait for the engine-wide attempt gate (ADR 0026) before building
        // anything: a waiting attempt holds no socket and a few bytes, and
        // the work below is built from the state current when it may run.
        let gate = self.gate.clone();
        let wait = async move { gate.admit().await }
            .into_actor(self)
            .map(|permit, act, ctx| {
                act.in_flight = None;
                act.run_attempt(permit, ctx);
            });
        self.in_flight = Some(ctx.spawn(wait));
    }

    /// The attempt itself, once admitted by the gate: `permit` is given
    /// back when it ends or after `attempts::HOLD_MAX`.
    fn run_attempt(&mut self, permit: AttemptPermit, ctx: &mut Context<Self>) {
        if self.stopping {
            return;
        }
        let session = self.session.clone();
        let known = self.era;
        let target = target_of(&self.spec);
        let options = options_of(&self.spec, self.bearer.clone());
        let tokens = self.tokens.clone();
        let bearer = self.bearer.clone();
        let started = Instant::now();
        let work = async move {
            let options = options.map_err(|e| (None, e))?;
            let (Some(tokens), Some(bearer)) = (tokens, bearer) else {
                return discover_once(session, &target, options, known)
                    .await
                    .map_err(|(s, e)| (s, e.into()));
            };
            // The token is had before first use; waiting for it is part
            // of `connecting`, bounded only by the refresher's own timeout.
            let token = fetch_token(&tokens, false)
                .await
                .map_err(|e| (session.clone(), e))?;
            bearer.set(Some(token));
            match discover_once(session, &target, options.clone(), known).await {
                // A 401: one fresh token, one retry.
                Err((session, e)) if is_401(&e) => {
                    let token = fetch_token(&tokens, true)
                        .await
                        .map_err(|e| (session.clone(), e))?;
                    bearer.set(Some(token));
                    match discover_once(session, &target, options, known).await {
                        Err((session, e)) if is_401(&e) => {
                            Err((session, UpstreamError::TokenRejected))
                        }
                        other => other.map_err(|(s, e)| (s, e.into())),
                    }
                }
                other => other.map_err(|(s, e)| (s, e.into())),
            }
        }
        .instrument(self.span.clone());
        let work = AttemptGate::run(permit, crate::attempts::HOLD_MAX, work);
        let handle = ctx.spawn(work.into_actor(self).map(move |result, act, ctx| {
            act.in_flight = None;
            act.finish_attempt(result, started.elapsed(), ctx);
            if let Some(next) = act.pending.take() {
                act.start_attempt(next, ctx);
            }
        }));
        self.in_flight = Some(handle);
    }

    fn finish_attempt(
        &mut self,
        result: Result<(Session, Inventory), (Option<Session>, UpstreamError)>,
        took: Duration,
        ctx: &mut Context<Self>,
    ) {
        let before = self.discovery.state();
        match result {
            Ok((session, inventory)) => {
                self.adopt_session(session, ctx);
                let (name, spec) = (self.spec.name.as_str(), &self.spec);
                let checked = crate::tools::check(inventory.tools, name, &self.separator, |n| {
                    spec.tools.allows(n)
                });
                self.span
                    .in_scope(|| checked.report.log_news(&self.tool_report));
                let tools: Vec<Tool> = checked.tools;
                self.tool_report = Arc::new(checked.report);
                let changed = self.part.stale || !self.part.same_tools(&tools);
                if changed {
                    let part =
                        ServerTools::build(self.spec.name.as_str(), &self.separator, false, &tools);
                    self.set_part(part);
                }
                if let Some(timer) = self.stale_timer.take() {
                    ctx.cancel_future(timer);
                }
                self.cache = inventory
                    .cache
                    .map(|hint| (hint, Instant::now(), Utc::now()));
                self.arm_ttl_refresh(ctx);
                self.discovery.succeeded(Utc::now());
                self.events.refresh_finished(
                    self.spec.name.as_str(),
                    RefreshOutcome::Success,
                    took,
                );
                self.set_state_event(before);
                let _g = self.span.enter();
                if before != DiscoveryState::Healthy {
                    tracing::info!(
                        tools = self.part.len(),
                        took_ms = took.as_millis() as u64,
                        "Server is healthy."
                    );
                } else if changed {
                    tracing::info!(tools = self.part.len(), "Tools changed.");
                }
                drop(_g);
                self.report(changed);
                self.list_extras(ctx);
            }
            Err((session, error)) => {
                // The era is probed again on the next connect.
                self.era = None;
                // Backoff is in charge until the next success.
                if let Some(timer) = self.ttl_timer.take() {
                    ctx.cancel_future(timer);
                }
                if let Some(session) = session {
                    self.drop_session(session, ctx);
                } else if let Some(current) = self.session.take() {
                    self.drop_session(current, ctx);
                }
                self.fail(crate::error_chain(&error), ctx);
                self.events.refresh_finished(
                    self.spec.name.as_str(),
                    RefreshOutcome::Failure,
                    took,
                );
            }
        }
    }

    /// Enters `degraded`: keeps the last tools flagged stale (for
    /// `stale_ttl`) and arms the backoff timer.
    fn fail(&mut self, error: String, ctx: &mut Context<Self>) {
        let error = mcp::error::clip(&error, ERROR_TEXT_MAX);
        let before = self.discovery.state();
        let jitter = rand::rng().random_range(0.0..=1.0);
        let delay = self
            .discovery
            .failed(Utc::now(), error, &self.spec.discovery.backoff, jitter);
        self.set_state_event(before);
        {
            let _g = self.span.enter();
            tracing::warn!(
                error = self.discovery.last_error.as_deref().unwrap_or_default(),
                failures = self.discovery.consecutive_failures,
                retry_in_ms = delay.as_millis() as u64,
                "Discovery failed; server is degraded."
            );
        }
        if let Some(timer) = self.retry_timer.take() {
            ctx.cancel_future(timer);
        }
        self.retry_timer = Some(ctx.run_later(delay, |act, ctx| {
            act.retry_timer = None;
            act.start_attempt(Trigger::Retry, ctx);
        }));
        let newly_stale = !self.part.stale && !self.part.is_empty();
        if newly_stale {
            let stale = self.part.with_stale(&self.separator, true);
            self.set_part(stale);
            let ttl = self.spec.discovery.stale_ttl;
            self.stale_timer = Some(ctx.run_later(ttl, |act, _ctx| {
                act.stale_timer = None;
                act.expire_stale();
            }));
        }
        self.report(newly_stale);
    }

    /// Lists prompts and resources of the current session, best effort
    /// and after the tools are published: a failure, a hang (bounded by
    /// `request_timeout` per page) or a listing over a cap only sets
    /// `listing_warning` (logged when it changes); the items themselves are
    /// not kept (the catalog is tools only).
    fn list_extras(&mut self, ctx: &mut Context<Self>) {
        let Some(session) = self.session.clone() else {
            return;
        };
        let info = session.info();
        if !info.has_capability("prompts") && !info.has_capability("resources") {
            if self.listing_warning.take().is_some() {
                self.report(false);
            }
            return;
        }
        if let Some(old) = self.extras.take() {
            ctx.cancel_future(old);
        }
        let work = async move {
            let inventory = session.list_extras().await;
            (inventory.problems, inventory.cache)
        }
        .instrument(self.span.clone());
        self.extras = Some(ctx.spawn(work.into_actor(self).map(|(problems, hint), act, ctx| {
            act.extras = None;
            if let (Some(extra), Some((tools, received, at))) = (hint, act.cache) {
                let combined = tools.combine(extra);
                if combined != tools {
                    act.cache = Some((combined, received, at));
                    act.arm_ttl_refresh(ctx);
                    act.report(false);
                }
            }
            let warning = (!problems.is_empty())
                .then(|| mcp::error::clip(&problems.join("; "), ERROR_TEXT_MAX));
            if warning == act.listing_warning {
                return;
            }
            if let Some(w) = &warning {
                let _g = act.span.enter();
                tracing::warn!(problem = %w, "Prompts or resources could not be listed; the tools are not affected.");
            }
            act.listing_warning = warning;
            act.report(false);
        })));
    }

    /// A positive `ttlMs` brings the next refresh forward to when the last
    /// listing goes stale, minus up to 10% jitter, never sooner than
    /// `min_refresh` and never later than `poll_interval`
    /// (`mcp::cache::refresh_delay`); a ttl of 0 or a 2025 server leaves
    /// the poller alone in charge. The timer is a one-shot replaced on every
    /// success; the poller keeps its own schedule, and a failure hands over
    /// to the backoff (the spec: polling MUST use jitter and backoff).
    fn arm_ttl_refresh(&mut self, ctx: &mut Context<Self>) {
        if let Some(timer) = self.ttl_timer.take() {
            ctx.cancel_future(timer);
        }
        self.ttl_due = None;
        let Some((hint, received, _)) = self.cache else {
            return;
        };
        let d = &self.spec.discovery;
        let u = rand::rng().random_range(0.0..=1.0);
        let Some(delay) = mcp::cache::refresh_delay(hint.ttl(), d.min_refresh, d.poll_interval, u)
        else {
            return;
        };
        let delay = delay.saturating_sub(received.elapsed());
        self.ttl_due = chrono::Duration::from_std(delay)
            .ok()
            .map(|d| Utc::now() + d);
        self.ttl_timer = Some(ctx.run_later(delay, |act, ctx| {
            act.ttl_timer = None;
            act.ttl_due = None;
            {
                let _g = act.span.enter();
                tracing::debug!("Refreshing: the last listing's ttlMs ran out.");
            }
            act.start_attempt(Trigger::Poll, ctx);
        }));
    }

    fn expire_stale(&mut self) {
        if !self.part.stale {
            return;
        }
        {
            let _g = self.span.enter();
            tracing::info!(
                tools = self.part.len(),
                "Removed stale tools after stale_ttl."
            );
        }
        let empty = ServerTools::build(self.spec.name.as_str(), &self.separator, false, &[]);
        self.set_part(empty);
        self.report(true);
    }

    /// Keeps a (possibly new) session; forwards its transport notifications.
    fn adopt_session(&mut self, session: Session, ctx: &mut Context<Self>) {
        let is_new = self.session.as_ref().is_none_or(|s| !s.same_as(&session));
        if is_new {
            if self.session.is_some() {
                // The push child belongs to the old session (a modern one
                // has no session id to tell them apart by).
                self.stop_push();
            }
            self.info = Some(session.info());
            self.era = Some(session.era());
            if let Some(rx) = session.take_notifications() {
                if let Some(old) = self.notifications.take() {
                    ctx.cancel_future(old);
                }
                let stream = tokio_stream::wrappers::UnboundedReceiverStream::new(rx);
                self.notifications = Some(ctx.add_stream(stream));
            }
            self.session = Some(session);
        }
        self.sync_push(ctx);
    }

    fn wants_push(&self) -> bool {
        may_push(&self.spec) || self.wants_stdio_listen()
    }

    /// A 2026-07-28 stdio server: its listen shares the channel.
    fn wants_stdio_listen(&self) -> bool {
        self.spec.push
            && matches!(self.spec.endpoint, Endpoint::Stdio { .. })
            && self.era == Some(mcp::era::EraKind::Modern)
    }

    /// (Re)starts the push stream when the session is new or was
    /// re-initialized (a new session id); leaves a running one alone.
    fn sync_push(&mut self, ctx: &mut Context<Self>) {
        if !self.wants_push() || self.stopping {
            return;
        }
        let Some(session) = self.session.clone() else {
            return;
        };
        let stdio_listen =
            session.info().transport == "stdio" && session.era() == mcp::era::EraKind::Modern;
        if session.info().transport != "streamable-http" && !stdio_listen {
            // `auto` resolved to legacy SSE: the transport is the stream.
            self.set_push_state(PushStreamState::Disabled, None);
            return;
        }
        let sid = session.session_id();
        if self.push.is_some() && self.push_session == sid {
            return;
        }
        self.stop_push();
        self.push_epoch += 1;
        self.push_session = sid;
        let weak = ctx.address().downgrade();
        let child = PushStream::new(PushStreamInit {
            session,
            epoch: self.push_epoch,
            backoff: self.spec.discovery.backoff,
            idle_timeout: self.spec.discovery.push_idle_timeout,
            ack_timeout: self.spec.discovery.request_timeout,
            parent: weak.clone().recipient(),
            exited: weak.recipient(),
            span: self.span.clone(),
        });
        self.push = Some(child.start());
    }

    fn stop_push(&mut self) {
        if let Some(push) = self.push.take() {
            push.do_send(StopPushStream);
        }
        self.push_session = None;
        self.push_epoch += 1;
        if self.wants_push() {
            self.set_push_state(PushStreamState::Connecting, self.push_error.clone());
        }
    }

    fn set_push_state(&mut self, state: PushStreamState, error: Option<String>) {
        let was_connected = self.push_state == PushStreamState::Connected;
        let connected = state == PushStreamState::Connected;
        if was_connected != connected {
            self.events
                .push_stream_connected(self.spec.name.as_str(), connected);
        }
        self.push_state = state;
        self.push_error = error;
    }

    /// Forgets a session and closes it in the background (its own timeout).
    fn drop_session(&mut self, session: Session, ctx: &mut Context<Self>) {
        if let Some(handle) = self.notifications.take() {
            ctx.cancel_future(handle);
        }
        if let Some(handle) = self.extras.take() {
            ctx.cancel_future(handle);
        }
        self.stop_push();
        if self.session.as_ref().is_some_and(|s| s.same_as(&session)) {
            self.session = None;
        }
        actix_rt::spawn(
            async move {
                let _ = actix_rt::time::timeout(CLOSE_TIMEOUT, session.close()).await;
            }
            .instrument(self.span.clone()),
        );
    }

    /// OAuth2 over HTTP: the child that owns the access token.
    fn start_token_refresher(&mut self, ctx: &mut Context<Self>) {
        let (AuthConfig::OAuth2(config), Endpoint::Http { url, .. }) =
            (&self.spec.auth, &self.spec.endpoint)
        else {
            return;
        };
        let weak = ctx.address().downgrade();
        let child = TokenRefresher::new(TokenRefresherInit {
            server_url: url.clone(),
            config: config.clone(),
            backoff: self.spec.discovery.backoff,
            parent: weak.clone().recipient(),
            exited: weak.recipient(),
            span: self.span.clone(),
        });
        self.bearer.get_or_insert_with(BearerSlot::default);
        self.tokens = Some(child.start());
    }

    fn start_poller(&mut self, ctx: &mut Context<Self>) {
        let weak = ctx.address().downgrade();
        let poller = Poller::new(
            self.spec.discovery.poll_interval,
            weak.clone().recipient(),
            weak.recipient(),
        );
        self.poller = Some(poller.start());
    }
}

/// The `/v1/servers` view of a server that has not started yet.
pub fn initial_view(spec: &ServerSpec, generation: u64) -> ServerView {
    ServerView {
        name: spec.name.to_string(),
        source: spec.source.as_str(),
        transport: spec.transport().as_str(),
        negotiated_transport: None,
        endpoint: crate::status::endpoint_display(&spec.endpoint),
        state: DiscoveryState::Unknown,
        last_error: None,
        last_success_at: None,
        last_attempt_at: None,
        consecutive_failures: 0,
        next_retry_at: None,
        next_refresh_at: None,
        push_stream: initial_push_state(spec),
        push_stream_error: None,
        auth: crate::status::AuthView {
            kind: spec.auth.kind(),
            token_expires_at: None,
            last_token_error: None,
        },
        tool_count: 0,
        stale: false,
        protocol_version: None,
        server_info: None,
        listing_warning: None,
        tool_report: Arc::default(),
        cache: None,
        generation,
        first_attempt_done: false,
        call_timeout: spec.call_timeout,
    }
}

/// Whether a server may have a separate push stream at all.
fn may_push(spec: &ServerSpec) -> bool {
    spec.push
        && matches!(
            spec.transport(),
            TransportKind::Auto | TransportKind::StreamableHttp
        )
}

/// `connecting` for a server that may have a push stream, else `disabled`.
fn initial_push_state(spec: &ServerSpec) -> PushStreamState {
    if may_push(spec) {
        PushStreamState::Connecting
    } else {
        PushStreamState::Disabled
    }
}

trait With: Sized {
    fn with(mut self, f: impl FnOnce(&mut Self)) -> Self {
        f(&mut self);
        self
    }
}

impl With for ServerView {}

fn target_of(spec: &ServerSpec) -> Target {
    match &spec.endpoint {
        Endpoint::Http { url, transport } => Target::Http {
            url: url.clone(),
            transport: *transport,
        },
        Endpoint::Stdio {
            command,
            args,
            env,
            env_inherit,
            cwd,
        } => Target::Stdio {
            command: command.clone(),
            args: args.clone(),
            env: env
                .iter()
                .map(|(k, v)| (k.clone(), v.expose().to_owned()))
                .collect(),
            env_inherit: *env_inherit,
            cwd: cwd.clone(),
        },
    }
}

/// Client options with the static headers and static auth applied. OAuth2
/// needs the TokenRefresher child, which comes with its own issue.
fn options_of(
    spec: &ServerSpec,
    bearer: Option<BearerSlot>,
) -> Result<ClientOptions, UpstreamError> {
    let mut options = ClientOptions::from_settings(spec.name.as_str(), &spec.discovery);
    options.bearer = bearer;
    options.headers = spec
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), v.expose().to_owned()))
        .collect();
    match &spec.auth {
        AuthConfig::None => {}
        AuthConfig::Bearer { token } => options
            .headers
            .push(("Authorization".into(), format!("Bearer {}", token.expose()))),
        AuthConfig::Basic { username, password } => {
            let credentials = format!("{username}:{}", password.expose());
            options.headers.push((
                "Authorization".into(),
                format!("Basic {}", BASE64.encode(credentials)),
            ));
        }
        // The TokenRefresher's token goes in through `options.bearer`.
        AuthConfig::OAuth2(_) => {}
    }
    Ok(options)
}

impl Actor for Upstream {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.start_token_refresher(ctx);
        self.events.server_started(self.spec.name.as_str());
        self.events
            .state_changed(self.spec.name.as_str(), DiscoveryState::Unknown);
        self.start_poller(ctx);
        self.start_attempt(Trigger::Start, ctx);
    }

    fn stopping(&mut self, ctx: &mut Self::Context) -> Running {
        self.stopping = true;
        self.calls_stop.send_replace(true);
        if let Some(poller) = self.poller.take() {
            poller.do_send(StopPoller);
        }
        if let Some(push) = self.push.take() {
            push.do_send(StopPushStream);
        }
        if let Some(tokens) = self.tokens.take() {
            tokens.do_send(StopTokenRefresher);
        }
        if let Some(session) = self.session.take() {
            self.drop_session(session, ctx);
        }
        Running::Stop
    }
}

/// Sent by the supervisor (`POST /v1/servers/{name}/refresh`): rediscover
/// now, leaving `degraded` at once if need be.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Refresh;

/// Sent by the supervisor to stop this upstream: the session is closed
/// (DELETE, stdio child killed) before the reply, then the actor stops.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Stop;

/// Test hook: stops this upstream as if it had ended on its own (no
/// [`Stop`] from the supervisor), so a test can prove the supervisor
/// notices and restarts it. Nothing in the service sends it.
#[doc(hidden)]
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Halt;

impl Handler<Halt> for Upstream {
    type Result = ();

    fn handle(&mut self, _: Halt, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

/// Test only: a handler that panics, as a bug would.
#[cfg(test)]
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub(crate) struct PanicForTest;

#[cfg(test)]
impl Handler<PanicForTest> for Upstream {
    type Result = ();

    #[allow(clippy::panic)]
    fn handle(&mut self, _: PanicForTest, _ctx: &mut Self::Context) {
        panic!("a bug in an upstream handler (test)");
    }
}

/// Sent by a child actor from its `stopped()` when it ended on its own.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct ChildExited {
    pub kind: ChildKind,
    pub reason: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChildKind {
    Poller,
    PushStream,
    TokenRefresher,
}

impl Handler<Poll> for Upstream {
    type Result = ();

    fn handle(&mut self, _: Poll, ctx: &mut Self::Context) {
        self.start_attempt(Trigger::Poll, ctx);
    }
}

impl Handler<Refresh> for Upstream {
    type Result = ();

    fn handle(&mut self, _: Refresh, ctx: &mut Self::Context) {
        self.start_attempt(Trigger::Manual, ctx);
    }
}

impl Handler<Stop> for Upstream {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: Stop, ctx: &mut Self::Context) -> Self::Result {
        self.stopping = true;
        self.calls_stop.send_replace(true);
        if let Some(handle) = self.in_flight.take() {
            ctx.cancel_future(handle);
        }
        if let Some(handle) = self.extras.take() {
            ctx.cancel_future(handle);
        }
        if let Some(handle) = self.notifications.take() {
            ctx.cancel_future(handle);
        }
        if let Some(push) = self.push.take() {
            push.do_send(StopPushStream);
        }
        if let Some(tokens) = self.tokens.take() {
            tokens.do_send(StopTokenRefresher);
        }
        let session = self.session.take();
        let close = async move {
            if let Some(session) = session {
                let _ = actix_rt::time::timeout(CLOSE_TIMEOUT, session.close()).await;
            }
        }
        .instrument(self.span.clone());
        Box::pin(close.into_actor(self).map(|(), _act, ctx| ctx.stop()))
    }
}

impl Handler<ChildExited> for Upstream {
    type Result = ();

    fn handle(&mut self, msg: ChildExited, ctx: &mut Self::Context) {
        if self.stopping {
            return;
        }
        let delay = CHILD_RESTART_INITIAL
            .saturating_mul(1 << self.child_restarts.min(16))
            .min(CHILD_RESTART_MAX);
        self.child_restarts = self.child_restarts.saturating_add(1);
        {
            let _g = self.span.enter();
            tracing::warn!(
                child = ?msg.kind,
                reason = %msg.reason,
                restart_in_ms = delay.as_millis() as u64,
                "Child actor exited; restarting it."
            );
        }
        match msg.kind {
            ChildKind::Poller => {
                self.poller = None;
                ctx.run_later(delay, |act, ctx| {
                    if !act.stopping {
                        act.start_poller(ctx);
                    }
                });
            }
            ChildKind::PushStream => {
                self.push = None;
                ctx.run_later(delay, |act, ctx| act.sync_push(ctx));
            }
            ChildKind::TokenRefresher => {
                self.tokens = None;
                ctx.run_later(delay, |act, ctx| {
                    if !act.stopping {
                        act.start_token_refresher(ctx);
                    }
                });
            }
        }
    }
}

impl Handler<TokenEvent> for Upstream {
    type Result = ();

    fn handle(&mut self, msg: TokenEvent, _ctx: &mut Self::Context) {
        if self.stopping {
            return;
        }
        self.events
            .token_refreshed(self.spec.name.as_str(), msg.outcome());
        match msg {
            TokenEvent::Refreshed { token, expires_at } => {
                // Requests of the live session and its push stream use it
                // from now on.
                if let Some(bearer) = &self.bearer {
                    bearer.set(Some(token));
                }
                self.token_expires_at = Some(expires_at);
                self.last_token_error = None;
            }
            TokenEvent::Failed { error } => {
                self.last_token_error = Some(mcp::error::clip(&error, ERROR_TEXT_MAX))
            }
        }
        self.report(false);
    }
}

impl Handler<PushEvent> for Upstream {
    type Result = ();

    fn handle(&mut self, msg: PushEvent, ctx: &mut Self::Context) {
        if msg.epoch != self.push_epoch || self.stopping {
            return;
        }
        match msg.kind {
            PushEventKind::Status {
                state,
                error,
                reconnecting,
            } => {
                if reconnecting {
                    self.events.push_stream_reconnect(self.spec.name.as_str());
                }
                // Connecting keeps showing the last failure until it works.
                let error = error.map(|e| mcp::error::clip(&e, ERROR_TEXT_MAX));
                let error = match state {
                    PushStreamState::Connecting => error.or_else(|| self.push_error.clone()),
                    _ => error,
                };
                self.set_push_state(state, error);
                self.report(false);
            }
            PushEventKind::ListChanged { method } => {
                {
                    let _g = self.span.enter();
                    tracing::debug!(method = %method, "Received list_changed on the push stream.");
                }
                self.events.list_changed(self.spec.name.as_str());
                self.start_attempt(Trigger::ListChanged, ctx);
            }
            PushEventKind::SessionGone => self.start_attempt(Trigger::Manual, ctx),
            PushEventKind::Resync => {
                {
                    let _g = self.span.enter();
                    tracing::debug!(
                        "Listen stream reopened; refetching in case a change was missed."
                    );
                }
                self.start_attempt(Trigger::ListChanged, ctx);
            }
        }
    }
}

/// Notifications from the transport itself (stdio stdout, legacy SSE).
impl StreamHandler<Notification> for Upstream {
    fn handle(&mut self, note: Notification, ctx: &mut Self::Context) {
        if note.method.ends_with("/list_changed") {
            {
                let _g = self.span.enter();
                tracing::debug!(method = %note.method, "Received list_changed.");
            }
            self.events.list_changed(self.spec.name.as_str());
            self.start_attempt(Trigger::ListChanged, ctx);
        } else {
            let _g = self.span.enter();
            tracing::debug!(method = %note.method, "Ignored a notification.");
        }
    }

    /// The transport's own stream ended: the session is gone (stdio child
    /// exited, legacy SSE stream dropped). Reconnect with backoff.
    fn finished(&mut self, ctx: &mut Self::Context) {
        self.notifications = None;
        if self.stopping {
            return;
        }
        let reason = self
            .session
            .as_ref()
            .and_then(Session::closed)
            .map(|e| crate::error_chain(&e))
            .unwrap_or_else(|| "the upstream closed the transport".to_owned());
        if let Some(session) = self.session.take() {
            self.drop_session(session, ctx);
        }
        // An attempt in flight fails on its own, with the same cause.
        if self.in_flight.is_none() {
            self.fail(reason, ctx);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_initial_view_shows_no_secret_of_the_endpoint() {
        let spec = |endpoint: Endpoint| ServerSpec {
            name: discovery_config::ServerName::parse("s", "__").unwrap(),
            source: discovery_config::ServerSource::Api,
            endpoint,
            headers: Default::default(),
            auth: AuthConfig::None,
            tools: Default::default(),
            push: true,
            discovery: Default::default(),
            call_timeout: discovery_config::McpSettings::DEFAULT_CALL_TIMEOUT,
        };
        let http = spec(Endpoint::Http {
            url: url::Url::parse("https://user:hunter2@example.com/mcp?api_key=k-secret").unwrap(),
            transport: TransportKind::Auto,
        });
        let shown = initial_view(&http, 0).endpoint;
        assert_eq!(shown, "https://example.com/mcp?…");
        let stdio = spec(Endpoint::Stdio {
            command: "npx".into(),
            args: vec!["-y".into(), "--password=a-secret".into()],
            env: Default::default(),
            env_inherit: false,
            cwd: None,
        });
        assert_eq!(initial_view(&stdio, 0).endpoint, "npx (+2 args)");
    }
}
