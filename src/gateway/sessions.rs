//! 2025-era sessions of the endpoint (`Mcp-Session-Id`): what `initialize`
//! negotiated, the client's capabilities, the calls in flight (so that
//! `notifications/cancelled` and DELETE cancel them), and the upstream
//! requests relayed to the client that wait for its answer (ADR 0024).
//! Bounded in number (`mcp.max_sessions`) and forgotten after
//! `mcp.session_idle_timeout`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::lock;
use std::time::{Duration, Instant};

use discovery_actors::mcp::relay::ClientAnswer;
use rand::RngCore;
use serde_json::Value;
use tokio::sync::oneshot;

/// Relayed requests of one session waiting for the client's answer; one
/// more is answered with an error at once.
pub const MAX_PENDING_RELAYS: usize = 16;

use super::listing::Scope;

/// One live session.
pub struct LegacySession {
    pub id: String,
    /// The path it was created on: a session of `/mcp/a` is not one of `/mcp`.
    pub scope: Scope,
    /// The revision `initialize` agreed on.
    pub version: String,
    /// `params.capabilities` of the client's `initialize`.
    pub capabilities: Value,
    last_used: Mutex<Instant>,
    /// Calls in flight by JSON-RPC id (as compact JSON): dropping the
    /// sender cancels the call.
    calls: Mutex<HashMap<String, oneshot::Sender<()>>>,
    relays: Mutex<Relays>,
}

/// The relayed requests waiting for the client's answer, by the id the
/// engine gave them (as compact JSON).
#[derive(Default)]
struct Relays {
    next: u64,
    pending: HashMap<String, PendingRelay>,
}

struct PendingRelay {
    /// The client's call it belongs to (its JSON-RPC id, compact JSON).
    call: String,
    answer: oneshot::Sender<ClientAnswer>,
}

/// Why a request could not be relayed.
#[derive(Debug)]
pub struct RelaysFull;

impl LegacySession {
    /// Keeps a call's cancel handle until it ends or is cancelled; false
    /// (and nothing kept) when a call with this id is already in flight:
    /// ids are unique per session while in use, and taking the second would
    /// make the first uncancellable.
    pub fn track_call(&self, id: &Value, cancel: oneshot::Sender<()>) -> bool {
        let mut calls = lock(&self.calls);
        match calls.entry(id.to_string()) {
            std::collections::hash_map::Entry::Occupied(_) => false,
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(cancel);
                true
            }
        }
    }

    /// The call ended: forget its handle (dropping it cancels nothing any
    /// more).
    pub fn end_call(&self, id: &Value) {
        lock(&self.calls).remove(&id.to_string());
    }

    /// `notifications/cancelled` for `id`: true if it was in flight.
    pub fn cancel_call(&self, id: &Value) -> bool {
        lock(&self.calls).remove(&id.to_string()).is_some()
    }

    /// An id for an upstream request relayed during call `call` (never the
    /// upstream's own: two upstreams may use the same), keeping `answer`
    /// until the client answers or the call ends. Refused (and `answer`
    /// given back) when [`MAX_PENDING_RELAYS`] wait already.
    pub fn open_relay(
        &self,
        call: &Value,
        answer: oneshot::Sender<ClientAnswer>,
    ) -> Result<Value, (RelaysFull, oneshot::Sender<ClientAnswer>)> {
        let mut relays = lock(&self.relays);
        relays.pending.retain(|_, p| !p.answer.is_closed());
        if relays.pending.len() >= MAX_PENDING_RELAYS {
            return Err((RelaysFull, answer));
        }
        relays.next += 1;
        let id = Value::from(format!("mcp-discovery-{}", relays.next));
        relays.pending.insert(
            id.to_string(),
            PendingRelay {
                call: call.to_string(),
                answer,
            },
        );
        Ok(id)
    }

    /// The client's answer to relayed request `id`: false when no such
    /// request waits (unknown, answered, or its call ended).
    pub fn answer_relay(&self, id: &Value, answer: ClientAnswer) -> bool {
        let pending = lock(&self.relays).pending.remove(&id.to_string());
        pending.is_some_and(|p| p.answer.send(answer).is_ok())
    }

    /// Call `call` ended: its relayed requests still waiting are answered
    /// upstream with an error (their senders dropped).
    pub fn end_relays(&self, call: &Value) {
        let call = call.to_string();
        lock(&self.relays).pending.retain(|_, p| p.call != call);
    }

    fn idle_for(&self, now: Instant) -> Duration {
        now.saturating_duration_since(*lock(&self.last_used))
    }
}

/// Why a session could not be created.
#[derive(Debug, thiserror::Error)]
#[error("the endpoint already has {0} live sessions (mcp.max_sessions). Hint: close unused sessions with DELETE, or raise mcp.max_sessions")]
pub struct TooManySessions(pub usize);

/// Every live session.
#[derive(Default)]
pub struct Sessions {
    inner: Mutex<HashMap<String, Arc<LegacySession>>>,
}

impl Sessions {
    /// A new session, after forgetting the idle ones; returns it and the
    /// ids forgotten (their streams are to be closed).
    pub fn create(
        &self,
        scope: Scope,
        version: String,
        capabilities: Value,
        max: usize,
        idle: Duration,
    ) -> Result<(Arc<LegacySession>, Vec<String>), TooManySessions> {
        let mut map = lock(&self.inner);
        let now = Instant::now();
        let mut expired = Vec::new();
        map.retain(|id, s| {
            let keep = s.idle_for(now) < idle;
            if !keep {
                expired.push(id.clone());
            }
            keep
        });
        if map.len() >= max {
            return Err(TooManySessions(map.len()));
        }
        let mut bytes = [0u8; 16];
        rand::rng().fill_bytes(&mut bytes);
        let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let session = Arc::new(LegacySession {
            id: id.clone(),
            scope,
            version,
            capabilities,
            last_used: Mutex::new(now),
            calls: Mutex::default(),
            relays: Mutex::default(),
        });
        map.insert(id, session.clone());
        Ok((session, expired))
    }

    /// The session `id`, if it is live (and marks it used). An idle one is
    /// forgotten here, as if it had expired on time.
    pub fn get(&self, id: &str, idle: Duration) -> Option<Arc<LegacySession>> {
        let mut map = lock(&self.inner);
        let session = map.get(id)?.clone();
        let now = Instant::now();
        if session.idle_for(now) >= idle {
            map.remove(id);
            return None;
        }
        *lock(&session.last_used) = now;
        Some(session)
    }

    /// Ends a session (DELETE): its calls in flight are cancelled.
    pub fn remove(&self, id: &str) -> Option<Arc<LegacySession>> {
        let session = lock(&self.inner).remove(id)?;
        lock(&session.calls).clear();
        lock(&session.relays).pending.clear();
        Some(session)
    }

    pub fn len(&self) -> usize {
        lock(&self.inner).len()
    }

    pub fn is_empty(&self) -> bool {
        lock(&self.inner).is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sessions_are_bounded_expire_when_idle_and_cancel_their_calls() {
        let s = Sessions::default();
        let long = Duration::from_secs(60);
        let (a, _) = s
            .create(Scope::All, "2025-11-25".into(), json!({}), 2, long)
            .unwrap();
        let (b, _) = s
            .create(Scope::All, "2025-06-18".into(), json!({}), 2, long)
            .unwrap();
        assert_ne!(a.id, b.id);
        assert_eq!(a.id.len(), 32);
        assert!(s
            .create(Scope::All, "2025-11-25".into(), json!({}), 2, long)
            .is_err());
        // Idle sessions make room.
        let (c, expired) = s
            .create(
                Scope::All,
                "2025-11-25".into(),
                json!({}),
                2,
                Duration::ZERO,
            )
            .unwrap();
        assert_eq!(expired.len(), 2);
        assert!(s.get(&a.id, long).is_none());
        assert!(s.get(&c.id, long).is_some());
        assert!(
            s.get(&c.id, Duration::ZERO).is_none(),
            "idle past the limit"
        );
        // DELETE cancels the calls in flight.
        let (d, _) = s
            .create(Scope::All, "2025-11-25".into(), json!({}), 8, long)
            .unwrap();
        let (tx, mut rx) = oneshot::channel();
        assert!(d.track_call(&json!(7), tx));
        assert!(rx.try_recv().is_err(), "not cancelled yet");
        s.remove(&d.id).unwrap();
        assert!(matches!(
            rx.try_recv(),
            Err(oneshot::error::TryRecvError::Closed)
        ));
        // notifications/cancelled finds a call by id.
        let (e, _) = s
            .create(Scope::All, "2025-11-25".into(), json!({}), 8, long)
            .unwrap();
        let (tx, _rx) = oneshot::channel();
        assert!(e.track_call(&json!("x"), tx));
        let (again, _rx2) = oneshot::channel();
        assert!(
            !e.track_call(&json!("x"), again),
            "an id in flight is not taken twice"
        );
        assert!(!e.cancel_call(&json!(7)));
        assert!(e.cancel_call(&json!("x")));
    }

    #[test]
    fn relayed_requests_get_their_own_ids_are_bounded_and_end_with_their_call() {
        let s = Sessions::default();
        let long = Duration::from_secs(60);
        let (a, _) = s
            .create(Scope::All, "2025-11-25".into(), json!({}), 2, long)
            .unwrap();
        let (tx, mut rx) = oneshot::channel();
        let id = a.open_relay(&json!(1), tx).unwrap();
        assert_eq!(id, json!("mcp-discovery-1"));
        assert!(!a.answer_relay(&json!("mcp-discovery-9"), Ok(json!({}))));
        assert!(a.answer_relay(&id, Ok(json!({"roots": []}))));
        assert_eq!(rx.try_recv().unwrap().unwrap(), json!({"roots": []}));
        assert!(!a.answer_relay(&id, Ok(json!({}))), "answered once");
        // Bounded: the waiting ones fill the table; a closed one makes room.
        let mut held = Vec::new();
        for _ in 0..MAX_PENDING_RELAYS {
            let (tx, rx) = oneshot::channel();
            a.open_relay(&json!(2), tx).unwrap();
            held.push(rx);
        }
        let (tx, _rx) = oneshot::channel();
        let (_, back) = a.open_relay(&json!(3), tx).unwrap_err();
        drop(held.pop());
        assert!(a.open_relay(&json!(3), back).is_ok());
        // The call ends: what waits is dropped (the upstream hears an error).
        a.end_relays(&json!(2));
        assert!(held
            .iter_mut()
            .all(|rx| matches!(rx.try_recv(), Err(oneshot::error::TryRecvError::Closed))));
    }
}
