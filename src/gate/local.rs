//! Local first: the device's owner comes before the marketplace. Each backend kind and
//! the GPU give a signal, judged against the agent's own jobs; a tracker per backend
//! and one for the GPU turn the signals into "step aside" after `busy` of foreign
//! load, and back after `idle` of quiet. A backend that steps aside leaves its pools;
//! the whole device steps aside for the GPU, or when no backend in a pool is left
//! ([`whole_device`]). Everything here is pure; the gate's monitor does the asking.
//!
//! Per source (each sample compares what the source reports with our own jobs on it):
//!
//! - llama-server `GET /slots`: slots processing (`is_processing`, or `state` 1 on
//!   older builds) beyond our jobs running on that server.
//! - vLLM `GET /metrics`: `vllm:num_requests_running` + `vllm:num_requests_waiting`
//!   (summed over models and engines) beyond our jobs running on that server.
//! - Ollama `GET /api/ps` has no per-request state. A loaded model that appeared, or
//!   whose `expires_at` moved (Ollama pushes it on every request), since the previous
//!   sample is a request; it is ours when one of our jobs on that model ran at either
//!   sample or was admitted between them, else it is somebody else's. A model that
//!   merely stays loaded (with `keep_alive` -1, say) is not use. Since a request is
//!   seen once rather than for as long as it runs, the monitor holds it as busy for
//!   `busy` (see [`Hold`]): one request that is not ours is enough to step aside.
//! - GPU load (Jetson's nvgpu `load`; `nvidia-smi` elsewhere) at or above
//!   `gpu_busy_pct`, judged only while none of our jobs runs: with ours running the
//!   load cannot be told apart, so the sample says nothing.

use crate::backend::answers::{Running, Slot};
use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// What one sample says about foreign load.
#[derive(Debug, Clone, PartialEq)]
pub enum Signal {
    /// Somebody else is using it; says who and how.
    Busy(String),
    Quiet,
    /// This sample cannot tell (no answer, or only our own load to see).
    Unknown,
}

/// Our own jobs on one backend, from the job registry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ours {
    /// Running now.
    pub running: u32,
    /// Per model: (running now, admitted since the agent started).
    pub models: BTreeMap<String, (u32, u64)>,
}

/// llama-server's `/slots` answer.
pub fn llamacpp(slots: &[Slot], ours: u32) -> Signal {
    let busy = slots.iter().filter(|s| s.busy()).count() as u32;
    let foreign = busy.saturating_sub(ours);
    if foreign == 0 {
        return Signal::Quiet;
    }
    Signal::Busy(format!(
        "{foreign} of its {} slots busy with requests that are not ours",
        slots.len()
    ))
}

/// The sum of every sample of the named metrics in Prometheus text; None when none is there.
pub fn prometheus_sum(text: &str, names: &[&str]) -> Option<f64> {
    let mut total = None;
    for line in text.lines().map(str::trim) {
        if line.starts_with('#') {
            continue;
        }
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        if !names.contains(&&line[..name_end]) {
            continue;
        }
        // The value follows the labels; a timestamp may follow it.
        let after_labels = match line[name_end..].find('}') {
            Some(i) if line[name_end..].starts_with('{') => &line[name_end + i + 1..],
            _ => &line[name_end..],
        };
        if let Some(v) = after_labels
            .split_whitespace()
            .next()
            .and_then(crate::decimal::plain_decimal)
        {
            if v.is_finite() {
                total = Some(total.unwrap_or(0.0) + v);
            }
        }
    }
    total
}

/// vLLM's `/metrics` text.
pub fn vllm(metrics: &str, ours: u32) -> Signal {
    let Some(n) = prometheus_sum(
        metrics,
        &["vllm:num_requests_running", "vllm:num_requests_waiting"],
    ) else {
        return Signal::Unknown;
    };
    let foreign = (n.round().max(0.0) as u64).saturating_sub(u64::from(ours));
    if foreign == 0 {
        return Signal::Quiet;
    }
    Signal::Busy(format!(
        "{foreign} request(s) running or waiting that are not ours"
    ))
}

/// One model in Ollama's `/api/ps` answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    pub name: String,
    pub expires_at: String,
}

/// Ollama's `/api/ps` answer: its loaded models (`model`, else `name`).
pub fn ollama_ps(running: Running) -> Option<Vec<Loaded>> {
    let models = running.models?;
    Some(
        models
            .into_iter()
            .filter_map(|m| {
                Some(Loaded {
                    name: m.model.or(m.name)?,
                    expires_at: m.expires_at.unwrap_or_default(),
                })
            })
            .collect(),
    )
}

/// Ollama between two samples: `before`/`ours_before` from the previous one.
pub fn ollama(before: Option<(&[Loaded], &Ours)>, now: &[Loaded], ours_now: &Ours) -> Signal {
    let Some((before, ours_before)) = before else {
        return Signal::Unknown;
    };
    let ran = |model: &str| {
        let (run_now, admitted_now) = ours_now.models.get(model).copied().unwrap_or_default();
        let (run_before, admitted_before) =
            ours_before.models.get(model).copied().unwrap_or_default();
        run_now > 0 || run_before > 0 || admitted_now != admitted_before
    };
    let used: Vec<&str> = now
        .iter()
        .filter(|m| {
            let moved = before
                .iter()
                .find(|b| b.name == m.name)
                .is_none_or(|b| b.expires_at != m.expires_at);
            moved && !ran(&m.name)
        })
        .map(|m| m.name.as_str())
        .collect();
    if used.is_empty() {
        return Signal::Quiet;
    }
    Signal::Busy(format!(
        "model(s) {} used by requests that are not ours",
        used.join(", ")
    ))
}

/// GPU load in percent, judged only while none of our jobs runs.
pub fn gpu(load_pct: Option<f64>, ours_running: u32, busy_pct: f64) -> Signal {
    match load_pct {
        None => Signal::Unknown,
        Some(_) if ours_running > 0 => Signal::Unknown,
        Some(p) if p >= busy_pct => {
            Signal::Busy(format!("GPU {p:.0}% busy with none of our jobs running"))
        }
        Some(_) => Signal::Quiet,
    }
}

/// All sources together: busy if any is, quiet if any can tell and none is busy.
pub fn combine(signals: &[(String, Signal)]) -> Signal {
    let busy: Vec<String> = signals
        .iter()
        .filter_map(|(who, s)| match s {
            Signal::Busy(d) => Some(format!("{who}: {d}")),
            _ => None,
        })
        .collect();
    if !busy.is_empty() {
        return Signal::Busy(busy.join("; "));
    }
    if signals.iter().any(|(_, s)| *s == Signal::Quiet) {
        Signal::Quiet
    } else {
        Signal::Unknown
    }
}

/// Keeps a busy look standing for a while, for sources that report events rather
/// than state: an Ollama request is seen once (when it moved the model's expiry), not
/// for as long as it runs.
#[derive(Debug, Default, Clone)]
pub struct Hold {
    busy: Option<(Instant, String)>,
}

impl Hold {
    /// The signal to use now: `s`, or a Busy seen less than `hold` ago.
    pub fn apply(&mut self, s: Signal, now: Instant, hold: Duration) -> Signal {
        if let Signal::Busy(d) = &s {
            self.busy = Some((now + hold, d.clone()));
            return s;
        }
        match &self.busy {
            Some((until, d)) if now < *until => Signal::Busy(d.clone()),
            _ => {
                self.busy = None;
                s
            }
        }
    }
}

/// When the agent stepped aside, and what it is waiting for.
#[derive(Debug, Clone, PartialEq)]
pub struct Yield {
    pub since: SystemTime,
    pub detail: String,
    /// When it comes back if it stays quiet (set once quiet began).
    pub until: Option<SystemTime>,
}

/// Foreign load over time: busy for `busy` (every sample in between busy or unknown)
/// steps aside; quiet for `idle` comes back. An unknown sample neither starts, ends
/// nor breaks a stretch.
#[derive(Debug, Default, Clone)]
pub struct Tracker {
    busy_since: Option<Instant>,
    quiet_since: Option<(Instant, SystemTime)>,
    yielded: Option<Yield>,
}

impl Tracker {
    pub fn step(
        &mut self,
        s: &Signal,
        mono: Instant,
        wall: SystemTime,
        busy: Duration,
        idle: Duration,
    ) {
        match s {
            Signal::Busy(detail) => {
                self.quiet_since = None;
                let since = *self.busy_since.get_or_insert(mono);
                match &mut self.yielded {
                    Some(y) => {
                        y.detail = detail.clone();
                        y.until = None;
                    }
                    None if mono.saturating_duration_since(since) >= busy => {
                        self.yielded = Some(Yield {
                            since: wall,
                            detail: detail.clone(),
                            until: None,
                        });
                    }
                    None => {}
                }
            }
            Signal::Quiet => {
                self.busy_since = None;
                let Some(y) = &mut self.yielded else {
                    return;
                };
                let (q_mono, q_wall) = *self.quiet_since.get_or_insert((mono, wall));
                if mono.saturating_duration_since(q_mono) >= idle {
                    self.yielded = None;
                    self.quiet_since = None;
                } else {
                    y.until = Some(q_wall + idle);
                }
            }
            Signal::Unknown => {}
        }
    }

    pub fn yielded(&self) -> Option<&Yield> {
        self.yielded.as_ref()
    }
}

/// Local first per backend: a backend whose owner uses it leaves its pools (the model
/// stays offered on the others), and the whole device steps aside only while the
/// GPU-wide signal says so (`gpu`) or every backend in a pool has stepped aside
/// (`members`, one per backend, so nothing would be left to offer).
pub fn whole_device(gpu: Option<&Yield>, members: &[Option<&Yield>]) -> Option<Yield> {
    let all_out = !members.is_empty() && members.iter().all(Option::is_some);
    let backends = all_out.then(|| {
        let out: Vec<&Yield> = members.iter().flatten().copied().collect();
        Yield {
            // It began when the last one stepped aside, and ends when the first is back.
            since: out.iter().map(|y| y.since).max().unwrap_or(UNIX_EPOCH),
            detail: joined(&out),
            until: out.iter().filter_map(|y| y.until).min(),
        }
    });
    match (gpu, backends) {
        (None, b) => b,
        (Some(g), None) => Some(g.clone()),
        // Both stand: it began with the first, and ends when neither does.
        (Some(g), Some(b)) => Some(Yield {
            since: g.since.min(b.since),
            detail: joined(&[g, &b]),
            until: g.until.zip(b.until).map(|(x, y)| x.max(y)),
        }),
    }
}

fn joined(ys: &[&Yield]) -> String {
    let details: Vec<&str> = ys.iter().map(|y| y.detail.as_str()).collect();
    details.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read<T: serde::de::DeserializeOwned>(text: &str) -> T {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn llamacpp_slots_beyond_ours() {
        let slots: Vec<Slot> = read(
            r#"[{"id":0,"is_processing":true},{"id":1,"is_processing":true},{"id":2,"is_processing":false}]"#,
        );
        assert_eq!(llamacpp(&slots, 2), Signal::Quiet);
        assert_eq!(
            llamacpp(&slots, 3),
            Signal::Quiet,
            "a queued job of ours is not there yet"
        );
        assert_eq!(
            llamacpp(&slots, 1),
            Signal::Busy("1 of its 3 slots busy with requests that are not ours".into())
        );
        let old: Vec<Slot> = read(r#"[{"id":0,"state":1},{"id":1,"state":0}]"#);
        assert!(matches!(llamacpp(&old, 0), Signal::Busy(_)));
        assert_eq!(llamacpp(&[], 0), Signal::Quiet);
        // `--no-slots` answers an error object: not a list, so no answer at all.
        assert!(serde_json::from_str::<Vec<Slot>>(r#"{"error":"disabled"}"#).is_err());
    }

    #[test]
    fn vllm_metrics_beyond_ours() {
        let text =
            "# HELP vllm:num_requests_running Number of requests in model execution batches.\n\
            # TYPE vllm:num_requests_running gauge\n\
            vllm:num_requests_running{engine=\"0\",model_name=\"m\"} 2.0\n\
            vllm:num_requests_waiting{engine=\"0\",model_name=\"m\"} 1.0\n\
            vllm:num_requests_swapped{model_name=\"m\"} 9.0\n\
            vllm:num_requests_running_total 100\n";
        assert_eq!(
            prometheus_sum(text, &["vllm:num_requests_running"]),
            Some(2.0)
        );
        assert_eq!(vllm(text, 3), Signal::Quiet);
        assert_eq!(
            vllm(text, 1),
            Signal::Busy("2 request(s) running or waiting that are not ours".into())
        );
        assert_eq!(
            vllm("vllm:num_requests_running 1 1712345678000\n", 0),
            Signal::Busy("1 request(s) running or waiting that are not ours".into())
        );
        assert_eq!(vllm("other_metric 5\n", 0), Signal::Unknown);
        assert_eq!(
            vllm("vllm:num_requests_running{a=\"}\"} NaN\n", 0),
            Signal::Unknown
        );
    }

    fn loaded(name: &str, exp: &str) -> Loaded {
        Loaded {
            name: name.into(),
            expires_at: exp.into(),
        }
    }

    fn ours(model: &str, running: u32, admitted: u64) -> Ours {
        Ours {
            running,
            models: [(model.to_string(), (running, admitted))].into(),
        }
    }

    #[test]
    fn ollama_use_that_is_not_ours() {
        let none = Ours::default();
        let before = vec![loaded("a:latest", "T1")];
        // First sample: nothing to compare with.
        assert_eq!(ollama(None, &before, &none), Signal::Unknown);
        // Nothing moved.
        assert_eq!(
            ollama(Some((&before, &none)), &before, &none),
            Signal::Quiet
        );
        // Somebody loaded another model, or used ours, while we ran nothing.
        let other = vec![loaded("a:latest", "T1"), loaded("b:latest", "T2")];
        assert_eq!(
            ollama(Some((&before, &none)), &other, &none),
            Signal::Busy("model(s) b:latest used by requests that are not ours".into())
        );
        let moved = vec![loaded("a:latest", "T9")];
        assert!(matches!(
            ollama(Some((&before, &none)), &moved, &none),
            Signal::Busy(_)
        ));
        // Our own job explains it: running at either sample, or admitted between.
        assert_eq!(
            ollama(
                Some((&before, &ours("a:latest", 1, 1))),
                &moved,
                &ours("a:latest", 0, 1)
            ),
            Signal::Quiet
        );
        assert_eq!(
            ollama(Some((&before, &none)), &moved, &ours("a:latest", 1, 1)),
            Signal::Quiet
        );
        assert_eq!(
            ollama(
                Some((&before, &ours("a:latest", 0, 4))),
                &moved,
                &ours("a:latest", 0, 5)
            ),
            Signal::Quiet
        );
        assert!(matches!(
            ollama(
                Some((&before, &ours("a:latest", 0, 5))),
                &moved,
                &ours("a:latest", 0, 5)
            ),
            Signal::Busy(_)
        ));
        // An unloaded model is no use.
        assert_eq!(ollama(Some((&before, &none)), &[], &none), Signal::Quiet);
        assert_eq!(
            ollama_ps(read(
                r#"{"models":[{"name":"a:latest","model":"a:latest","expires_at":"2026-01-01T00:00:00Z","size_vram":5},{"name":"b"}]}"#
            )),
            Some(vec![
                loaded("a:latest", "2026-01-01T00:00:00Z"),
                loaded("b", "")
            ])
        );
        assert_eq!(ollama_ps(read("{}")), None);
    }

    #[test]
    fn gpu_load_only_without_our_jobs() {
        assert_eq!(
            gpu(Some(80.0), 0, 30.0),
            Signal::Busy("GPU 80% busy with none of our jobs running".into())
        );
        assert_eq!(
            gpu(Some(30.0), 0, 30.0),
            Signal::Busy("GPU 30% busy with none of our jobs running".into())
        );
        assert_eq!(gpu(Some(29.9), 0, 30.0), Signal::Quiet);
        assert_eq!(gpu(Some(99.0), 1, 30.0), Signal::Unknown);
        assert_eq!(gpu(None, 0, 30.0), Signal::Unknown);
    }

    #[test]
    fn sources_combine() {
        let q = ("a".to_string(), Signal::Quiet);
        let u = ("b".to_string(), Signal::Unknown);
        let b = ("c".to_string(), Signal::Busy("x".into()));
        assert_eq!(combine(&[q.clone(), u.clone()]), Signal::Quiet);
        assert_eq!(combine(std::slice::from_ref(&u)), Signal::Unknown);
        assert_eq!(combine(&[]), Signal::Unknown);
        assert_eq!(combine(&[q, b, u]), Signal::Busy("c: x".into()));
    }

    #[test]
    fn a_busy_look_holds() {
        let t0 = Instant::now();
        let s = |ms: u64| t0 + Duration::from_millis(ms);
        let hold = Duration::from_secs(1);
        let mut h = Hold::default();
        assert_eq!(h.apply(Signal::Quiet, s(0), hold), Signal::Quiet);
        let b = Signal::Busy("x".into());
        assert_eq!(h.apply(b.clone(), s(100), hold), b);
        assert_eq!(h.apply(Signal::Quiet, s(600), hold), b);
        assert_eq!(h.apply(Signal::Unknown, s(1099), hold), b);
        assert_eq!(h.apply(Signal::Quiet, s(1100), hold), Signal::Quiet);
        assert_eq!(h.apply(Signal::Unknown, s(1200), hold), Signal::Unknown);
    }

    #[test]
    fn busy_for_long_enough_then_quiet_for_long_enough() {
        let t0 = Instant::now();
        let w0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let (busy, idle) = (Duration::from_secs(10), Duration::from_secs(60));
        let at = |s: u64| (t0 + Duration::from_secs(s), w0 + Duration::from_secs(s));
        let b = Signal::Busy("llama".into());
        let mut t = Tracker::default();
        let step = |t: &mut Tracker, s: &Signal, secs: u64| {
            let (m, w) = at(secs);
            t.step(s, m, w, busy, idle);
        };
        step(&mut t, &b, 0);
        step(&mut t, &b, 5);
        assert!(t.yielded().is_none(), "not yet busy for 10 s");
        // A quiet sample breaks the stretch; an unknown one does not.
        step(&mut t, &Signal::Quiet, 8);
        step(&mut t, &b, 9);
        step(&mut t, &Signal::Unknown, 15);
        step(&mut t, &b, 18);
        assert!(t.yielded().is_none());
        step(&mut t, &b, 19);
        let y = t.yielded().unwrap().clone();
        assert_eq!(
            (y.since, y.until, y.detail.as_str()),
            (w0 + Duration::from_secs(19), None, "llama")
        );
        // Quiet starts the clock back; busy again stops it.
        step(&mut t, &Signal::Quiet, 20);
        assert_eq!(
            t.yielded().unwrap().until,
            Some(w0 + Duration::from_secs(80))
        );
        step(&mut t, &b, 50);
        assert_eq!(t.yielded().unwrap().until, None);
        step(&mut t, &Signal::Quiet, 60);
        step(&mut t, &Signal::Unknown, 100);
        step(&mut t, &Signal::Quiet, 119);
        assert!(t.yielded().is_some(), "59 s of quiet");
        step(&mut t, &Signal::Quiet, 120);
        assert!(t.yielded().is_none(), "60 s of quiet");
        assert_eq!(t.yielded().map(|y| y.since), None);
        // And the same holds afresh.
        step(&mut t, &b, 121);
        assert!(t.yielded().is_none());
    }

    #[test]
    fn the_device_steps_aside_for_the_gpu_or_when_every_backend_has() {
        let w = |s: u64| UNIX_EPOCH + Duration::from_secs(s);
        let y = |since: u64, until: Option<u64>, d: &str| Yield {
            since: w(since),
            detail: d.into(),
            until: until.map(w),
        };
        let (a, b, g) = (
            y(10, None, "a busy"),
            y(20, Some(90), "b busy"),
            y(5, None, "GPU"),
        );
        // One backend of two: it leaves its pools, the device serves on.
        assert_eq!(whole_device(None, &[Some(&a), None]), None);
        assert_eq!(whole_device(None, &[]), None);
        // Every backend: from the last to step aside until the first is back.
        assert_eq!(
            whole_device(None, &[Some(&a), Some(&b)]),
            Some(y(20, Some(90), "a busy; b busy"))
        );
        assert_eq!(whole_device(None, &[Some(&a)]), Some(a.clone()));
        // The GPU alone is enough.
        assert_eq!(whole_device(Some(&g), &[Some(&a), None]), Some(g.clone()));
        // Both: from the first, until neither stands (unknown while one is still busy).
        assert_eq!(
            whole_device(Some(&g), &[Some(&b)]),
            Some(y(5, None, "GPU; b busy"))
        );
        let g_quiet = y(5, Some(60), "GPU");
        assert_eq!(
            whole_device(Some(&g_quiet), &[Some(&b)]),
            Some(y(5, Some(90), "GPU; b busy"))
        );
    }
}
