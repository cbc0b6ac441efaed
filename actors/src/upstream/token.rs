//! The TokenRefresher: a child of an OAuth2 Upstream that owns its access
//! token. It fetches one before first use (discovering the token endpoint
//! when none is configured), refreshes at 80% of the lifetime, hands out
//! the current one, and fetches a fresh one on demand (after a 401).
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

use super::state::backoff_delay;
use super::{ChildExited, ChildKind};
use crate::events::RefreshOutcome;
use crate::mcp::auth::{self, AuthError, Token, TokenEndpoint, TokenRequest};
use crate::mcp::error::redact_url;

/// Lifetime assumed when the server does not say (`expires_in` absent).
const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);
/// Proactive refresh at this fraction of the lifetime.
const REFRESH_AT: f64 = 0.8;
/// A token this close to expiry is not handed out; a fresh one is fetched.
const EXPIRY_MARGIN: Duration = Duration::from_secs(1);

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
        }
    }

    fn valid_token(&self) -> Option<String> {
        self.token
            .as_ref()
            .filter(|(_, expires)| Instant::now() + EXPIRY_MARGIN < *expires)
            .map(|(token, _)| token.clone())
    }

    /// Starts a token request unless one is under way.
    fn fetch(&mut self, ctx: &mut Context<Self>) {
        if self.fetching {
            return;
        }
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
                None => auth::discover(&server, config.client_auth, config.token_timeout).await?,
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
                let lifetime = token
                    .expires_in
                    .map(Duration::from_secs)
                    .unwrap_or(DEFAULT_LIFETIME);
                let expires = Instant::now() + lifetime;
                let expires_at = Utc::now()
                    + chrono::Duration::from_std(lifetime).unwrap_or(chrono::Duration::zero());
                {
                    let _g = self.init.span.enter();
                    tracing::info!(
                        token_url = %redact_url(&endpoint.url),
                        expires_in_s = lifetime.as_secs(),
                        "Got an OAuth2 access token."
                    );
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
                let refresh_in = lifetime.mul_f64(REFRESH_AT);
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
                // A proactive refresh that failed is retried while the
                // current token lasts; a failed first fetch is retried by
                // the upstream's own backoff (it asks again).
                if self.valid_token().is_some() {
                    self.failures = self.failures.saturating_add(1);
                    let jitter = rand::rng().random_range(0.0..=1.0);
                    let delay = backoff_delay(&self.init.backoff, self.failures, jitter);
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
mod debug_tests {
    use super::*;

    #[test]
    fn a_token_event_does_not_print_the_token() {
        let e = TokenEvent::Refreshed {
            token: "tok-secret".into(),
            expires_at: Utc::now(),
        };
        assert!(!format!("{e:?}").contains("tok-secret"));
    }
}
