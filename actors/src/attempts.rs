//! The bound on discovery attempts in flight across every upstream
//! (`discovery.max_concurrent_attempts`, ADR 0026).
//!
//! One [`AttemptGate`] per engine, shared by every [`crate::upstream::Upstream`].
//! An attempt (connect, `server/discover` or `initialize`, the listings,
//! and an OAuth2 token fetch on the way) waits for a permit before it
//! builds anything, so a waiting attempt holds a few bytes and no socket.
//! It gives the permit back when it ends, or after [`HOLD_MAX`] if it is
//! still running then: an attempt that slow waits on its upstream, not on
//! this machine's network or CPU, and a few hung upstreams must not keep
//! the healthy ones queued behind them for a whole `request_timeout`.
//!
//! The limit follows reloads: a higher one admits waiting attempts at
//! once; a lower one takes effect as running attempts give permits back.

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::events::DiscoveryEvents;
use crate::lock;

/// How long an attempt may keep its permit. Loopback attempts take
/// milliseconds and a remote one with a token exchange well under a
/// second: past this, the attempt is waiting on a slow upstream.
pub const HOLD_MAX: Duration = Duration::from_secs(2);

/// Shared by every upstream of an engine; cheap to clone.
#[derive(Clone)]
pub struct AttemptGate {
    inner: Arc<Inner>,
}

struct Inner {
    semaphore: Arc<Semaphore>,
    /// The configured limit.
    limit: Mutex<usize>,
    /// Permits a lowered limit still has to take out of circulation: each
    /// permit given back while this is positive is forgotten instead.
    owed: AtomicUsize,
    events: Arc<dyn DiscoveryEvents>,
}

impl AttemptGate {
    pub fn new(limit: usize, events: Arc<dyn DiscoveryEvents>) -> Self {
        let limit = limit.max(1);
        Self {
            inner: Arc::new(Inner {
                semaphore: Arc::new(Semaphore::new(limit)),
                limit: Mutex::new(limit),
                owed: AtomicUsize::new(0),
                events,
            }),
        }
    }

    /// The configured limit.
    pub fn limit(&self) -> usize {
        *lock(&self.inner.limit)
    }

    /// Applies a new limit (at least 1).
    pub fn set_limit(&self, limit: usize) {
        let limit = limit.max(1);
        let mut current = lock(&self.inner.limit);
        if limit > *current {
            let mut more = limit - *current;
            // Cancel debts first: those permits are still out.
            let _ = self
                .inner
                .owed
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |owed| {
                    let paid = owed.min(more);
                    more -= paid;
                    Some(owed - paid)
                });
            self.inner.semaphore.add_permits(more);
        } else if limit < *current {
            let fewer = *current - limit;
            let taken = self.inner.semaphore.forget_permits(fewer);
            self.inner.owed.fetch_add(fewer - taken, Ordering::AcqRel);
        }
        *current = limit;
    }

    /// Waits for a permit. Dropping the future gives up its place.
    pub async fn admit(&self) -> AttemptPermit {
        let waiting = Count::waiting(self.inner.events.clone());
        // The semaphore is never closed.
        let permit = self.inner.semaphore.clone().acquire_owned().await.ok();
        drop(waiting);
        self.inner.events.attempts_gate(0, 1);
        AttemptPermit {
            permit,
            inner: self.inner.clone(),
        }
    }

    /// Runs `work` under `permit`, giving the permit back when `work` ends
    /// or after `hold`, whichever comes first.
    pub async fn run<F: Future>(permit: AttemptPermit, hold: Duration, work: F) -> F::Output {
        let mut work = pin!(work);
        tokio::select! {
            out = &mut work => out,
            () = tokio::time::sleep(hold) => {
                drop(permit);
                work.await
            }
        }
    }
}

/// The right to run one attempt; given back on drop.
pub struct AttemptPermit {
    permit: Option<OwnedSemaphorePermit>,
    inner: Arc<Inner>,
}

impl Drop for AttemptPermit {
    fn drop(&mut self) {
        self.inner.events.attempts_gate(0, -1);
        let Some(permit) = self.permit.take() else {
            return;
        };
        let repaid = self
            .inner
            .owed
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |owed| {
                owed.checked_sub(1)
            })
            .is_ok();
        if repaid {
            permit.forget();
        }
    }
}

/// Counts a waiting attempt for as long as it lives.
struct Count {
    events: Arc<dyn DiscoveryEvents>,
}

impl Count {
    fn waiting(events: Arc<dyn DiscoveryEvents>) -> Self {
        events.attempts_gate(1, 0);
        Self { events }
    }
}

impl Drop for Count {
    fn drop(&mut self) {
        self.events.attempts_gate(-1, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicI64;

    #[derive(Default)]
    struct Gauges {
        waiting: AtomicI64,
        running: AtomicI64,
    }

    impl DiscoveryEvents for Gauges {
        fn attempts_gate(&self, waiting: i64, running: i64) {
            self.waiting.fetch_add(waiting, Ordering::SeqCst);
            self.running.fetch_add(running, Ordering::SeqCst);
        }
    }

    fn gate(limit: usize) -> (AttemptGate, Arc<Gauges>) {
        let gauges = Arc::new(Gauges::default());
        (AttemptGate::new(limit, gauges.clone()), gauges)
    }

    /// Whether `admit` would return now.
    async fn admits_now(gate: &AttemptGate) -> Option<AttemptPermit> {
        tokio::time::timeout(Duration::ZERO, gate.admit())
            .await
            .ok()
    }

    #[tokio::test]
    async fn at_most_limit_permits_are_out_and_a_returned_one_admits_the_next() {
        let (gate, gauges) = gate(2);
        let a = admits_now(&gate).await.expect("first");
        let _b = admits_now(&gate).await.expect("second");
        assert!(
            admits_now(&gate).await.is_none(),
            "third admitted over a limit of 2"
        );
        assert_eq!(gauges.running.load(Ordering::SeqCst), 2);
        assert_eq!(
            gauges.waiting.load(Ordering::SeqCst),
            0,
            "a dropped wait is uncounted"
        );
        drop(a);
        assert!(admits_now(&gate).await.is_some());
    }

    #[tokio::test]
    async fn waiting_attempts_are_counted_while_they_wait() {
        let (gate, gauges) = gate(1);
        let held = admits_now(&gate).await.expect("first");
        let g = gate.clone();
        let waiter = tokio::spawn(async move { g.admit().await });
        while gauges.waiting.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        drop(held);
        let permit = waiter.await.expect("join");
        assert_eq!(gauges.waiting.load(Ordering::SeqCst), 0);
        assert_eq!(gauges.running.load(Ordering::SeqCst), 1);
        drop(permit);
        assert_eq!(gauges.running.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn raising_the_limit_admits_at_once() {
        let (gate, _) = gate(1);
        let _a = admits_now(&gate).await.expect("first");
        assert!(admits_now(&gate).await.is_none());
        gate.set_limit(3);
        assert!(admits_now(&gate).await.is_some());
        assert!(admits_now(&gate).await.is_some());
        assert_eq!(gate.limit(), 3);
    }

    #[tokio::test]
    async fn lowering_the_limit_waits_for_permits_to_come_back() {
        let (gate, _) = gate(3);
        let a = admits_now(&gate).await.expect("1");
        let b = admits_now(&gate).await.expect("2");
        let c = admits_now(&gate).await.expect("3");
        gate.set_limit(1);
        drop(a);
        drop(b);
        assert!(
            admits_now(&gate).await.is_none(),
            "two permits given back, but one is still out and the limit is 1"
        );
        drop(c);
        let d = admits_now(&gate)
            .await
            .expect("the one permit of the new limit");
        assert!(admits_now(&gate).await.is_none());
        drop(d);
        assert!(admits_now(&gate).await.is_some());
    }

    #[tokio::test]
    async fn raising_a_lowered_limit_cancels_the_debt_first() {
        let (gate, _) = gate(2);
        let a = admits_now(&gate).await.expect("1");
        let b = admits_now(&gate).await.expect("2");
        gate.set_limit(1); // one permit owed
        gate.set_limit(2); // debt cancelled, nothing added
        drop(a);
        drop(b);
        let _x = admits_now(&gate).await.expect("1 of 2");
        let _y = admits_now(&gate).await.expect("2 of 2");
        assert!(admits_now(&gate).await.is_none(), "the limit is 2, not 3");
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_attempt_gives_its_permit_back_after_the_hold() {
        let (gate, _) = gate(1);
        let permit = admits_now(&gate).await.expect("first");
        let slow = tokio::spawn(AttemptGate::run(
            permit,
            HOLD_MAX,
            tokio::time::sleep(Duration::from_secs(30)),
        ));
        tokio::task::yield_now().await;
        assert!(admits_now(&gate).await.is_none(), "held while young");
        tokio::time::sleep(HOLD_MAX + Duration::from_millis(1)).await;
        assert!(
            admits_now(&gate).await.is_some(),
            "given back after the hold"
        );
        assert!(!slow.is_finished(), "the attempt itself goes on");
    }

    #[tokio::test]
    async fn a_finished_attempt_gives_its_permit_back_at_once() {
        let (gate, _) = gate(1);
        let permit = admits_now(&gate).await.expect("first");
        let out = AttemptGate::run(permit, HOLD_MAX, async { 7 }).await;
        assert_eq!(out, 7);
        assert!(admits_now(&gate).await.is_some());
    }
}
