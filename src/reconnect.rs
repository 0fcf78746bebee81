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

/// The first reconnect window: after a session that got past `auth_ok` ends (a coordinator
/// crash drops the whole fleet at once), and after the first failed attempt. Full jitter
/// over [0, 4 s) puts the median reconnect at 2 s and at most 2.5% of a fleet in any
/// 100 ms (0.1 / 4), under the 3% a coordinator restart is sized for; 1 s +-20% put 25% of
/// the fleet in one 100 ms. `make fleet-sim` prints what this does to 100,000 agents.
pub const FIRST_WINDOW: Duration = Duration::from_secs(4);
/// The longest sleep: the window stops doubling here.
pub const MAX_DELAY: Duration = Duration::from_secs(60);
/// Consecutive pre-auth failures after which one extra ERROR is logged.
pub const ALARM_AFTER: u32 = 10;
/// Default window over which the first reconnect after a drain is spread
/// (`coordinator.drain_spread_s`).
pub const DRAIN_SPREAD: Duration = Duration::from_secs(5);

/// The window the `n`th reconnect in a row is drawn from (`n` >= 1): 4 s doubling to 60 s.
pub fn backoff_window(consecutive_failures: u32) -> Duration {
    let exp = consecutive_failures.saturating_sub(1).min(16);
    FIRST_WINDOW.saturating_mul(1u32 << exp).min(MAX_DELAY)
}

/// Full jitter: a uniform draw over the whole window, `unit` uniform in [0, 1).
///
/// Chosen over equal jitter (half the window fixed, half drawn) and decorrelated jitter (a
/// draw from [base, 3 x the previous sleep]) after Marc Brooker's comparison of the three
/// ("Exponential Backoff And Jitter", AWS Architecture Blog, 2015), where full jitter made
/// the fewest calls to the server for about the same time to finish. What matters here:
/// a fleet's arrivals in any 100 ms are bounded by the densest part of the draw, and a
/// uniform draw has no dense part, where any fixed share of the sleep (equal jitter's half,
/// the old 1 s x [0.8, 1.2)) brings the fleet back as one wall. And full jitter depends on
/// the failure count alone, not on the previous sleep: escalation, reset and the alarm stay
/// as they were, and each window is exact and testable, where decorrelated jitter's reach
/// after n failures is a random walk.
pub fn backoff_delay(consecutive_failures: u32, unit: f64) -> Duration {
    backoff_window(consecutive_failures).mul_f64(unit.clamp(0.0, 1.0))
}

/// What to do after a session ended.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    pub delay: Duration,
    pub consecutive_failures: u32,
    /// True exactly when the failure count reaches [`ALARM_AFTER`].
    pub alarm: bool,
}

/// Reconnect policy state: the count of consecutive pre-auth failures, and the drain
/// window from the config.
#[derive(Debug, Clone)]
pub struct Backoff {
    failures: u32,
    drain_spread: Duration,
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff::new(DRAIN_SPREAD)
    }
}

impl Backoff {
    pub fn new(drain_spread: Duration) -> Backoff {
        Backoff {
            failures: 0,
            drain_spread,
        }
    }

    /// `authenticated`: the session got past auth_ok (resets the escalation).
    pub fn next(&mut self, authenticated: bool, kind: CloseKind, unit: f64) -> Decision {
        if authenticated {
            self.failures = 0;
            let delay = if kind.is_drain() {
                // A fleet drained together must not return in the same second.
                self.drain_spread.mul_f64(unit.clamp(0.0, 1.0))
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
    fn the_window_doubles_from_four_to_sixty_seconds_and_the_draw_spans_all_of_it() {
        let secs = |n| backoff_window(n).as_secs_f64();
        let windows: Vec<f64> = [1, 2, 3, 4, 5, 6, 16, 17, 1000, u32::MAX]
            .into_iter()
            .map(secs)
            .collect();
        assert_eq!(
            windows,
            [4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0, 60.0, 60.0, 60.0]
        );
        // Zero failures (the first reconnect after a session) uses the first window too.
        assert_eq!(backoff_window(0), FIRST_WINDOW);
        // Full jitter: linear over the whole window, from 0 (no floor) to its end.
        for n in [1, 2, 3, 4, 5, 9] {
            for u in [0.0, 0.001, 0.25, 0.5, 0.999] {
                assert_eq!(
                    backoff_delay(n, u),
                    backoff_window(n).mul_f64(u),
                    "n={n} u={u}"
                );
            }
            assert!(backoff_delay(n, 0.999_999) < backoff_window(n));
            assert_eq!(backoff_delay(n, 1.5), backoff_window(n));
            assert_eq!(backoff_delay(n, -1.0), Duration::ZERO);
        }
    }

    #[test]
    fn pre_auth_failures_escalate_and_alarm_once() {
        let mut b = Backoff::default();
        let ds: Vec<Decision> = (0..12)
            .map(|_| b.next(false, CloseKind::Unexpected, 0.5))
            .collect();
        let delays: Vec<u64> = ds.iter().map(|d| d.delay.as_secs()).collect();
        assert_eq!(delays, [2, 4, 8, 16, 30, 30, 30, 30, 30, 30, 30, 30]);
        assert_eq!(ds.iter().filter(|d| d.alarm).count(), 1);
        assert!(ds[9].alarm && ds[9].consecutive_failures == 10);
    }

    #[test]
    fn authenticated_session_resets() {
        let mut b = Backoff::default();
        for _ in 0..5 {
            b.next(false, CloseKind::Unexpected, 0.5);
        }
        for kind in [CloseKind::Unexpected, CloseKind::Graceful] {
            let d = b.next(true, kind, 0.5);
            assert_eq!(
                (d.delay, d.consecutive_failures, d.alarm),
                (Duration::from_secs(2), 0, false)
            );
        }
        let d = b.next(false, CloseKind::Unexpected, 0.5);
        assert_eq!(
            (d.delay, d.consecutive_failures),
            (Duration::from_secs(2), 1)
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
            Duration::from_secs(2)
        );
    }

    #[test]
    fn the_drain_window_comes_from_the_config_and_only_drains_use_it() {
        let mut b = Backoff::new(Duration::from_secs(20));
        assert_eq!(
            b.next(true, CloseKind::DrainDeploy, 0.5).delay,
            Duration::from_secs(10)
        );
        let d = b.next(true, CloseKind::DrainOperator, 0.99).delay;
        assert!((d.as_secs_f64() - 19.8).abs() < 1e-6, "{d:?}");
        assert_eq!(
            b.next(true, CloseKind::Unexpected, 0.5).delay,
            Duration::from_secs(2)
        );
        assert_eq!(
            b.next(false, CloseKind::DrainDeploy, 0.5).delay,
            Duration::from_secs(2),
            "a drain close before auth_ok is a failure like any other"
        );
    }

    #[test]
    fn the_config_default_drain_window_is_drain_spread() {
        let over = crate::config::Overrides::default();
        let c = crate::config::Config::from_str("f", "{}", &over).unwrap();
        assert_eq!(c.coordinator.drain_spread, DRAIN_SPREAD);
    }

    /// The crash case: when a coordinator falls over, every agent's first reconnect is drawn
    /// at once. With the supervisor's own randomness the draws must cover the whole window
    /// evenly: at most 3% of them in any 100 ms and the median about 2 s. Back at
    /// 1 s x [0.8, 1.2), a quarter of them would share each 100 ms of 0.8..1.2 s.
    #[test]
    fn the_first_reconnect_after_a_session_is_spread_evenly_over_four_seconds() {
        const N: usize = 100_000;
        const SLICES: usize = 40;
        let mut b = Backoff::default();
        let mut draws = Vec::with_capacity(N);
        let mut slices = [0usize; SLICES];
        for i in 0..N {
            let kind = if i % 2 == 0 {
                CloseKind::Unexpected
            } else {
                CloseKind::Graceful
            };
            let d = b.next(true, kind, crate::jitter::unit());
            assert_eq!((d.consecutive_failures, d.alarm), (0, false));
            assert!(d.delay < FIRST_WINDOW, "{:?}", d.delay);
            let s = d.delay.as_secs_f64();
            slices[(s * 10.0) as usize] += 1;
            draws.push(s);
        }
        draws.sort_by(f64::total_cmp);
        // Each 100 ms slice expects 2.5%; one slice's share has a standard deviation of
        // 0.05 points over 100,000 draws, so 2.0..3.0% fails only a real bias.
        for (i, n) in slices.iter().enumerate() {
            let share = *n as f64 / N as f64;
            assert!(
                (0.020..=0.030).contains(&share),
                "{}..{} ms got {:.2}% of the first reconnects (uniform: 2.5%)",
                i * 100,
                i * 100 + 100,
                share * 100.0
            );
        }
        // Any 100 ms, not only the aligned ones.
        let mut peak = 0;
        let mut lo = 0;
        for hi in 0..N {
            while draws[hi] - draws[lo] >= 0.1 {
                lo += 1;
            }
            peak = peak.max(hi + 1 - lo);
        }
        let peak_share = peak as f64 / N as f64;
        assert!(
            peak_share <= 0.03,
            "{:.2}% of the first reconnects fall in one 100 ms",
            peak_share * 100.0
        );
        let median = draws[N / 2];
        assert!((1.95..2.05).contains(&median), "median {median:.3} s");
        // Both ends of the window are reached: no floor, no ceiling below 4 s.
        assert!(
            draws[0] < 0.01 && draws[N - 1] > 3.99,
            "{} {}",
            draws[0],
            draws[N - 1]
        );
    }

    /// The spread itself: drains decided with the supervisor's own randomness land evenly
    /// over the whole window (the old plain reconnect fell within 0.8..1.2 s; the share
    /// there is checked to be no more than uniform's).
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
