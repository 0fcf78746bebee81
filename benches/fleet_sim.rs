//! Fleet simulation (`make fleet-sim`): 100,000 agents through (a) a coordinator crash,
//! (b) a deploy drain and (c) a coordinator that stays down for 60 s, each agent deciding
//! its reconnects with the agent's own code (the library's `reconnect` and `jitter`
//! modules), and every decision is the supervisor's call, `Backoff::next(authenticated, kind,
//! unit, now)`, with simulated time and a seeded generator fed through
//! `jitter::unit_from_bits`. Same seed, same output, in about a second.
//!
//! Prints, per scenario, the arrival histogram at the coordinator, the most arrivals in
//! any 100 ms as a share of the fleet, and the median / p99 / max time to reconnect; then
//! checks the goals of issue 16 and exits 1 if one is missed: (a) at most 3% in any
//! 100 ms with the median at most 2.5 s; (c) at most 3% in any 100 ms after the
//! coordinator is back.
//!
//! Model: agents do not interact (the coordinator is not a bottleneck here; the point is
//! what the fleet asks of it), an arrival is the instant an agent dials, and a dial to a
//! coordinator that is down fails at once (a refused connection: the most attempts) or
//! after `FLEET_SIM_DIAL_S`. `FLEET_SIM_N`, `FLEET_SIM_SEED`, `FLEET_SIM_DOWN_S` and
//! `FLEET_SIM_DRAIN_SPREAD_S` (`coordinator.drain_spread_s`) change the run. Outages of
//! 1 to 30 s are run too, and held to the same 3%. Under `cargo test --all-targets` (no
//! `--bench`) the same simulation runs and the goals are checked, with the summary only.

#[path = "common/arrivals.rs"]
mod arrivals;

use std::time::{Duration, Instant};

use arrivals::{peak, percentile as pct, print_histogram};
use usepod_edge::jitter;
use usepod_edge::reconnect::{self, Backoff, CloseKind, DRAIN_SPREAD};

const GOAL_PEAK_SHARE: f64 = 0.03;
const GOAL_CRASH_MEDIAN_S: f64 = 2.5;

/// SplitMix64 (Steele, Lea, Flood 2014): tiny, seedable, and good enough to stand in for
/// the per-process `RandomState` the agents draw from.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn unit(&mut self) -> f64 {
        jitter::unit_from_bits(self.next_u64())
    }
}

struct Scenario {
    tag: &'static str,
    title: String,
    /// How each agent's authenticated session ended.
    close: CloseKind,
    /// The coordinator refuses every dial before this many seconds.
    down_s: f64,
}

struct Outcome {
    /// When each agent dialled the coordinator that let it in, sorted (s since the event).
    arrivals: Vec<f64>,
    /// Dials refused while the coordinator was down, sorted.
    refused: Vec<f64>,
    most_failures: u32,
    alarms: usize,
}

#[derive(Clone, Copy)]
struct Params {
    n: usize,
    drain_spread: Duration,
    /// How long a refused dial takes.
    dial: Duration,
}

fn simulate(sc: &Scenario, p: &Params, rng: &mut SplitMix64) -> Outcome {
    let mut arrivals = Vec::with_capacity(p.n);
    let mut refused = Vec::new();
    let mut most_failures = 0;
    let mut alarms = 0;
    let down = Duration::from_secs_f64(sc.down_s);
    for _ in 0..p.n {
        // What supervisor::run does after a session ends, with the agent's own Backoff;
        // the clock starts at the event.
        let mut backoff = Backoff::new(p.drain_spread);
        let mut t = backoff
            .next(true, sc.close, rng.unit(), Duration::ZERO)
            .delay;
        while t < down {
            refused.push(t.as_secs_f64());
            let failed_at = t + p.dial;
            let d = backoff.next(false, CloseKind::Unexpected, rng.unit(), failed_at);
            most_failures = most_failures.max(d.consecutive_failures);
            alarms += usize::from(d.alarm);
            t = failed_at + d.delay;
        }
        arrivals.push(t.as_secs_f64());
    }
    arrivals.sort_by(f64::total_cmp);
    refused.sort_by(f64::total_cmp);
    Outcome {
        arrivals,
        refused,
        most_failures,
        alarms,
    }
}

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Row {
    tag: &'static str,
    title: String,
    peak_share: f64,
    peak_at: f64,
    median: f64,
    p99: f64,
    max: f64,
    /// For (c): the same three counted from the coordinator's return.
    after_return: Option<(f64, f64, f64)>,
    refused: usize,
    refused_peak_share: f64,
    refused_peak_at: f64,
}

fn main() {
    let verbose = std::env::args().any(|a| a == "--bench");
    let n: usize = env_or("FLEET_SIM_N", 100_000);
    let seed: u64 = env_or("FLEET_SIM_SEED", 16);
    let down_s: f64 = env_or("FLEET_SIM_DOWN_S", 60.0);
    let params = Params {
        n,
        drain_spread: Duration::from_secs_f64(env_or(
            "FLEET_SIM_DRAIN_SPREAD_S",
            DRAIN_SPREAD.as_secs_f64(),
        )),
        dial: Duration::from_secs_f64(env_or("FLEET_SIM_DIAL_S", 0.0)),
    };
    let scenarios = [
        Scenario {
            tag: "(a)",
            title: "crash: every connection dropped without a Close, coordinator back at once"
                .into(),
            close: CloseKind::Unexpected,
            down_s: 0.0,
        },
        Scenario {
            tag: "(b)",
            title: "deploy drain: 1001 drain:deploy to every agent, new coordinator ready".into(),
            close: CloseKind::DrainDeploy,
            down_s: 0.0,
        },
        Scenario {
            tag: "(c)",
            title: format!(
                "outage: connections dropped, every dial refused for {down_s} s, then back"
            ),
            close: CloseKind::Unexpected,
            down_s,
        },
    ];
    let started = Instant::now();
    let mut rng = SplitMix64(seed);
    let mut rows = Vec::new();
    if verbose {
        println!(
            "\n### Fleet simulation: {n} agents, seed {seed}, drain window {:.1} s, a refused \
             dial takes {:.2} s\n",
            params.drain_spread.as_secs_f64(),
            params.dial.as_secs_f64()
        );
    }
    for sc in &scenarios {
        let out = simulate(sc, &params, &mut rng);
        let a = &out.arrivals;
        let (p, p_at) = peak(a);
        let (rp, rp_at) = peak(&out.refused);
        let row = Row {
            tag: sc.tag,
            title: sc.title.clone(),
            peak_share: p as f64 / n as f64,
            peak_at: p_at,
            median: pct(a, 50.0),
            p99: pct(a, 99.0),
            max: a[a.len() - 1],
            after_return: (sc.down_s > 0.0).then(|| {
                (
                    pct(a, 50.0) - sc.down_s,
                    pct(a, 99.0) - sc.down_s,
                    a[a.len() - 1] - sc.down_s,
                )
            }),
            refused: out.refused.len(),
            refused_peak_share: rp as f64 / n as f64,
            refused_peak_at: rp_at,
        };
        if verbose {
            println!("#### {} {}\n", sc.tag, sc.title);
            println!(
                "Arrivals: peak {} agents ({:.2}% of the fleet) in the 100 ms from {:.2} s; \
                 median {:.2} s, p99 {:.2} s, max {:.2} s after the event.",
                p,
                row.peak_share * 100.0,
                row.peak_at,
                row.median,
                row.p99,
                row.max
            );
            if let Some((m, p99, max)) = row.after_return {
                println!(
                    "After the coordinator's return: median {m:.2} s, p99 {p99:.2} s, max \
                     {max:.2} s. While it was down: {} refused dials ({:.1} per agent, the \
                     most by one agent {}; {} agents logged the {}-failure ERROR), at most \
                     {:.2}% of the fleet in any 100 ms (from {:.2} s).",
                    row.refused,
                    row.refused as f64 / n as f64,
                    out.most_failures,
                    out.alarms,
                    reconnect::ALARM_AFTER,
                    row.refused_peak_share * 100.0,
                    row.refused_peak_at
                );
            }
            println!();
            print_histogram(
                a,
                sc.down_s,
                n,
                if sc.down_s > 0.0 {
                    "the event"
                } else {
                    "the close"
                },
            );
            println!();
        }
        rows.push(row);
    }
    println!("| scenario ({n} agents, seed {seed}) | peak in any 100 ms | median | p99 | max |");
    println!("|---|---|---|---|---|");
    for r in &rows {
        let times = match r.after_return {
            Some((m, p99, max)) => format!(
                "{:.2} s ({m:.2} s after the return) | {:.2} s ({p99:.2} s) | {:.2} s ({max:.2} s)",
                r.median, r.p99, r.max
            ),
            None => format!("{:.2} s | {:.2} s | {:.2} s", r.median, r.p99, r.max),
        };
        println!(
            "| {} {} | {:.2}% | {times} |",
            r.tag,
            r.title,
            r.peak_share * 100.0
        );
    }
    // Beyond the goals of issue 16: a coordinator back within a few seconds is where
    // retries drawn from a window starting at each failure met the first draws of the
    // rest of the fleet (src/reconnect.rs, Backoff).
    println!(
        "\nThe outage for other lengths (every dial refused until then; arrivals after it):\n"
    );
    let mut sweep_worst = (0.0f64, 0.0f64);
    println!("| down for | peak in any 100 ms | median after the return | p99 after the return |");
    println!("|---|---|---|---|");
    for down_s in [1.0, 2.0, 3.0, 5.0, 10.0, 30.0] {
        let sc = Scenario {
            tag: "",
            title: String::new(),
            close: CloseKind::Unexpected,
            down_s,
        };
        let a = simulate(&sc, &params, &mut rng).arrivals;
        let share = peak(&a).0 as f64 / n as f64;
        if share > sweep_worst.0 {
            sweep_worst = (share, down_s);
        }
        println!(
            "| {down_s} s | {:.2}% | {:.2} s | {:.2} s |",
            100.0 * share,
            pct(&a, 50.0) - down_s,
            pct(&a, 99.0) - down_s
        );
    }
    // A peak share is a large-fleet figure: a few hundred agents drawing from the same
    // window show a higher one by chance alone (`make fleet` runs 200).
    println!(
        "\nThe crash (a) for smaller fleets, many runs each: the peak in any 100 ms by chance:\n"
    );
    println!("| agents | runs | peak in any 100 ms: median run | 95th percentile | 99th |");
    println!("|---|---|---|---|---|");
    for (size, runs) in [(200usize, 1000usize), (1_000, 200), (10_000, 20)] {
        let p = Params { n: size, ..params };
        let mut shares: Vec<f64> = (0..runs)
            .map(|_| peak(&simulate(&scenarios[0], &p, &mut rng).arrivals).0 as f64 / size as f64)
            .collect();
        shares.sort_by(f64::total_cmp);
        println!(
            "| {size} | {runs} | {:.2}% | {:.2}% | {:.2}% |",
            100.0 * pct(&shares, 50.0),
            100.0 * pct(&shares, 95.0),
            100.0 * pct(&shares, 99.0)
        );
    }
    let mut failed = Vec::new();
    let crash = &rows[0];
    if crash.peak_share > GOAL_PEAK_SHARE || crash.median > GOAL_CRASH_MEDIAN_S {
        failed.push(format!(
            "(a) peak {:.2}% (goal <= 3%), median {:.2} s (goal <= 2.5 s)",
            crash.peak_share * 100.0,
            crash.median
        ));
    }
    let outage = &rows[2];
    // Every arrival in (c) comes after the return, so its peak is the peak after it.
    if outage.peak_share > GOAL_PEAK_SHARE {
        failed.push(format!(
            "(c) peak after the return {:.2}% (goal <= 3%)",
            outage.peak_share * 100.0
        ));
    }
    if sweep_worst.0 > GOAL_PEAK_SHARE {
        failed.push(format!(
            "a {} s outage: peak after the return {:.2}% (<= 3% expected of every length)",
            sweep_worst.1,
            sweep_worst.0 * 100.0
        ));
    }
    println!("\nsimulated in {:.2} s", started.elapsed().as_secs_f64());
    if failed.is_empty() {
        println!(
            "fleet-sim: PASS ((a) peak <= 3% of the fleet in any 100 ms, median <= 2.5 s; \
             (c) and every other outage length: peak <= 3% after the return)"
        );
    } else {
        println!("fleet-sim: FAIL: {}", failed.join("; "));
        std::process::exit(1);
    }
}
