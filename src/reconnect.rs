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

/// The first reconnect window, after a session that got past `auth_ok` ends (a coordinator
/// crash drops the whole fleet at once) or after the first failed attempt since start.
/// Drawn uniformly over [0, 4 s): the median reconnect is 2 s and at most 2.5% of a fleet
/// (0.1 / 4) comes back in any 100 ms, under the 3% a coordinator restart is sized for,
/// where 1 s x [0.8, 1.2) brought a quarter of it back in one 100 ms.
pub const FIRST_WINDOW: Duration = Duration::from_secs(4);
/// Windows stop doubling here, so two attempts in a row are at most 60 s apart (the
/// longest sleep, as before).
pub const MAX_WINDOW: Duration = Duration::from_secs(30);
/// Consecutive pre-auth failures after which one extra ERROR is logged.
pub const ALARM_AFTER: u32 = 10;
/// Default window over which the first reconnect after a drain is spread
/// (`coordinator.drain_spread_s`).
pub const DRAIN_SPREAD: Duration = Duration::from_secs(5);

/// The length of the `n`th window of a run of reconnects (`n` >= 1): 4, 8, 16, then 30 s.
pub fn window(n: u32) -> Duration {
    let exp = n.saturating_sub(1).min(16);
    FIRST_WINDOW.saturating_mul(1u32 << exp).min(MAX_WINDOW)
}

/// What to do after a session ended.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    pub delay: Duration,
    pub consecutive_failures: u32,
    /// True exactly when the failure count reaches [`ALARM_AFTER`].
    pub alarm: bool,
}

/// Reconnect policy: full jitter over windows laid end to end.
///
/// Every attempt is a uniform draw over the whole of its window (full jitter, no fixed
/// part); the windows double from 4 s to 30 s; and each window begins where the previous
/// one ended (or when the failed attempt ended, if that was later), not when the last
/// attempt failed.
///
/// Full jitter rather than equal jitter (half fixed, half drawn) or decorrelated jitter
/// (a draw from [base, 3 x the previous sleep]), after Marc Brooker's comparison of the
/// three ("Exponential Backoff And Jitter", AWS Architecture Blog, 2015), where it made
/// the fewest calls for about the same time to finish; here because the most arrivals in
/// any 100 ms is set by the densest part of the draw, and a uniform draw has none: any
/// fixed share of the sleep (equal jitter's half, the old 1 s x [0.8, 1.2)) brings the
/// fleet back as one wall, and decorrelated jitter piles the agents that drew short sleeps
/// near its floor.
///
/// End to end rather than starting at each failure, because Brooker's full jitter
/// restarts the window at every failure: when the coordinator comes back a few seconds
/// after a crash, the agents whose first dial was refused early are back in the same
/// seconds as those still waiting for their first: `make fleet-sim`, run against that
/// variant while choosing, put 4.9% of the fleet in one 100 ms for a coordinator down 3 s
/// (3.3% at 1 s, 4.0% at 2 s). With
/// the windows end to end, an agent makes exactly one attempt per window and every window
/// is at least 4 s long, so at any moment, after an outage of any length, the fleet's
/// attempts in 100 ms are at most 0.1 / 4 = 2.5% of it. The rest is as before: the
/// windows grow with each failure before `auth_ok`, a session past `auth_ok` starts over
/// at the first, and the failure count drives the alarm.
#[derive(Debug, Clone)]
pub struct Backoff {
    failures: u32,
    drain_spread: Duration,
    /// The window the last attempt was drawn from: where it ends, and its number in the
    /// run. None until the first decision.
    last: Option<(Duration, u32)>,
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
            last: None,
        }
    }

    /// `authenticated`: the session got past auth_ok (starts the run over); `unit` is
    /// uniform in [0, 1); `now` is a monotonic clock reading (any fixed origin).
    pub fn next(
        &mut self,
        authenticated: bool,
        kind: CloseKind,
        unit: f64,
        now: Duration,
    ) -> Decision {
        let unit = unit.clamp(0.0, 1.0);
        if authenticated {
            self.failures = 0;
            // A fleet drained together must not return in the same second.
            let len = if kind.is_drain() {
                self.drain_spread
            } else {
                FIRST_WINDOW
            };
            self.last = Some((now + len, 1));
            return Decision {
                delay: len.mul_f64(unit),
                consecutive_failures: 0,
                alarm: false,
            };
        }
        self.failures = self.failures.saturating_add(1);
        let (start, n) = match self.last {
            // The first failure since start: the run begins now.
            None => (now, 1),
            Some((end, n)) => (end.max(now), n.saturating_add(1)),
        };
        let len = window(n);
        self.last = Some((start + len, n));
        Decision {
            delay: (start - now) + len.mul_f64(unit),
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

    const T0: Duration = Duration::from_secs(1000);

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn windows_double_from_four_to_thirty_seconds() {
        let lens: Vec<u64> = [1, 2, 3, 4, 5, 6, 17, 1000, u32::MAX]
            .into_iter()
            .map(|n| window(n).as_secs())
            .collect();
        assert_eq!(lens, [4, 8, 16, 30, 30, 30, 30, 30, 30]);
        assert_eq!(window(0), FIRST_WINDOW);
    }

    #[test]
    fn the_first_reconnect_after_a_session_is_drawn_over_the_whole_first_window() {
        let mut b = Backoff::default();
        for kind in [CloseKind::Unexpected, CloseKind::Graceful] {
            for u in [0.0, 0.001, 0.25, 0.5, 0.999_999] {
                let d = b.next(true, kind, u, T0);
                assert_eq!(d.delay, FIRST_WINDOW.mul_f64(u), "{kind:?} u={u}");
                assert_eq!((d.consecutive_failures, d.alarm), (0, false));
            }
            // No floor, and never the end of the window itself.
            assert_eq!(b.next(true, kind, -1.0, T0).delay, Duration::ZERO);
            assert!(b.next(true, kind, 0.999_999_9, T0).delay < FIRST_WINDOW);
        }
    }

    /// Failures that cost no time (a refused dial): each attempt lands mid-window with
    /// `unit` 0.5, the windows [0, 4), [4, 12), [12, 28), [28, 58), [58, 88), ... s after
    /// the first failure.
    #[test]
    fn pre_auth_failures_escalate_and_alarm_once() {
        let mut b = Backoff::default();
        let mut now = T0;
        let mut at = Vec::new();
        let mut ds = Vec::new();
        for _ in 0..12 {
            let d = b.next(false, CloseKind::Unexpected, 0.5, now);
            now += d.delay;
            at.push((now - T0).as_secs_f64());
            ds.push(d);
        }
        assert_eq!(
            at,
            [2.0, 8.0, 20.0, 43.0, 73.0, 103.0, 133.0, 163.0, 193.0, 223.0, 253.0, 283.0]
        );
        let delays: Vec<f64> = ds.iter().map(|d| d.delay.as_secs_f64()).collect();
        assert_eq!(
            delays,
            [2.0, 6.0, 12.0, 23.0, 30.0, 30.0, 30.0, 30.0, 30.0, 30.0, 30.0, 30.0]
        );
        let counts: Vec<u32> = ds.iter().map(|d| d.consecutive_failures).collect();
        assert_eq!(counts, (1..=12).collect::<Vec<u32>>());
        assert_eq!(ds.iter().filter(|d| d.alarm).count(), 1);
        assert!(ds[9].alarm && ds[9].consecutive_failures == 10);
    }

    /// The property the fleet's flat arrivals rest on: one attempt in each window, drawn
    /// over all of it, windows one after the other and never shorter than the first, so
    /// no instant gets more than 1/4 s of any agent's attempts. Attempts here take from
    /// nothing to 20 s (a refused dial, a handshake timeout), past the end of the next
    /// window too; the sleep never exceeds 60 s.
    #[test]
    fn each_attempt_lands_in_a_window_of_its_own_whatever_the_attempts_cost() {
        let mut b = Backoff::default();
        let mut now = T0;
        let mut prev_end = None::<Duration>;
        let mut n = 0u32;
        for i in 0..20_000u32 {
            let authenticated = i % 97 == 0;
            let u = crate::jitter::unit();
            let d = b.next(authenticated, CloseKind::Unexpected, u, now);
            let (start, len) = if authenticated {
                n = 1;
                (now, FIRST_WINDOW)
            } else {
                n += 1;
                (prev_end.map_or(now, |e| e.max(now)), window(n))
            };
            let attempt = now + d.delay;
            assert!(
                attempt >= start && attempt < start + len,
                "decision {i}: attempt at {attempt:?}, window {start:?} + {len:?}"
            );
            assert!(d.delay <= Duration::from_secs(60), "{:?}", d.delay);
            assert!(len >= FIRST_WINDOW);
            prev_end = Some(start + len);
            // The attempt itself, then its failure.
            let cost = match i % 5 {
                0 => 0.0,
                1 => 0.05,
                2 => 1.5,
                3 => 10.0,
                _ => 20.0 * crate::jitter::unit(),
            };
            now = attempt + secs(cost);
        }
    }

    #[test]
    fn a_session_past_auth_ok_starts_the_run_over() {
        let mut b = Backoff::default();
        let mut now = T0;
        for _ in 0..5 {
            now += b.next(false, CloseKind::Unexpected, 0.5, now).delay;
        }
        for kind in [CloseKind::Unexpected, CloseKind::Graceful] {
            let d = b.next(true, kind, 0.5, now);
            assert_eq!(
                (d.delay, d.consecutive_failures, d.alarm),
                (secs(2.0), 0, false)
            );
        }
        // That reconnect fails 2 s later, mid-window: the next is drawn over the second
        // window, [4, 12) s after the session ended, and counts as failure 1.
        let d = b.next(false, CloseKind::Unexpected, 0.5, now + secs(2.0));
        assert_eq!((d.delay, d.consecutive_failures), (secs(6.0), 1));
    }

    #[test]
    fn drains_spread_the_first_reconnect() {
        let mut b = Backoff::default();
        let lo = b.next(true, CloseKind::DrainDeploy, 0.0, T0).delay;
        let hi = b.next(true, CloseKind::DrainOperator, 0.99, T0).delay;
        assert_eq!(lo, Duration::ZERO);
        assert!(hi > Duration::from_secs(4) && hi <= DRAIN_SPREAD);
        // After the spread a failing reconnect escalates from the second window on, which
        // begins when the drain window ends.
        let d = b.next(false, CloseKind::Unexpected, 0.5, T0 + hi);
        assert_eq!(T0 + hi + d.delay, T0 + DRAIN_SPREAD + secs(4.0));
        assert_eq!(d.consecutive_failures, 1);
    }

    #[test]
    fn the_drain_window_comes_from_the_config_and_only_drains_use_it() {
        let mut b = Backoff::new(Duration::from_secs(20));
        assert_eq!(
            b.next(true, CloseKind::DrainDeploy, 0.5, T0).delay,
            Duration::from_secs(10)
        );
        let d = b.next(true, CloseKind::DrainOperator, 0.99, T0).delay;
        assert!((d.as_secs_f64() - 19.8).abs() < 1e-6, "{d:?}");
        assert_eq!(
            b.next(true, CloseKind::Unexpected, 0.5, T0).delay,
            Duration::from_secs(2)
        );
        let mut fresh = Backoff::new(Duration::from_secs(20));
        assert_eq!(
            fresh.next(false, CloseKind::DrainDeploy, 0.5, T0).delay,
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
            let d = b.next(true, kind, crate::jitter::unit(), T0);
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
            let d = b.next(true, kind, crate::jitter::unit(), T0);
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
                b.next(true, CloseKind::DrainDeploy, u, T0).delay,
                DRAIN_SPREAD.mul_f64(u)
            );
        }
    }
}
