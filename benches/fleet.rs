//! Fleet bench (`make fleet`): `FLEET_N` (default 200) agent processes of the release
//! binary against one loopback TLS coordinator (tests/support), on this machine. Prints the
//! time for all of them to authenticate, RSS per agent, and the arrivals at the coordinator
//! after (1) a deploy drain (`1001 drain:deploy` to every agent at once) and (2) a crash
//! (every connection dropped without a Close): histogram, the most in any 100 ms, median,
//! p99 and last.
//!
//! Every agent has its own identity and state files; they all share the one coordinator.
//! Arrivals are TCP accepts at the coordinator, in seconds after the first Close (or drop)
//! was sent; the Closes (drops) go out from one thread per connection released together,
//! and how long that took is printed with the figures. The test coordinator keeps a thread
//! per connection that polls its socket every 15 ms, so on a small machine the coordinator
//! side costs more CPU than the agents.
//!
//! A `harness = false` bench like benches/relay.rs (the harness needs
//! `CARGO_BIN_EXE_usepod-edge`); `USEPOD_EDGE_BIN=path` runs another build. Not part of
//! `make test`: under `cargo test --all-targets` it returns at once.

#[path = "../tests/support/mod.rs"]
mod support;

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant};

use common::arrivals::{peak, percentile, print_histogram};
use common::*;
use serde_json::json;
use support::agent::{write_config, Agent, Setup};
use support::coordinator::{Conn, Coordinator};

/// Threads authenticating the connections that come in.
const WORKERS: usize = 8;

struct Back {
    conn: Conn,
    accepted_at: Instant,
    authenticated_at: Instant,
}

/// Accept, authenticate and take capabilities from `n` connections, or as many as arrive
/// before `deadline`.
fn collect(coord: &Coordinator, n: usize, deadline: Instant) -> Vec<Back> {
    let taken = AtomicUsize::new(0);
    let out = Mutex::new(Vec::with_capacity(n));
    std::thread::scope(|scope| {
        for _ in 0..WORKERS {
            scope.spawn(|| {
                while taken.load(Ordering::SeqCst) < n {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return;
                    }
                    let Some(conn) = coord.try_accept(left.min(Duration::from_millis(200))) else {
                        continue;
                    };
                    taken.fetch_add(1, Ordering::SeqCst);
                    let auth = conn.authenticate(None);
                    conn.expect_capabilities(Duration::from_secs(30));
                    let accepted_at = conn.accepted_at;
                    out.lock().unwrap().push(Back {
                        conn,
                        accepted_at,
                        authenticated_at: auth.auth_ok_at,
                    });
                }
            });
        }
    });
    out.into_inner().unwrap()
}

/// Run `act` on every connection at once (one thread each, released together); returns
/// the instants each act returned (the Close written, or the socket shut).
fn all_at_once(backs: &[Back], act: impl Fn(&Conn) -> Instant + Sync) -> Vec<Instant> {
    let barrier = Barrier::new(backs.len());
    let done = Mutex::new(Vec::with_capacity(backs.len()));
    std::thread::scope(|scope| {
        for b in backs {
            let (barrier, done, act) = (&barrier, &done, &act);
            scope.spawn(move || {
                barrier.wait();
                let at = act(&b.conn);
                done.lock().unwrap().push(at);
            });
        }
    });
    done.into_inner().unwrap()
}

struct Event {
    name: &'static str,
    acted_over_ms: f64,
    /// TCP accepts at the coordinator, s after the first Close (drop), sorted.
    arrivals: Vec<f64>,
    /// When each agent meant to dial: its `reconnecting in N ms` line (when the bench read
    /// it) plus N, s after the first Close (drop), sorted.
    scheduled: Vec<f64>,
    /// Each agent's decided delay, s, sorted.
    decided: Vec<f64>,
    n: usize,
}

/// Each agent's next `reconnecting in N ms` line: (when it was read, N in seconds).
fn decisions(agents: &[Agent]) -> Vec<(Instant, f64)> {
    agents
        .iter()
        .filter_map(|a| {
            let (at, line) = a.wait_for_log_line("reconnecting in ", Duration::from_secs(5))?;
            let ms: f64 = line
                .split("reconnecting in ")
                .nth(1)?
                .strip_suffix("ms")?
                .parse()
                .ok()?;
            Some((at, ms / 1000.0))
        })
        .collect()
}

/// Kolmogorov-Smirnov distance between sorted `v` and the uniform distribution on
/// [0, `window`).
fn ks_uniform(v: &[f64], window: f64) -> f64 {
    let n = v.len() as f64;
    v.iter()
        .enumerate()
        .map(|(i, x)| {
            let f = (x / window).clamp(0.0, 1.0);
            (f - i as f64 / n).abs().max(((i + 1) as f64 / n - f).abs())
        })
        .fold(0.0, f64::max)
}

/// Drain or crash the whole fleet and wait for it to come back (within `window` + slack).
fn event(
    coord: &Coordinator,
    agents: &[Agent],
    backs: Vec<Back>,
    name: &'static str,
    window: Duration,
    act: impl Fn(&Conn) -> Instant + Sync,
) -> (Event, Vec<Back>) {
    let n = backs.len();
    let acted = all_at_once(&backs, act);
    let t0 = *acted.iter().min().unwrap();
    let t1 = *acted.iter().max().unwrap();
    let back = collect(coord, n, Instant::now() + window + Duration::from_secs(20));
    drop(backs);
    let since = |t: Instant| t.saturating_duration_since(t0).as_secs_f64();
    let mut arrivals: Vec<f64> = back.iter().map(|b| since(b.accepted_at)).collect();
    arrivals.sort_by(f64::total_cmp);
    let decided = decisions(agents);
    let mut scheduled: Vec<f64> = decided.iter().map(|(at, d)| since(*at) + d).collect();
    scheduled.sort_by(f64::total_cmp);
    let mut decided: Vec<f64> = decided.iter().map(|(_, d)| *d).collect();
    decided.sort_by(f64::total_cmp);
    eprintln!("fleet: {name}: {} of {n} back", back.len());
    (
        Event {
            name,
            acted_over_ms: (t1 - t0).as_secs_f64() * 1000.0,
            arrivals,
            scheduled,
            decided,
            n,
        },
        back,
    )
}

fn main() {
    if !invoked_as_bench() {
        println!("fleet bench: built; run it with `make fleet` (cargo bench --bench fleet)");
        return;
    }
    let n: usize = std::env::var("FLEET_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let setup = Setup::new("fleet");
    let bin = std::env::var("USEPOD_EDGE_BIN").unwrap_or_else(|_| support::agent::BIN.into());
    let mut paths = Vec::with_capacity(n);
    for i in 0..n {
        let mut cfg = setup.config.clone();
        let key = setup.dir.join(format!("agent{i}")).join("identity.key");
        cfg["identity"]["key_path"] = json!(key.to_str().unwrap());
        paths.push(write_config(
            setup.dir.path(),
            &format!("agent{i}.json"),
            &cfg,
        ));
    }
    eprintln!("fleet: starting {n} agents ({bin})");
    let t0 = Instant::now();
    let agents: Vec<Agent> = paths
        .iter()
        .enumerate()
        .map(|(i, p)| {
            Agent::spawn(
                &format!("agent{i}"),
                &[
                    "--config",
                    p.to_str().unwrap(),
                    "--log-level",
                    "info",
                    "run",
                ],
                &[],
                setup.dir.path(),
            )
        })
        .collect();
    let spawned = t0.elapsed();
    let backs = collect(&setup.coord, n, t0 + Duration::from_secs(120));
    assert_eq!(
        backs.len(),
        n,
        "only {} of {n} agents authenticated",
        backs.len()
    );
    let mut authed: Vec<f64> = backs
        .iter()
        .map(|b| (b.authenticated_at - t0).as_secs_f64())
        .collect();
    authed.sort_by(f64::total_cmp);
    // Connected and idle.
    std::thread::sleep(Duration::from_secs(2));
    let mut rss: Vec<f64> = agents
        .iter()
        .map(|a| status_field(a.pid(), "VmRSS") as f64)
        .collect();
    rss.sort_by(f64::total_cmp);
    let threads = status_field(agents[0].pid(), "Threads");

    let (drain, backs) = event(
        &setup.coord,
        &agents,
        backs,
        "drain",
        Duration::from_secs(5),
        |c| c.send_close(1001, "drain:deploy"),
    );
    std::thread::sleep(Duration::from_secs(2));
    let (crash, backs) = event(
        &setup.coord,
        &agents,
        backs,
        "crash",
        Duration::from_secs(4),
        Conn::drop_tcp,
    );
    let mut alive = 0;
    let mut agents = agents;
    for a in &mut agents {
        alive += usize::from(a.is_running());
    }
    drop(backs);

    println!("\n### Fleet bench: {n} agents, one loopback TLS coordinator");
    println!("Machine: {}", machine());
    println!("Binary: {bin}\n");
    println!("| figure | value |");
    println!("|---|---|");
    println!("| start {n} processes | {:.2} s |", spawned.as_secs_f64());
    println!(
        "| all authenticated (first / median / last auth_ok after the first start) | {:.2} / {:.2} / {:.2} s |",
        authed[0],
        percentile(&authed, 50.0),
        authed[n - 1]
    );
    println!(
        "| RSS per agent, connected and idle (min / median / max) | {:.0} / {:.0} / {:.0} kB |",
        rss[0],
        percentile(&rss, 50.0),
        rss[n - 1]
    );
    println!("| threads per agent | {threads} |");
    for e in [&drain, &crash] {
        for (what, a) in [
            ("accepted by the coordinator", &e.arrivals),
            ("as the agents scheduled them", &e.scheduled),
        ] {
            let (p, at) = peak(a);
            println!(
                "| {}, {what}: count / peak in any 100 ms / first / median / p99 / last | {} of {} / {} ({:.1}%, from {:.2} s) / {:.2} / {:.2} / {:.2} / {:.2} s |",
                e.name,
                a.len(),
                e.n,
                p,
                100.0 * p as f64 / e.n as f64,
                at,
                percentile(a, 0.0),
                percentile(a, 50.0),
                percentile(a, 99.0),
                percentile(a, 100.0),
            );
        }
        let window = if e.name == "drain" { 5.0 } else { 4.0 };
        println!(
            "| {}: decided delays, Kolmogorov-Smirnov distance from uniform over [0, {window} s) | {:.3} ({} agents; 5% critical value {:.3}) |",
            e.name,
            ks_uniform(&e.decided, window),
            e.decided.len(),
            1.36 / (e.decided.len().max(1) as f64).sqrt()
        );
    }
    println!("| agents still running at the end | {alive} of {n} |");
    for e in [&drain, &crash] {
        println!(
            "\n{}: {} sent to {} agents over {:.1} ms; arrivals at the coordinator:\n",
            e.name,
            if e.name == "drain" {
                "`1001 drain:deploy`"
            } else {
                "TCP drop, no Close"
            },
            e.n,
            e.acted_over_ms
        );
        let label = if e.name == "drain" {
            "the first Close"
        } else {
            "the first drop"
        };
        print_histogram(&e.arrivals, 0.0, e.n, label);
    }
    let lost = n - drain.arrivals.len() + n - crash.arrivals.len();
    if lost > 0 || alive < n {
        println!(
            "fleet: FAIL: {lost} reconnects missing, {} agents exited",
            n - alive
        );
        std::process::exit(1);
    }
}
