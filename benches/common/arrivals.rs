//! Arrivals at a coordinator, as `make fleet-sim` and `make fleet` report them: the most in
//! any 100 ms, percentiles, and a text histogram. Times are seconds after the event, sorted.

/// A peak is counted over any window this long (not only the aligned ones).
pub const PEAK_WINDOW_S: f64 = 0.1;

/// The most of sorted `times` within any `PEAK_WINDOW_S`, and where that window starts.
pub fn peak(times: &[f64]) -> (usize, f64) {
    let (mut best, mut at, mut lo) = (0, 0.0, 0);
    for hi in 0..times.len() {
        while times[hi] - times[lo] >= PEAK_WINDOW_S {
            lo += 1;
        }
        if hi + 1 - lo > best {
            best = hi + 1 - lo;
            at = times[lo];
        }
    }
    (best, at)
}

/// Nearest-rank percentile (0..=100) of sorted `v`; NaN when empty.
pub fn percentile(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// A bin width in 1-2.5-5 steps from 50 ms giving at most ~24 rows over `span` seconds.
fn bin_width(span: f64) -> f64 {
    let mut w = 0.05;
    for step in [2.0, 2.5, 2.0].into_iter().cycle() {
        if span / w <= 24.0 {
            return w;
        }
        w *= step;
    }
    unreachable!()
}

/// Sorted `times` from `from` on, binned, each bin with its count, its share of `of` and a
/// bar; in a Markdown code block.
pub fn print_histogram(times: &[f64], from: f64, of: usize, label: &str) {
    let to = times.last().copied().unwrap_or(from).max(from);
    let w = bin_width(to - from);
    let bins = ((to - from) / w).floor() as usize + 1;
    let mut counts = vec![0usize; bins];
    for t in times {
        counts[(((t - from).max(0.0) / w) as usize).min(bins - 1)] += 1;
    }
    let most = counts.iter().copied().max().unwrap_or(1).max(1);
    println!("```");
    println!("  seconds after {label:<16} agents   share");
    for (i, c) in counts.iter().enumerate() {
        let lo = from + i as f64 * w;
        println!(
            "  {:7.2} - {:7.2}    {:7}  {:6.2}%  {}",
            lo,
            lo + w,
            c,
            100.0 * *c as f64 / of.max(1) as f64,
            "#".repeat((c * 40).div_ceil(most))
        );
    }
    println!("```");
}
