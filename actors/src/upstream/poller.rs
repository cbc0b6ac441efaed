//! The Poller: a child of an Upstream that sends it [`Poll`] every
//! `poll_interval`, jittered so that many upstreams configured alike do not
//! poll in lockstep. It holds only a weak reference upward: when the
//! Upstream is gone, the Poller stops by itself.

use std::time::Duration;

use actix::prelude::*;
use actix::WeakRecipient;
use rand::Rng;

use super::state::fraction;
use super::{ChildExited, ChildKind};

/// Jitter: each period is the interval times a factor in [1 - J, 1 + J].
pub(crate) const JITTER: f64 = 0.1;

/// Sent by the Poller to its Upstream on every tick. The Upstream refreshes
/// if it is healthy and nothing is in flight, and ignores it otherwise.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct Poll;

/// Sent by the Upstream to stop its Poller (from `Upstream::stopping`).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct StopPoller;

/// Periodic refresh timer of one upstream.
pub struct Poller {
    interval: Duration,
    target: WeakRecipient<Poll>,
    exited: WeakRecipient<ChildExited>,
    stop_requested: bool,
}

impl Poller {
    pub fn new(
        interval: Duration,
        target: WeakRecipient<Poll>,
        exited: WeakRecipient<ChildExited>,
    ) -> Self {
        Self {
            interval,
            target,
            exited,
            stop_requested: false,
        }
    }

    fn schedule_next(&mut self, ctx: &mut Context<Self>) {
        ctx.run_later(jittered(self.interval), |act, ctx| {
            match act.target.upgrade() {
                Some(target) => {
                    target.do_send(Poll);
                    act.schedule_next(ctx);
                }
                None => {
                    act.stop_requested = true;
                    ctx.stop();
                }
            }
        });
    }
}

/// `interval` scaled by a uniform factor in [1 - JITTER, 1 + JITTER].
pub fn jittered(interval: Duration) -> Duration {
    jittered_by(interval, rand::rng().random_range(0.0..=1.0))
}

/// `interval` moved by up to `JITTER` of itself either way, `u` in [0, 1]
/// picking where; saturating, so even `Duration::MAX` cannot overflow
/// (`Duration::mul_f64(1.1)` would panic there).
fn jittered_by(interval: Duration, u: f64) -> Duration {
    let spread = fraction(interval, JITTER);
    interval
        .saturating_sub(spread)
        .saturating_add(fraction(spread.saturating_mul(2), u))
}

impl Actor for Poller {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.schedule_next(ctx);
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        if !self.stop_requested {
            if let Some(parent) = self.exited.upgrade() {
                parent.do_send(ChildExited {
                    kind: ChildKind::Poller,
                    reason: "poller stopped unexpectedly".into(),
                });
            }
        }
    }
}

impl Handler<StopPoller> for Poller {
    type Result = ();

    fn handle(&mut self, _: StopPoller, ctx: &mut Self::Context) {
        self.stop_requested = true;
        ctx.stop();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;

    struct Counter(Arc<AtomicUsize>);

    impl Actor for Counter {
        type Context = Context<Self>;
    }

    impl Handler<Poll> for Counter {
        type Result = ();
        fn handle(&mut self, _: Poll, _: &mut Self::Context) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    impl Handler<ChildExited> for Counter {
        type Result = ();
        fn handle(&mut self, _: ChildExited, _: &mut Self::Context) {
            self.0.fetch_add(1000, Ordering::SeqCst);
        }
    }

    #[test]
    fn jitter_stays_within_ten_percent() {
        for _ in 0..1000 {
            let d = jittered(Duration::from_secs(100));
            assert!(d >= Duration::from_secs(90) && d <= Duration::from_secs(110));
        }
    }

    #[test]
    fn jitter_cannot_overflow() {
        for u in [0.0, 0.5, 1.0, f64::NAN, 9.0] {
            let d = jittered_by(Duration::MAX, u);
            assert!(d >= Duration::MAX - Duration::MAX / 9, "{u} {d:?}");
            assert_eq!(jittered_by(Duration::ZERO, u), Duration::ZERO);
        }
        assert_eq!(
            jittered_by(Duration::from_secs(100), 0.0),
            Duration::from_secs(90)
        );
        assert_eq!(
            jittered_by(Duration::from_secs(100), 0.5),
            Duration::from_secs(100)
        );
        assert_eq!(
            jittered_by(Duration::from_secs(100), 1.0),
            Duration::from_secs(110)
        );
    }

    #[actix_rt::test]
    async fn ticks_and_stops_on_request_without_reporting_an_exit() {
        let count = Arc::new(AtomicUsize::new(0));
        let parent = Counter(count.clone()).start();
        let poller = Poller::new(
            Duration::from_millis(10),
            parent.clone().downgrade().recipient(),
            parent.clone().downgrade().recipient(),
        )
        .start();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while count.load(Ordering::SeqCst) < 3 {
            assert!(std::time::Instant::now() < deadline, "no ticks");
            actix_rt::time::sleep(Duration::from_millis(5)).await;
        }
        poller.send(StopPoller).await.unwrap();
        actix_rt::time::sleep(Duration::from_millis(50)).await;
        let after = count.load(Ordering::SeqCst);
        assert!(after < 1000, "an explicit stop is not an exit");
        actix_rt::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(count.load(Ordering::SeqCst), after, "ticks after stop");
    }

    #[actix_rt::test]
    async fn stops_when_parent_is_gone() {
        let count = Arc::new(AtomicUsize::new(0));
        let parent = Counter(count.clone()).start();
        let weak = parent.downgrade();
        let poller = Poller::new(
            Duration::from_millis(5),
            weak.clone().recipient(),
            weak.recipient(),
        )
        .start();
        drop(parent);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while poller.connected() {
            assert!(
                std::time::Instant::now() < deadline,
                "poller outlived parent"
            );
            actix_rt::time::sleep(Duration::from_millis(5)).await;
        }
    }
}
