//! `GET /healthz` (liveness: the engine's actors run) and `GET /readyz` (readiness: the first
//! discovery round is done, or the start-up grace has passed).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::{web, HttpResponse};
use discovery_actors::{Engine, ServersSnapshot};
use serde::Serialize;

use super::ApiState;

/// `200 {"status":"ok"}` while the engine's actors run; `503
/// {"status":"failing","gone":[...]}` once the supervisor or the registry
/// is gone (the engine would never change again: restart the process).
/// Answered from the actors' mailbox state, never through a mailbox.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "probes",
    operation_id = "healthz",
    summary = "Liveness",
    responses(
        (status = 200, description = "The engine's actors run.", body = super::openapi::Health),
        (status = 503, description = "The supervisor or the registry is gone: restart the process.", body = super::openapi::Health),
    ),
)]
pub(super) async fn healthz(state: web::Data<ApiState>) -> HttpResponse {
    let gone = state.liveness.gone();
    if gone.is_empty() {
        HttpResponse::Ok().json(serde_json::json!({ "status": "ok" }))
    } else {
        HttpResponse::ServiceUnavailable().json(serde_json::json!({
            "status": "failing",
            "gone": gone,
        }))
    }
}

type AliveCheck = Arc<dyn Fn() -> bool + Send + Sync>;

/// What `/healthz` checks: named "is it still running" tests, each cheap
/// and lock-free (`Addr::connected`: the actor's mailbox is still open).
#[derive(Clone, Default)]
pub struct Liveness {
    parts: Vec<(&'static str, AliveCheck)>,
}

impl Liveness {
    /// The engine's supervisor and registry: without either, no server
    /// would ever change state or tools again.
    pub fn of_engine(engine: &Engine) -> Self {
        let supervisor = engine.supervisor.clone();
        let registry = engine.registry.clone();
        Self::default()
            .with("supervisor", move || supervisor.connected())
            .with("registry", move || registry.connected())
    }

    /// Adds a part named `name`, alive while `alive()` says so.
    pub fn with(
        mut self,
        name: &'static str,
        alive: impl Fn() -> bool + Send + Sync + 'static,
    ) -> Self {
        self.parts.push((name, Arc::new(alive)));
        self
    }

    /// The parts that are gone, in order.
    pub fn gone(&self) -> Vec<&'static str> {
        self.parts
            .iter()
            .filter(|(_, alive)| !alive())
            .map(|(name, _)| *name)
            .collect()
    }
}

impl std::fmt::Debug for Liveness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.parts.iter().map(|(n, _)| *n).collect();
        f.debug_struct("Liveness").field("parts", &names).finish()
    }
}

#[utoipa::path(
    get,
    path = "/readyz",
    tag = "probes",
    operation_id = "readyz",
    summary = "Readiness (start-up only)",
    responses(
        (status = 200, description = "Ready; it stays ready.", body = super::openapi::Ready),
        (status = 503, description = "Starting: some first discovery attempts have not finished and the grace has not passed.", body = super::openapi::Ready),
    ),
)]
pub(super) async fn readyz(state: web::Data<ApiState>) -> HttpResponse {
    let status = state.readiness.check(&state.servers());
    if status.ready {
        HttpResponse::Ok().json(status)
    } else {
        HttpResponse::ServiceUnavailable().json(status)
    }
}

/// Start-up readiness. Ready once every server known at start has finished
/// its first discovery attempt (success or not), or once `startup_grace`
/// has passed. Readiness is about start-up only: once reached it stays (a
/// server added later by a reload does not take the instance out of a load
/// balancer).
#[derive(Debug)]
pub struct Readiness {
    started: Instant,
    grace: Duration,
    /// The servers of the configuration at start; they count as pending even
    /// before the engine publishes them.
    expected: Vec<String>,
    ready: AtomicBool,
}

/// The `/readyz` body.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct ReadyStatus {
    #[serde(skip)]
    pub ready: bool,
    /// `ready` or `starting`.
    pub status: &'static str,
    /// Servers whose first discovery attempt has not finished, in order.
    pub pending: Vec<String>,
    /// Why it is ready: `all_attempted` or `startup_grace_elapsed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    /// While starting: milliseconds until the grace period ends.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub startup_grace_remaining_ms: Option<u64>,
}

impl Readiness {
    pub fn new(grace: Duration, expected: impl IntoIterator<Item = String>) -> Self {
        Self::starting_at(Instant::now(), grace, expected)
    }

    /// As [`Readiness::new`] with an explicit start instant (tests).
    pub fn starting_at(
        started: Instant,
        grace: Duration,
        expected: impl IntoIterator<Item = String>,
    ) -> Self {
        Self {
            started,
            grace,
            expected: expected.into_iter().collect(),
            ready: AtomicBool::new(false),
        }
    }

    pub fn check(&self, servers: &ServersSnapshot) -> ReadyStatus {
        let mut pending: Vec<String> = servers
            .servers
            .values()
            .filter(|s| !s.first_attempt_done)
            .map(|s| s.name.clone())
            .collect();
        for name in &self.expected {
            if !servers.servers.contains_key(name.as_str()) && !pending.contains(name) {
                pending.push(name.clone());
            }
        }
        let was_ready = self.ready.load(Ordering::Relaxed);
        let elapsed = self.started.elapsed();
        let reason = if pending.is_empty() {
            Some("all_attempted")
        } else if elapsed >= self.grace {
            Some("startup_grace_elapsed")
        } else if was_ready {
            Some("all_attempted")
        } else {
            None
        };
        let ready = reason.is_some();
        if ready && !was_ready {
            self.ready.store(true, Ordering::Relaxed);
            tracing::info!(
                pending = pending.len(),
                reason = reason.unwrap_or_default(),
                "Ready: first discovery round done"
            );
        }
        let remaining = (!ready).then(|| {
            let left = self.grace.saturating_sub(elapsed);
            u64::try_from(left.as_millis()).unwrap_or(u64::MAX)
        });
        ReadyStatus {
            ready,
            status: if ready { "ready" } else { "starting" },
            pending,
            reason,
            startup_grace_remaining_ms: remaining,
        }
    }
}
