//! 2025-era sessions of the endpoint (`Mcp-Session-Id`): what `initialize`
//! negotiated, the client's capabilities, the calls in flight (so that
//! `notifications/cancelled` and DELETE cancel them). Bounded in number
//! (`mcp.max_sessions`) and forgotten after `mcp.session_idle_timeout`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::lock;
use std::time::{Duration, Instant};

use rand::RngCore;
use serde_json::Value;
use tokio::sync::oneshot;

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
}

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
}
