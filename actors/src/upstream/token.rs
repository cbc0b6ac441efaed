//! The TokenRefresher: a child of an OAuth2 Upstream that owns its access
//! token. It fetches one before first use (discovering the token endpoint
//! when none is configured), refreshes at 80% of the lifetime, hands out
//! the current one, and fetches a fresh one on demand (after a 401).
//!
//! The identity provider's numbers are not trusted (ADR 0011): the lifetime
//! is clamped to [`MIN_LIFETIME`, `MAX_LIFETIME`], and two token requests
//! never start less than [`MIN_REQUEST_INTERVAL`] apart, or, after a
//! failure, less than the backoff delay apart; a need meanwhile waits.
//!
//! Nothing outside it can cancel an exchange: a token request runs in the
//! refresher's own context with only `auth.token_timeout` as its limit, and
//! concurrent needs wait on the same request. A failure is a message to the
//! parent (its `last_token_error`), never a cancellation.

use std::time::{Duration, Instant};

use actix::prelude::*;
use actix::WeakRecipient;
use chrono::{DateTime, Utc};
use discovery_config::{BackoffSettings, OAuth2Config};
use rand::Rng;
use tokio::sync::oneshot;
use tracing::Instrument;
use url::Url;

use super::state::{backoff_delay, fraction};
use super::{ChildExited, ChildKind};
use crate::events::RefreshOutcome;
use crate::mcp::auth::{self, AuthError, Token, TokenEndpoint, TokenRequest};
use crate::mcp::error::redact_url;

/// Lifetime assumed when the server does not say (`expires_in` absent).
const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);
/// Proactive refresh at this fraction of the lifetime (never sooner than
/// `MIN_REQUEST_INTERVAL`).
const REFRESH_AT: f64 = 0.8;
/// A token this close to expiry is not handed out; a fresh one is fetched.
const EXPIRY_MARGIN: Duration = Duration::from_secs(1);
/// Shortest lifetime believed (`expires_in: 0` would mean refreshing in a
/// loop).
const MIN_LIFETIME: Duration = Duration::from_secs(1);
/// Longest lifetime believed: a year (`expires_in: 1e30` would overflow
/// `Instant` arithmetic).
const MAX_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);
/// Least time between the starts of two token requests, whatever asks.
const MIN_REQUEST_INTERVAL: Duration = Duration::from_secs(1);

/// Sent by the Upstream before it connects, and with `fresh: true` after a
/// 401 (the current token is dropped first). Answers the access token, or
/// why there is none.
#[derive(Message, Debug)]
#[rtype(result = "Result<String, String>")]
pub struct GetToken {
    pub fresh: bool,
}

/// Sent by the TokenRefresher to its Upstream after each token request.
/// `Debug` shows no token.
#[derive(Message)]
#[rtype(result = "()")]
pub enum TokenEvent {
    Refreshed {
        token: String,
        expires_at: DateTime<Utc>,
    },
    Failed {
        error: String,
    },
}

impl std::fmt::Debug for TokenEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenEvent::Refreshed { expires_at, .. } => f
                .debug_struct("Refreshed")
                .field("token", &"[redacted]")
                .field("expires_at", expires_at)
                .finish(),
            TokenEvent::Failed { error } => f.debug_struct("Failed").field("error", error).finish(),
        }
    }
}

/// Sent by the Upstream from `stopping()`.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct StopTokenRefresher;

pub struct TokenRefresherInit {
    pub server_url: Url,
    pub config: OAuth2Config,
    pub backoff: BackoffSettings,
    pub parent: WeakRecipient<TokenEvent>,
    pub exited: WeakRecipient<ChildExited>,
    pub span: tracing::Span,
}

type Waiter = oneshot::Sender<Result<String, String>>;

/// Owns one server's OAuth2 access token.
pub struct TokenRefresher {
    init: TokenRefresherInit,
    endpoint: Option<TokenEndpoint>,
    token: Option<(String, Instant)>,
    waiters: Vec<Waiter>,
    fetching: bool,
    refresh_timer: Option<SpawnHandle>,
    failures: u32,
    stop_requested: bool,
    /// The token endpoint the last discovery found, kept across
    /// rediscoveries to notice a change.
    discovered: Option<Url>,
    /// No token request starts before this (minimum interval, backoff).
    not_before: Option<Instant>,
    /// A request put off until `not_before`.
    deferred: Option<SpawnHandle>,
}

impl TokenRefresher {
    pub fn new(init: TokenRefresherInit) -> Self {
        let endpoint = init.config.token_url.clone().map(|url| TokenEndpoint {
            url,
            client_auth: init.config.client_auth,
            resource: auth::canonical_resource(&init.server_url),
            challenge_scope: None,
        });
        Self {
            init,
            endpoint,
            token: None,
            waiters: Vec::new(),
            fetching: false,
            refresh_timer: None,
            failures: 0,
            stop_requested: false,
            discovered: None,
            not_before: None,
            deferred: None,
        }
    }

    fn valid_token(&self) -> Option<String> {
        self.token
            .as_ref()
            .filter(|(_, expires)| Instant::now() + EXPIRY_MARGIN < *expires)
            .map(|(token, _)| token.clone())
    }

    /// Starts a token request unless one is under way or put off; one asked
    /// for too soon after the last is put off until `not_before`.
    fn fetch(&mut self, ctx: &mut Context<Self>) {
        if self.fetching || self.deferred.is_some() {
            return;
        }
        let now = Instant::now();
        if let Some(at) = self.not_before.filter(|at| *at > now) {
            self.deferred = Some(ctx.run_later(at - now, |act, ctx| {
                act.deferred = None;
                act.fetch(ctx);
            }));
            return;
        }
        self.not_before = now.checked_add(MIN_REQUEST_INTERVAL);
        self.fetching = true;
        if let Some(timer) = self.refresh_timer.take() {
            ctx.cancel_future(timer);
        }
        let server = self.init.server_url.clone();
        let config = self.init.config.clone();
        let known = self.endpoint.clone();
        let work = async move {
            let endpoint = match known {
                Some(endpoint) => endpoint,
                None => {
                    auth::discover_checked(
                        &server,
                        config.client_auth,
                        config.token_timeout,
                        &config.allowed_issuers,
                    )
                    .await?
                }
            };
            let token = auth::request_token(&TokenRequest {
                endpoint: &endpoint,
                client_id: &config.client_id,
                client_secret: config.client_secret.expose(),
                scopes: &config.scopes,
                audience: config.audience.as_deref(),
                timeout: config.token_timeout,
            })
            .await?;
            Ok::<_, AuthError>((endpoint, token))
        }
        .instrument(self.init.span.clone());
        ctx.spawn(work.into_actor(self).map(|result, act, ctx| {
            act.fetching = false;
            act.fetched(result, ctx);
        }));
    }

    fn fetched(
        &mut self,
        result: Result<(TokenEndpoint, Token), AuthError>,
        ctx: &mut Context<Self>,
    ) {
        match result {
            Ok((endpoint, token)) => {
                self.failures = 0;
                let lifetime = lifetime(token.expires_in);
                let now = Instant::now();
                let expires = now.checked_add(lifetime).unwrap_or(now);
                let expires_at = chrono::Duration::from_std(lifetime)
                    .ok()
                    .and_then(|d| Utc::now().checked_add_signed(d))
                    .unwrap_or_else(Utc::now);
                {
                    let _g = self.init.span.enter();
                    tracing::info!(
                        token_url = %redact_url(&endpoint.url),
                        expires_in_s = lifetime.as_secs(),
                        stated_expires_in_s = ?token.expires_in,
                        "Got an OAuth2 access token."
                    );
                }
                if self.init.config.token_url.is_none() {
                    if let Some((old, new)) =
                        endpoint_change(self.discovered.as_ref(), &endpoint.url)
                    {
                        let _g = self.init.span.enter();
                        tracing::warn!(
                            old_token_url = %old,
                            new_token_url = %new,
                            "The discovered token endpoint changed since the last discovery; \
                             set auth.token_url or auth.allowed_issuers to pin it."
                        );
                    }
                    self.discovered = Some(endpoint.url.clone());
                }
                self.endpoint = Some(endpoint);
                self.token = Some((token.access_token.clone(), expires));
                for waiter in self.waiters.drain(..) {
                    let _ = waiter.send(Ok(token.access_token.clone()));
                }
                self.tell(TokenEvent::Refreshed {
                    token: token.access_token,
                    expires_at,
                });
                let refresh_in = fraction(lifetime, REFRESH_AT).max(MIN_REQUEST_INTERVAL);
                self.refresh_timer = Some(ctx.run_later(refresh_in, |act, ctx| {
                    act.refresh_timer = None;
                    act.fetch(ctx);
                }));
            }
            Err(error) => {
                let message = crate::error_chain(&error);
                {
                    let _g = self.init.span.enter();
                    tracing::warn!(error = %message, "OAuth2 token request failed.");
                }
                if matches!(error, AuthError::Discovery { .. }) {
                    self.endpoint = self
                        .endpoint
                        .take()
                        .filter(|_| self.init.config.token_url.is_some());
                }
                for waiter in self.waiters.drain(..) {
                    let _ = waiter.send(Err(message.clone()));
                }
                self.tell(TokenEvent::Failed { error: message });
                // No request before the backoff delay, whoever asks: a
                // failing identity provider is not hammered.
                self.failures = self.failures.saturating_add(1);
                let jitter = rand::rng().random_range(0.0..=1.0);
                let delay = backoff_delay(&self.init.backoff, self.failures, jitter)
                    .max(MIN_REQUEST_INTERVAL);
                self.not_before = Instant::now().checked_add(delay);
                // A proactive refresh that failed is retried while the
                // current token lasts; a failed first fetch is retried by
                // the upstream's own backoff (it asks again).
                if self.valid_token().is_some() {
                    self.refresh_timer = Some(ctx.run_later(delay, |act, ctx| {
                        act.refresh_timer = None;
                        act.fetch(ctx);
                    }));
                }
            }
        }
    }

    fn tell(&self, event: TokenEvent) {
        if let Some(parent) = self.init.parent.upgrade() {
            parent.do_send(event);
        }
    }
}

/// How long a token is believed to live: the server's `expires_in` clamped
/// to [`MIN_LIFETIME`, `MAX_LIFETIME`], an hour when it says nothing.
fn lifetime(expires_in: Option<u64>) -> Duration {
    expires_in
        .map(|secs| Duration::from_secs(secs).clamp(MIN_LIFETIME, MAX_LIFETIME))
        .unwrap_or(DEFAULT_LIFETIME)
}

/// The old and new token endpoint (redacted) when a discovery found another
/// one than the previous discovery: the client secret now goes elsewhere,
/// which an operator should hear about.
fn endpoint_change(previous: Option<&Url>, current: &Url) -> Option<(String, String)> {
    previous
        .filter(|previous| *previous != current)
        .map(|previous| (redact_url(previous), redact_url(current)))
}

/// The outcome label of a token event.
impl TokenEvent {
    pub fn outcome(&self) -> RefreshOutcome {
        match self {
            TokenEvent::Refreshed { .. } => RefreshOutcome::Success,
            TokenEvent::Failed { .. } => RefreshOutcome::Failure,
        }
    }
}

impl Actor for TokenRefresher {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Fetched before first use: the upstream asks right away anyway.
        self.fetch(ctx);
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        for waiter in self.waiters.drain(..) {
            let _ = waiter.send(Err("the token refresher stopped".into()));
        }
        if !self.stop_requested {
            if let Some(parent) = self.init.exited.upgrade() {
                parent.do_send(ChildExited {
                    kind: ChildKind::TokenRefresher,
                    reason: "token refresher stopped unexpectedly".into(),
                });
            }
        }
    }
}

impl Handler<GetToken> for TokenRefresher {
    type Result = ResponseFuture<Result<String, String>>;

    fn handle(&mut self, msg: GetToken, ctx: &mut Self::Context) -> Self::Result {
        if msg.fresh {
            self.token = None;
        } else if let Some(token) = self.valid_token() {
            return Box::pin(async move { Ok(token) });
        }
        let (tx, rx) = oneshot::channel();
        self.waiters.push(tx);
        self.fetch(ctx);
        Box::pin(async move {
            rx.await
                .unwrap_or_else(|_| Err("the token refresher stopped".into()))
        })
    }
}

impl Handler<StopTokenRefresher> for TokenRefresher {
    type Result = ();

    fn handle(&mut self, _: StopTokenRefresher, ctx: &mut Self::Context) {
        self.stop_requested = true;
        ctx.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lifetime_is_clamped() {
        assert_eq!(lifetime(None), DEFAULT_LIFETIME);
        assert_eq!(lifetime(Some(0)), MIN_LIFETIME);
        assert_eq!(lifetime(Some(1)), Duration::from_secs(1));
        assert_eq!(lifetime(Some(3600)), Duration::from_secs(3600));
        assert_eq!(lifetime(Some(u64::MAX)), MAX_LIFETIME);
        // What the refresher computes from it cannot overflow.
        let now = Instant::now();
        assert!(now.checked_add(lifetime(Some(u64::MAX))).is_some());
        assert!(chrono::Duration::from_std(MAX_LIFETIME).is_ok());
        assert_eq!(
            fraction(lifetime(Some(0)), REFRESH_AT).max(MIN_REQUEST_INTERVAL),
            MIN_REQUEST_INTERVAL
        );
    }

    #[test]
    fn a_changed_token_endpoint_is_reported_redacted() {
        let a = Url::parse("https://idp.example/token?tenant=s3cret").unwrap();
        let b = Url::parse("https://other.example/token").unwrap();
        assert_eq!(endpoint_change(None, &a), None);
        assert_eq!(endpoint_change(Some(&a), &a), None);
        assert_eq!(
            endpoint_change(Some(&a), &b),
            Some((
                "https://idp.example/token?…".to_owned(),
                "https://other.example/token".to_owned()
            ))
        );
    }

    #[test]
    fn a_token_event_does_not_print_the_token() {
        let e = TokenEvent::Refreshed {
            token: "tok-secret".into(),
            expires_at: Utc::now(),
        };
        assert!(!format!("{e:?}").contains("tok-secret"));
    }
}
