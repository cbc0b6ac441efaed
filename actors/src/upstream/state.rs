//! The discovery state machine of one upstream, as plain data: the actor
//! feeds it events, it says what the state is and when to retry. Pure, so
//! every transition is unit-tested without actors or sockets.

use std::time::Duration;

use chrono::{DateTime, Utc};
use discovery_config::BackoffSettings;

use crate::status::DiscoveryState;

/// Discovery bookkeeping of one upstream (DESIGN.md section 3).
#[derive(Clone, Debug)]
pub struct Discovery {
    state: DiscoveryState,
    pub last_error: Option<String>,
    pub last_success_at: Option<DateTime<Utc>>,
    pub last_attempt_at: Option<DateTime<Utc>>,
    pub consecutive_failures: u32,
    pub next_retry_at: Option<DateTime<Utc>>,
    pub first_attempt_done: bool,
}

/// What started an attempt; only for logs and for deciding the transition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    Start,
    Poll,
    Manual,
    ListChanged,
    Retry,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Start => "start",
            Trigger::Poll => "poll",
            Trigger::Manual => "manual",
            Trigger::ListChanged => "list_changed",
            Trigger::Retry => "retry",
        }
    }
}

impl Default for Discovery {
    fn default() -> Self {
        Self::new()
    }
}

impl Discovery {
    pub fn new() -> Self {
        Self {
            state: DiscoveryState::Unknown,
            last_error: None,
            last_success_at: None,
            last_attempt_at: None,
            consecutive_failures: 0,
            next_retry_at: None,
            first_attempt_done: false,
        }
    }

    pub fn state(&self) -> DiscoveryState {
        self.state
    }

    /// Whether `trigger` may start an attempt now. A poll only refreshes a
    /// healthy server: a degraded one waits for its backoff timer, and one
    /// that is connecting already has an attempt under way.
    pub fn accepts(&self, trigger: Trigger) -> bool {
        match (self.state, trigger) {
            (DiscoveryState::Healthy, _) => true,
            (DiscoveryState::Degraded, Trigger::Poll) => false,
            (DiscoveryState::Degraded, _) => true,
            (DiscoveryState::Unknown, Trigger::Start) => true,
            (DiscoveryState::Unknown | DiscoveryState::Connecting, _) => false,
        }
    }

    /// An attempt begins. From `unknown`/`degraded` this is `connecting`; a
    /// healthy server stays `healthy` while it refreshes.
    pub fn begin(&mut self, now: DateTime<Utc>) {
        self.last_attempt_at = Some(now);
        self.next_retry_at = None;
        if self.state != DiscoveryState::Healthy {
            self.state = DiscoveryState::Connecting;
        }
    }

    /// initialize + full listing succeeded.
    pub fn succeeded(&mut self, now: DateTime<Utc>) {
        self.state = DiscoveryState::Healthy;
        self.last_error = None;
        self.last_success_at = Some(now);
        self.consecutive_failures = 0;
        self.next_retry_at = None;
        self.first_attempt_done = true;
    }

    /// Any failure: `degraded`, with the retry delay from [`backoff_delay`].
    /// Returns the delay before the next attempt.
    pub fn failed(
        &mut self,
        now: DateTime<Utc>,
        error: String,
        backoff: &BackoffSettings,
        jitter: f64,
    ) -> Duration {
        self.state = DiscoveryState::Degraded;
        self.last_error = Some(error);
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        self.first_attempt_done = true;
        let delay = backoff_delay(backoff, self.consecutive_failures, jitter);
        self.next_retry_at = chrono::Duration::from_std(delay)
            .ok()
            .and_then(|d| now.checked_add_signed(d));
        delay
    }
}

/// Exponential backoff with "equal jitter": the `n`th consecutive failure
/// (1-based) waits between half and all of `initial * 2^(n-1)`, never less
/// than `initial` nor more than `max`. `jitter` is a uniform sample in [0, 1]
/// (anything else, NaN included, is clamped). Integer arithmetic that
/// saturates: no setting can make it overflow or panic.
pub fn backoff_delay(backoff: &BackoffSettings, failures: u32, jitter: f64) -> Duration {
    let exp = failures.saturating_sub(1).min(31);
    let base = backoff
        .initial
        .checked_mul(1u32 << exp)
        .unwrap_or(backoff.max)
        .min(backoff.max);
    let half = base / 2;
    let delay = base
        .saturating_sub(half)
        .saturating_add(fraction(half, jitter));
    delay.clamp(backoff.initial.min(backoff.max), backoff.max)
}

/// `d * f` for `f` in [0, 1] (clamped; NaN is 0), in integer arithmetic so
/// that even `Duration::MAX` cannot overflow (`Duration::mul_f64` panics
/// when the product does not fit).
pub fn fraction(d: Duration, f: f64) -> Duration {
    const PPM: u32 = 1_000_000;
    // `as` saturates, and NaN becomes 0.
    let ppm = (f.clamp(0.0, 1.0) * f64::from(PPM)) as u32;
    match d.checked_mul(ppm) {
        Some(product) => product / PPM,
        None => (d / PPM).saturating_mul(ppm),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backoff() -> BackoffSettings {
        BackoffSettings {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(60),
        }
    }

    #[test]
    fn starts_unknown_then_connecting_then_healthy() {
        let mut d = Discovery::new();
        assert_eq!(d.state(), DiscoveryState::Unknown);
        assert!(d.accepts(Trigger::Start));
        assert!(!d.accepts(Trigger::Poll));
        d.begin(Utc::now());
        assert_eq!(d.state(), DiscoveryState::Connecting);
        assert!(!d.accepts(Trigger::Poll), "an attempt is already under way");
        d.succeeded(Utc::now());
        assert_eq!(d.state(), DiscoveryState::Healthy);
        assert!(d.first_attempt_done);
        assert!(d.last_success_at.is_some());
    }

    #[test]
    fn connecting_failure_is_degraded_with_error_and_retry_time() {
        let mut d = Discovery::new();
        let now = Utc::now();
        d.begin(now);
        let delay = d.failed(now, "connection refused".into(), &backoff(), 0.0);
        assert_eq!(d.state(), DiscoveryState::Degraded);
        assert_eq!(d.last_error.as_deref(), Some("connection refused"));
        assert_eq!(d.consecutive_failures, 1);
        assert!(d.first_attempt_done);
        assert_eq!(delay, Duration::from_millis(500));
        assert_eq!(
            d.next_retry_at,
            Some(now + chrono::Duration::milliseconds(500))
        );
    }

    #[test]
    fn healthy_refresh_stays_healthy_while_in_flight() {
        let mut d = Discovery::new();
        d.begin(Utc::now());
        d.succeeded(Utc::now());
        d.begin(Utc::now());
        assert_eq!(d.state(), DiscoveryState::Healthy);
    }

    #[test]
    fn healthy_refresh_failure_degrades_and_success_clears_error() {
        let mut d = Discovery::new();
        d.begin(Utc::now());
        d.succeeded(Utc::now());
        d.begin(Utc::now());
        d.failed(Utc::now(), "timeout".into(), &backoff(), 0.5);
        assert_eq!(d.state(), DiscoveryState::Degraded);
        d.failed(Utc::now(), "timeout".into(), &backoff(), 0.5);
        assert_eq!(d.consecutive_failures, 2);
        assert!(d.accepts(Trigger::Retry));
        assert!(d.accepts(Trigger::Manual));
        assert!(d.accepts(Trigger::ListChanged));
        assert!(!d.accepts(Trigger::Poll), "degraded waits for its backoff");
        d.begin(Utc::now());
        assert_eq!(d.state(), DiscoveryState::Connecting);
        assert_eq!(d.next_retry_at, None);
        d.succeeded(Utc::now());
        assert_eq!(d.state(), DiscoveryState::Healthy);
        assert_eq!(d.last_error, None);
        assert_eq!(d.consecutive_failures, 0);
    }

    #[test]
    fn fraction_never_overflows() {
        assert_eq!(
            fraction(Duration::from_secs(10), 0.5),
            Duration::from_secs(5)
        );
        assert_eq!(
            fraction(Duration::from_secs(10), 1.0),
            Duration::from_secs(10)
        );
        assert_eq!(fraction(Duration::from_secs(10), f64::NAN), Duration::ZERO);
        assert_eq!(fraction(Duration::from_secs(10), -3.0), Duration::ZERO);
        assert_eq!(
            fraction(Duration::from_secs(10), 7.0),
            Duration::from_secs(10)
        );
        let max = fraction(Duration::MAX, 1.0);
        assert!(max <= Duration::MAX && max > Duration::MAX / 2, "{max:?}");
        assert!(fraction(Duration::MAX, 0.5) <= Duration::MAX / 2 + Duration::from_secs(1));
    }

    #[test]
    fn backoff_grows_with_jitter_and_is_capped() {
        let b = backoff();
        assert_eq!(backoff_delay(&b, 1, 1.0), Duration::from_millis(500));
        assert_eq!(backoff_delay(&b, 2, 1.0), Duration::from_secs(1));
        assert_eq!(backoff_delay(&b, 2, 0.0), Duration::from_millis(500));
        assert_eq!(backoff_delay(&b, 4, 1.0), Duration::from_secs(4));
        assert_eq!(backoff_delay(&b, 4, 0.0), Duration::from_secs(2));
        assert_eq!(backoff_delay(&b, 20, 1.0), Duration::from_secs(60));
        assert_eq!(backoff_delay(&b, 20, 0.0), Duration::from_secs(30));
        assert_eq!(backoff_delay(&b, u32::MAX, 1.0), Duration::from_secs(60));
        for n in [0, 1, 2, 31, 32, 33, 64, u32::MAX] {
            for j in [f64::NAN, -1.0, 0.0, 0.5, 1.0, 2.0, f64::INFINITY] {
                let huge = BackoffSettings {
                    initial: Duration::MAX / 3,
                    max: Duration::MAX,
                };
                let d = backoff_delay(&huge, n, j);
                assert!(d >= huge.initial && d <= huge.max, "{n} {j} {d:?}");
                let odd = BackoffSettings {
                    initial: Duration::MAX,
                    max: Duration::from_secs(1),
                };
                assert_eq!(backoff_delay(&odd, n, j), Duration::from_secs(1));
                let zero = BackoffSettings {
                    initial: Duration::ZERO,
                    max: Duration::ZERO,
                };
                assert_eq!(backoff_delay(&zero, n, j), Duration::ZERO);
                let d = backoff_delay(&b, n, j);
                assert!(d >= b.initial && d <= b.max, "{n} {j} {d:?}");
            }
        }
        for n in 1..50 {
            for j in [0.0, 0.3, 0.99, 1.0] {
                let d = backoff_delay(&b, n, j);
                assert!(d >= b.initial && d <= b.max, "{n} {j} {d:?}");
            }
        }
    }
}
