//! Cache hints of 2026-07-28 results (`ttlMs`, `cacheScope`) and their
//! `resultType` (issue 10, item 3).
//!
//! Decisions worth knowing:
//! - Read on every page of `tools/list`, `prompts/list`, `resources/list`
//!   and on `server/discover`, on the modern wire only (a 2025 server has no
//!   hints: `None`).
//! - `ttlMs` absent, negative or not an integer is 0 (the spec: "absent or
//!   negative = 0"); a huge one is kept as it is (the refresh arithmetic
//!   saturates, and `poll_interval` caps it anyway).
//! - Several results (the pages of one listing, or the listings of one
//!   server) combine to the smallest ttl and `private` if any says private:
//!   what the aggregate may be kept for is bounded by its soonest-changing
//!   part.
//! - `resultType` absent is `complete`; anything else on a listing is an
//!   error for that server that names it (`input_required` is only for
//!   `tools/call`, `prompts/get` and `resources/read`).

use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

/// `cacheScope`: who may reuse a result.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheScope {
    /// Any client or shared cache may reuse it.
    Public,
    /// Only within the same authorization context.
    Private,
}

impl CacheScope {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheScope::Public => "public",
            CacheScope::Private => "private",
        }
    }
}

/// The hints of one result, or of several combined.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CacheHint {
    /// `ttlMs` (0: no freshness promised; `poll_interval` stays in charge).
    pub ttl_ms: u64,
    /// `None` when no result stated a (known) scope.
    pub scope: Option<CacheScope>,
}

impl CacheHint {
    /// The hints of one result object (`ttlMs`, `cacheScope`).
    pub fn of(ttl_ms: Option<&Value>, scope: Option<&Value>) -> Self {
        let ttl_ms = ttl_ms.and_then(Value::as_u64).unwrap_or(0);
        let scope = match scope.and_then(Value::as_str) {
            Some("public") => Some(CacheScope::Public),
            Some("private") => Some(CacheScope::Private),
            _ => None,
        };
        Self { ttl_ms, scope }
    }

    /// Two results together: the smaller ttl, `private` if either is.
    pub fn combine(self, other: CacheHint) -> Self {
        let scope = match (self.scope, other.scope) {
            (Some(CacheScope::Private), _) | (_, Some(CacheScope::Private)) => {
                Some(CacheScope::Private)
            }
            (Some(CacheScope::Public), _) | (_, Some(CacheScope::Public)) => {
                Some(CacheScope::Public)
            }
            _ => None,
        };
        Self {
            ttl_ms: self.ttl_ms.min(other.ttl_ms),
            scope,
        }
    }

    /// `Option` combination: `None` (no hints, e.g. nothing listed) is
    /// neutral.
    pub fn merge(a: Option<CacheHint>, b: Option<CacheHint>) -> Option<CacheHint> {
        match (a, b) {
            (Some(a), Some(b)) => Some(a.combine(b)),
            (a, b) => a.or(b),
        }
    }

    pub fn ttl(self) -> Duration {
        Duration::from_millis(self.ttl_ms)
    }
}

/// Checks `resultType`: `Ok` for absent or `complete`, else the sentence
/// naming what the server sent.
pub fn check_result_type(result_type: Option<&Value>) -> Result<(), String> {
    match result_type {
        None | Some(Value::Null) => Ok(()),
        Some(Value::String(s)) if s == "complete" => Ok(()),
        Some(Value::String(s)) => Err(format!(
            "unknown resultType `{}` (only `complete` is expected here)",
            super::error::clip(s, 40)
        )),
        Some(other) => Err(format!(
            "resultType is not a string: {}",
            super::error::clip(&other.to_string(), 40)
        )),
    }
}

/// When the next refresh is due after a listing with `ttl`, `u` in [0, 1]
/// picking the jitter (a NaN or an out-of-range `u` is clamped). `None`:
/// the ttl is 0 and `poll_interval` stays in charge.
///
/// The refresh comes at the ttl minus up to [`TTL_JITTER`] of it, so never
/// after the result went stale (the jitter spreads servers that share a
/// ttl); never sooner than `floor` (then up to the same fraction of the
/// floor later, still jittered); never later than `poll_interval`.
/// Saturating throughout: no ttl can overflow it.
pub fn refresh_delay(
    ttl: Duration,
    floor: Duration,
    poll_interval: Duration,
    u: f64,
) -> Option<Duration> {
    if ttl.is_zero() {
        return None;
    }
    let u = if u.is_nan() { 0.0 } else { u.clamp(0.0, 1.0) };
    let early = ttl.saturating_sub(fraction(ttl, TTL_JITTER * u));
    let delay = if early < floor {
        floor.saturating_add(fraction(floor, TTL_JITTER * u))
    } else {
        early
    };
    Some(delay.min(poll_interval))
}

/// How much of the ttl the jitter may take off.
pub const TTL_JITTER: f64 = 0.1;

/// `d` times `f` (`f` in [0, 1]), saturating.
fn fraction(d: Duration, f: f64) -> Duration {
    Duration::try_from_secs_f64(d.as_secs_f64() * f).unwrap_or(Duration::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn hints_are_read_leniently() {
        let h = CacheHint::of(Some(&json!(1500)), Some(&json!("public")));
        assert_eq!(h.ttl_ms, 1500);
        assert_eq!(h.scope, Some(CacheScope::Public));
        for ttl in [json!(-5), json!(1.5), json!("10"), Value::Null] {
            assert_eq!(CacheHint::of(Some(&ttl), None).ttl_ms, 0, "{ttl}");
        }
        assert_eq!(CacheHint::of(None, Some(&json!("shared"))).scope, None);
    }

    #[test]
    fn combining_keeps_the_minimum_and_private() {
        let a = CacheHint {
            ttl_ms: 100,
            scope: Some(CacheScope::Public),
        };
        let b = CacheHint {
            ttl_ms: 50,
            scope: Some(CacheScope::Private),
        };
        assert_eq!(a.combine(b), b);
        assert_eq!(b.combine(a), b);
        let c = CacheHint {
            ttl_ms: 0,
            scope: None,
        };
        assert_eq!(
            a.combine(c),
            CacheHint {
                ttl_ms: 0,
                scope: Some(CacheScope::Public)
            }
        );
        assert_eq!(CacheHint::merge(None, Some(a)), Some(a));
        assert_eq!(CacheHint::merge(None, None), None);
    }

    #[test]
    fn result_type_complete_or_absent_only() {
        assert!(check_result_type(None).is_ok());
        assert!(check_result_type(Some(&json!("complete"))).is_ok());
        let e = check_result_type(Some(&json!("input_required"))).unwrap_err();
        assert!(e.contains("unknown resultType `input_required`"), "{e}");
        assert!(check_result_type(Some(&json!(3))).is_err());
    }

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn zero_ttl_leaves_the_poll_interval_in_charge() {
        assert_eq!(refresh_delay(Duration::ZERO, S, 600 * S, 0.5), None);
    }

    #[test]
    fn ttl_refresh_is_jittered_early_never_late() {
        let ttl = 10 * S;
        assert_eq!(refresh_delay(ttl, S, 600 * S, 0.0), Some(ttl));
        assert_eq!(
            refresh_delay(ttl, S, 600 * S, 1.0),
            Some(Duration::from_secs(9))
        );
        for i in 0..=100 {
            let d = refresh_delay(ttl, S, 600 * S, f64::from(i) / 100.0).unwrap();
            assert!(d <= ttl && d >= Duration::from_secs(9), "{d:?}");
        }
        // Out-of-range and NaN jitter are clamped.
        assert_eq!(refresh_delay(ttl, S, 600 * S, f64::NAN), Some(ttl));
        assert_eq!(
            refresh_delay(ttl, S, 600 * S, 7.0),
            Some(Duration::from_secs(9))
        );
        assert_eq!(refresh_delay(ttl, S, 600 * S, -1.0), Some(ttl));
    }

    #[test]
    fn the_floor_and_the_poll_interval_bound_it() {
        let tiny = Duration::from_millis(10);
        for u in [0.0, 0.5, 1.0] {
            let d = refresh_delay(tiny, S, 600 * S, u).unwrap();
            assert!(d >= S && d <= Duration::from_millis(1100), "{d:?}");
        }
        assert_eq!(refresh_delay(3600 * S, S, 60 * S, 0.3), Some(60 * S));
        // A floor above the poll interval: the poll interval wins.
        assert_eq!(refresh_delay(tiny, 120 * S, 60 * S, 0.0), Some(60 * S));
    }

    #[test]
    fn no_ttl_overflows() {
        let huge = Duration::from_millis(u64::MAX);
        assert_eq!(refresh_delay(huge, S, 600 * S, 1.0), Some(600 * S));
        assert_eq!(
            refresh_delay(Duration::MAX, Duration::MAX, Duration::MAX, 1.0),
            Some(Duration::MAX)
        );
        assert!(refresh_delay(Duration::MAX, S, Duration::MAX, 0.5).is_some());
    }
}
