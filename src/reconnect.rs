//! Pure reconnect decisions: how a session ended, and how long to wait before
//! the next one.

use std::time::Duration;

/// How a session ended, as far as the coordinator told us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseKind {
    /// 1001 `drain:deploy`: the coordinator is being redeployed.
    DrainDeploy,
    /// 1001 `drain:operator`: the operator disconnected this provider.
    DrainOperator,
    /// Any other 1001, or a Close with no code.
    Graceful,
    /// Any other code, EOF without Close, a dead link, an error.
    Unexpected,
}

impl CloseKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CloseKind::DrainDeploy => "drain:deploy",
            CloseKind::DrainOperator => "drain:operator",
            CloseKind::Graceful => "graceful",
            CloseKind::Unexpected => "unexpected",
        }
    }

    /// Graceful kinds are routine (INFO); the rest deserve a WARN.
    pub fn log_level(self) -> log::Level {
        match self {
            CloseKind::Unexpected => log::Level::Warn,
            _ => log::Level::Info,
        }
    }

    pub fn is_drain(self) -> bool {
        matches!(self, CloseKind::DrainDeploy | CloseKind::DrainOperator)
    }
}

/// Classifies a received Close frame: `None` = a Close without a status code.
pub fn classify_close(frame: Option<(u16, &str)>) -> CloseKind {
    match frame {
        None => CloseKind::Graceful,
        Some((1001, "drain:deploy")) => CloseKind::DrainDeploy,
        Some((1001, "drain:operator")) => CloseKind::DrainOperator,
        Some((1001, _)) => CloseKind::Graceful,
        Some(_) => CloseKind::Unexpected,
    }
}

pub const BASE_DELAY: Duration = Duration::from_secs(1);
pub const MAX_DELAY: Duration = Duration::from_secs(60);
/// Consecutive pre-auth failures after which one extra ERROR is logged.
pub const ALARM_AFTER: u32 = 10;
/// Window over which the first reconnect after a drain is spread.
pub const DRAIN_SPREAD: Duration = Duration::from_secs(5);

/// `base · 2^(n-1)`, capped, times a jitter factor in [0.8, 1.2); `n` ≥ 1 is the
/// number of consecutive failures so far; `unit` is uniform in [0, 1).
pub fn backoff_delay(consecutive_failures: u32, unit: f64) -> Duration {
    let exp = consecutive_failures.saturating_sub(1).min(16);
    let raw = BASE_DELAY.saturating_mul(1u32 << exp).min(MAX_DELAY);
    raw.mul_f64(0.8 + 0.4 * unit.clamp(0.0, 0.999_999))
}

/// What to do after a session ended.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    pub delay: Duration,
    pub consecutive_failures: u32,
    /// True exactly when the failure count reaches [`ALARM_AFTER`].
    pub alarm: bool,
}

/// Reconnect policy state: the count of consecutive pre-auth failures.
#[derive(Debug, Default, Clone)]
pub struct Backoff {
    failures: u32,
}

impl Backoff {
    /// `authenticated`: the session got past auth_ok (resets the escalation).
    pub fn next(&mut self, authenticated: bool, kind: CloseKind, unit: f64) -> Decision {
        if authenticated {
            self.failures = 0;
            let delay = if kind.is_drain() {
                // A fleet drained together must not return in the same second.
                DRAIN_SPREAD.mul_f64(unit.clamp(0.0, 1.0))
            } else {
                backoff_delay(1, unit)
            };
            return Decision {
                delay,
                consecutive_failures: 0,
                alarm: false,
            };
        }
        self.failures = self.failures.saturating_add(1);
        Decision {
            delay: backoff_delay(self.failures, unit),
            consecutive_failures: self.failures,
            alarm: self.failures == ALARM_AFTER,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_classification() {
        assert_eq!(
            classify_close(Some((1001, "drain:deploy"))),
            CloseKind::DrainDeploy
        );
        assert_eq!(
            classify_close(Some((1001, "drain:operator"))),
            CloseKind::DrainOperator
        );
        assert_eq!(classify_close(Some((1001, "bye"))), CloseKind::Graceful);
        assert_eq!(classify_close(Some((1001, ""))), CloseKind::Graceful);
        assert_eq!(classify_close(None), CloseKind::Graceful);
        assert_eq!(
            classify_close(Some((1000, "drain:deploy"))),
            CloseKind::Unexpected
        );
        assert_eq!(classify_close(Some((1011, ""))), CloseKind::Unexpected);
        assert_eq!(CloseKind::Unexpected.log_level(), log::Level::Warn);
        assert_eq!(CloseKind::DrainDeploy.log_level(), log::Level::Info);
    }

    #[test]
    fn schedule_doubles_to_sixty_seconds_with_jitter_bounds() {
        let secs = |n, u| backoff_delay(n, u).as_secs_f64();
        assert_eq!(secs(1, 0.5), 1.0);
        assert_eq!(secs(2, 0.5), 2.0);
        assert_eq!(secs(3, 0.5), 4.0);
        assert_eq!(secs(7, 0.5), 60.0);
        assert_eq!(secs(1000, 0.5), 60.0);
        assert!((secs(1, 0.0) - 0.8).abs() < 1e-9);
        assert!(secs(1, 1.0) < 1.2);
        assert!((secs(7, 0.0) - 48.0).abs() < 1e-9);
    }

    #[test]
    fn pre_auth_failures_escalate_and_alarm_once() {
        let mut b = Backoff::default();
        let ds: Vec<Decision> = (0..12)
            .map(|_| b.next(false, CloseKind::Unexpected, 0.5))
            .collect();
        assert_eq!(ds[0].delay, Duration::from_secs(1));
        assert_eq!(ds[3].delay, Duration::from_secs(8));
        assert_eq!(ds[11].delay, Duration::from_secs(60));
        assert_eq!(ds.iter().filter(|d| d.alarm).count(), 1);
        assert!(ds[9].alarm && ds[9].consecutive_failures == 10);
    }

    #[test]
    fn authenticated_session_resets() {
        let mut b = Backoff::default();
        for _ in 0..5 {
            b.next(false, CloseKind::Unexpected, 0.5);
        }
        let d = b.next(true, CloseKind::Unexpected, 0.5);
        assert_eq!(
            (d.delay, d.consecutive_failures),
            (Duration::from_secs(1), 0)
        );
        assert_eq!(
            b.next(false, CloseKind::Unexpected, 0.5).delay,
            Duration::from_secs(1)
        );
    }

    #[test]
    fn drains_spread_the_first_reconnect() {
        let mut b = Backoff::default();
        let lo = b.next(true, CloseKind::DrainDeploy, 0.0).delay;
        let hi = b.next(true, CloseKind::DrainOperator, 0.99).delay;
        assert_eq!(lo, Duration::ZERO);
        assert!(hi > Duration::from_secs(4) && hi <= DRAIN_SPREAD);
        // after the spread, a failing reconnect escalates from the start again
        assert_eq!(
            b.next(false, CloseKind::Unexpected, 0.5).delay,
            Duration::from_secs(1)
        );
    }

    /// The spread itself: drains decided with the supervisor's own randomness land evenly
    /// over the whole window, where ordinary reconnects all fall within 0.8..1.2 s.
    #[test]
    fn drain_delays_are_spread_evenly_over_the_window() {
        const N: usize = 10_000;
        const BUCKETS: usize = 5;
        let mut b = Backoff::default();
        let mut counts = [0usize; BUCKETS];
        let mut like_plain = 0;
        let mut sum = 0.0;
        for i in 0..N {
            let kind = if i % 2 == 0 {
                CloseKind::DrainDeploy
            } else {
                CloseKind::DrainOperator
            };
            let d = b.next(true, kind, crate::jitter::unit());
            assert_eq!((d.consecutive_failures, d.alarm), (0, false));
            assert!(d.delay <= DRAIN_SPREAD, "{:?}", d.delay);
            let x = d.delay.as_secs_f64() / DRAIN_SPREAD.as_secs_f64();
            counts[((x * BUCKETS as f64) as usize).min(BUCKETS - 1)] += 1;
            if (0.8..1.2).contains(&d.delay.as_secs_f64()) {
                like_plain += 1;
            }
            sum += d.delay.as_secs_f64();
        }
        // Uniform: 1/5 per second of the window. A binomial share of 0.2 over 10,000 draws
        // has a standard deviation of 0.004, so +-0.03 fails only a real bias.
        for (i, n) in counts.iter().enumerate() {
            let share = *n as f64 / N as f64;
            assert!(
                (0.17..0.23).contains(&share),
                "second {i} of the drain window got {share:.3} of the reconnects: {counts:?}"
            );
        }
        let plain_share = like_plain as f64 / N as f64;
        assert!(
            plain_share < 0.12,
            "{plain_share:.3} of drain reconnects fall in the ordinary 0.8..1.2 s (uniform: 0.08)"
        );
        let mean = sum / N as f64;
        assert!((2.4..2.6).contains(&mean), "mean drain delay {mean:.3} s");
        // The mapping itself is linear over the window.
        for u in [0.0, 0.1, 0.5, 0.9] {
            assert_eq!(
                b.next(true, CloseKind::DrainDeploy, u).delay,
                DRAIN_SPREAD.mul_f64(u)
            );
        }
    }
}
