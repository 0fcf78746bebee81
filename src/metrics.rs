//! What the heartbeat reports: job latency (time to first byte), generation
//! speed, error rate and the last error, over sliding windows.

use crate::protocol::{ErrorCode, HeartbeatStats};
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

/// Latency and speed percentiles look this far back.
pub const STATS_WINDOW: Duration = Duration::from_secs(300);
/// `error_rate_60s`, as its name says.
pub const ERROR_WINDOW: Duration = Duration::from_secs(60);
/// Bound on remembered samples, so a busy agent's memory stays flat.
const MAX_SAMPLES: usize = 2048;

/// One finished job (or a refusal).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub at: Instant,
    /// Time from receiving the job to its first streamed chunk.
    pub ttfb_ms: Option<u32>,
    /// Output tokens per second after the first byte.
    pub tokens_per_sec: Option<f64>,
    pub error: Option<ErrorCode>,
}

/// Nearest-rank percentile of a sorted slice; None when empty.
pub fn percentile<T: Copy>(sorted: &[T], p: f64) -> Option<T> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// The pure part: samples in, heartbeat figures out.
#[derive(Debug, Default)]
pub struct Window {
    samples: VecDeque<Sample>,
}

impl Window {
    pub fn record(&mut self, s: Sample) {
        if self.samples.len() == MAX_SAMPLES {
            self.samples.pop_front();
        }
        self.samples.push_back(s);
    }

    fn prune(&mut self, now: Instant) {
        while self
            .samples
            .front()
            .is_some_and(|s| now.saturating_duration_since(s.at) > STATS_WINDOW)
        {
            self.samples.pop_front();
        }
    }

    /// (tokens_per_sec_p50, p50_latency_ms, p95_latency_ms, error_rate_60s)
    pub fn figures(&mut self, now: Instant) -> (f64, u32, u32, f64) {
        self.prune(now);
        let mut ttfb: Vec<u32> = self.samples.iter().filter_map(|s| s.ttfb_ms).collect();
        ttfb.sort_unstable();
        let mut tps: Vec<f64> = self
            .samples
            .iter()
            .filter_map(|s| s.tokens_per_sec)
            .collect();
        tps.sort_by(f64::total_cmp);
        let recent: Vec<&Sample> = self
            .samples
            .iter()
            .filter(|s| now.saturating_duration_since(s.at) <= ERROR_WINDOW)
            .collect();
        let errors = recent.iter().filter(|s| s.error.is_some()).count();
        let rate = if recent.is_empty() {
            0.0
        } else {
            errors as f64 / recent.len() as f64
        };
        (
            percentile(&tps, 50.0).unwrap_or(0.0),
            percentile(&ttfb, 50.0).unwrap_or(0),
            percentile(&ttfb, 95.0).unwrap_or(0),
            rate,
        )
    }
}

/// Totals since start, for the state file and metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    pub done: u64,
    pub failed: u64,
}

#[derive(Default)]
struct Inner {
    window: Window,
    totals: Totals,
    last_error: Option<(String, ErrorCode)>,
}

/// Shared by the job threads (writers) and the ticker (reader).
#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

impl Metrics {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        crate::lock::lock(&self.inner)
    }

    pub fn record(&self, s: Sample) {
        let mut g = self.lock();
        match s.error {
            Some(code) => {
                g.totals.failed += 1;
                g.last_error = Some((crate::clock::rfc3339(SystemTime::now()), code));
            }
            None => g.totals.done += 1,
        }
        g.window.record(s);
    }

    pub fn totals(&self) -> Totals {
        self.lock().totals
    }

    pub fn last_error(&self) -> Option<(String, ErrorCode)> {
        self.lock().last_error.clone()
    }

    pub fn heartbeat(&self, queue_depth: u32) -> HeartbeatStats {
        let mut g = self.lock();
        let (tps, p50, p95, rate) = g.window.figures(Instant::now());
        HeartbeatStats {
            queue_depth,
            tokens_per_sec_p50: tps,
            p50_latency_ms: p50,
            p95_latency_ms: p95,
            error_rate_60s: rate,
            last_error_at: g.last_error.as_ref().map(|(at, _)| at.clone()),
            last_error_code: g.last_error.as_ref().map(|(_, c)| c.as_str().to_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(at: Instant, ttfb: u32, tps: f64) -> Sample {
        Sample {
            at,
            ttfb_ms: Some(ttfb),
            tokens_per_sec: Some(tps),
            error: None,
        }
    }

    fn err(at: Instant, code: ErrorCode) -> Sample {
        Sample {
            at,
            ttfb_ms: None,
            tokens_per_sec: None,
            error: Some(code),
        }
    }

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), Some(50));
        assert_eq!(percentile(&v, 95.0), Some(95));
        assert_eq!(percentile(&[7u32], 95.0), Some(7));
        assert_eq!(percentile(&[1u32, 2], 50.0), Some(1));
        assert_eq!(percentile::<u32>(&[], 50.0), None);
    }

    #[test]
    fn empty_window_reports_zeros() {
        let mut w = Window::default();
        assert_eq!(w.figures(Instant::now()), (0.0, 0, 0, 0.0));
    }

    #[test]
    fn latency_speed_and_error_rate_over_their_windows() {
        let t0 = Instant::now();
        let mut w = Window::default();
        for i in 0..20u32 {
            w.record(ok(
                t0 + Duration::from_secs(u64::from(i)),
                100 + i * 10,
                f64::from(i),
            ));
        }
        w.record(err(t0 + Duration::from_secs(20), ErrorCode::BackendTimeout));
        let now = t0 + Duration::from_secs(21);
        let (tps, p50, p95, rate) = w.figures(now);
        assert_eq!((p50, p95), (190, 280));
        assert_eq!(tps, 9.0);
        assert!((rate - 1.0 / 21.0).abs() < 1e-9, "{rate}");
        // 70 s later only the error window has moved on; 6 min later all is gone.
        let (_, p50_later, _, rate_later) = w.figures(t0 + Duration::from_secs(90));
        assert_eq!((p50_later, rate_later), (190, 0.0));
        assert_eq!(w.figures(t0 + Duration::from_secs(400)), (0.0, 0, 0, 0.0));
    }

    #[test]
    fn memory_is_bounded() {
        let mut w = Window::default();
        let t = Instant::now();
        for i in 0..(MAX_SAMPLES as u32 + 500) {
            w.record(ok(t, i, 1.0));
        }
        assert_eq!(w.samples.len(), MAX_SAMPLES);
        assert_eq!(w.samples.front().and_then(|s| s.ttfb_ms), Some(500));
    }

    #[test]
    fn metrics_track_totals_and_the_last_error() {
        let m = Metrics::default();
        let t = Instant::now();
        m.record(ok(t, 5, 1.0));
        m.record(err(t, ErrorCode::Internal));
        m.record(err(t, ErrorCode::BackendUnreachable));
        assert_eq!(m.totals(), Totals { done: 1, failed: 2 });
        let hb = m.heartbeat(3);
        assert_eq!(hb.queue_depth, 3);
        assert_eq!(hb.last_error_code.as_deref(), Some("backend_unreachable"));
        assert!(hb.last_error_at.is_some_and(|t| t.ends_with("+00:00")));
    }
}
