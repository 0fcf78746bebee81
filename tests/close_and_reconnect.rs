//! How a session ends (docs/protocol.md, "Closing and reconnecting"): each close kind is
//! classified and logged at its level, the closing handshake is completed, and the agent
//! comes back on the right schedule (src/reconnect.rs): the first reconnect after a session
//! drawn over [0, 4 s), after a drain over `coordinator.drain_spread_s` (5 s by default),
//! and failures before auth_ok escalating over windows of 4, 8, 16, 30 s laid end to end.

mod support;

use std::ops::RangeInclusive;
use std::time::{Duration, Instant};

use serde_json::json;
use support::agent::{Agent, Setup};
use support::{secs, watchdog};

const S5: Duration = Duration::from_secs(5);

enum How {
    Close(u16, &'static str),
    BareClose,
    DropTcp,
}

/// The log line for `kind` must exist and carry `level` (simple_logger writes the level
/// before the message).
fn assert_close_logged(agent: &Agent, kind: &str, level: &str) {
    let needle = format!("session closed: {kind}");
    let Some((_, line)) = agent.wait_for_log_line(&needle, S5) else {
        panic!("no `{needle}` log line\n{}", agent.logs());
    };
    let prefix = &line[..line.find(&needle).unwrap()];
    assert!(
        prefix.contains(level),
        "`{needle}` must be logged at {level}: {line:?}"
    );
}

/// The delay the agent decided after a session ended, from its `reconnecting in N ms` log
/// line (the next one after any found earlier).
fn decided_delay_ms(agent: &Agent) -> u64 {
    let Some((_, line)) = agent.wait_for_log_line("reconnecting in ", S5) else {
        panic!("no `reconnecting in` log line\n{}", agent.logs());
    };
    let after = &line[line.find("reconnecting in ").unwrap() + "reconnecting in ".len()..];
    after
        .strip_suffix("ms")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the delay in {line:?}"))
}

/// One authenticated session ended by `how`; checks the log line, the closing handshake,
/// that the delay the agent decided lies in `decided` (ms), and that the agent reconnects
/// after exactly that delay (plus the time a reconnect takes).
fn close_case(tag: &str, how: How, kind: &str, level: &str, decided: RangeInclusive<u64>) {
    close_case_in(Setup::new(tag), tag, how, kind, level, decided);
}

fn close_case_in(
    s: Setup,
    tag: &str,
    how: How,
    kind: &str,
    level: &str,
    decided: RangeInclusive<u64>,
) {
    let (agent, conn, _) = s.spawn_and_authenticate(Some("prov-close"));
    conn.expect_capabilities(S5);
    let ended_at = match how {
        How::Close(code, reason) => conn.send_close(code, reason),
        How::BareClose => conn.send_close_bare(),
        How::DropTcp => conn.drop_tcp(),
    };
    assert!(
        conn.wait_closed(Duration::from_secs(3)),
        "{tag}: the connection did not finish closing"
    );
    if !matches!(how, How::DropTcp) {
        assert!(
            conn.close_acknowledged(),
            "{tag}: the agent did not answer the coordinator's Close (closing handshake \
             incomplete; ended: {:?})",
            conn.ended()
        );
    }
    assert_close_logged(&agent, kind, level);
    let delay_ms = decided_delay_ms(&agent);
    assert!(
        decided.contains(&delay_ms),
        "{tag}: decided to reconnect in {delay_ms} ms, expected {decided:?} ms"
    );
    let delay = delay_ms as f64 / 1000.0;
    let wait = Duration::from_secs_f64(delay + RECONNECT_SLACK + 1.0);
    let Some(next) = s.coord.try_accept(wait) else {
        panic!("{tag}: no reconnect within {wait:?}\n{}", agent.logs());
    };
    let gap = secs(next.accepted_at - ended_at);
    // The close came before the decision, and the agent sleeps the whole delay after it.
    assert!(
        gap >= delay - 0.005 && gap <= delay + RECONNECT_SLACK,
        "{tag}: reconnected {gap:.3} s after the close, having decided on {delay:.3} s"
    );
    // The reconnect is a full session again.
    next.authenticate(Some("prov-close"));
    next.expect_capabilities(S5);
}

// After a session past auth_ok that did not end in a drain, the first reconnect is drawn
// over the whole first window, [0, 4 s) (src/reconnect.rs, FIRST_WINDOW; the distribution
// is tested there, and across a fleet of agents below). 1 s x [0.8, 1.2) would be 800..1199.
const FIRST_MS: RangeInclusive<u64> = 0..=3999;
// After a drain the first reconnect is spread over 0..5 s (src/reconnect.rs, DRAIN_SPREAD;
// the spread's distribution is tested there, and across a fleet of agents below).
const DRAIN_MS: RangeInclusive<u64> = 0..=5000;
// From the close to the next TCP accept, beyond the decided delay: the closing handshake,
// a new TCP connection; generous for a loaded 2-core machine.
const RECONNECT_SLACK: f64 = 0.9;
// The fleet test's bound on a drain reconnect: the spread plus that slack.
const DRAIN_MAX: f64 = 5.0 + RECONNECT_SLACK;

#[test]
fn close_1001_drain_deploy_is_a_deploy_drain() {
    let _w = watchdog(Duration::from_secs(20), "close_drain_deploy");
    close_case(
        "deploy",
        How::Close(1001, "drain:deploy"),
        "drain:deploy",
        "INFO",
        DRAIN_MS,
    );
}

#[test]
fn close_1001_drain_operator_is_an_operator_drain() {
    let _w = watchdog(Duration::from_secs(20), "close_drain_operator");
    close_case(
        "operator",
        How::Close(1001, "drain:operator"),
        "drain:operator",
        "INFO",
        DRAIN_MS,
    );
}

/// `coordinator.drain_spread_s` sets the drain window: 50 ms here, which a 5 s window would
/// honour by chance once in a hundred runs.
#[test]
fn the_drain_window_is_the_configured_one() {
    let _w = watchdog(Duration::from_secs(20), "drain_spread_config");
    let mut s = Setup::new("drainspread");
    s.set("/coordinator/drain_spread_s", json!(0.05));
    close_case_in(
        s,
        "drainspread",
        How::Close(1001, "drain:deploy"),
        "drain:deploy",
        "INFO",
        0..=49,
    );
}

#[test]
fn close_1001_with_another_reason_is_graceful() {
    let _w = watchdog(Duration::from_secs(15), "close_1001_other");
    close_case(
        "going_away",
        How::Close(1001, "coordinator shutting down"),
        "graceful",
        "INFO",
        FIRST_MS,
    );
}

#[test]
fn close_1001_without_reason_is_graceful() {
    let _w = watchdog(Duration::from_secs(15), "close_1001_no_reason");
    close_case(
        "going_away_empty",
        How::Close(1001, ""),
        "graceful",
        "INFO",
        FIRST_MS,
    );
}

#[test]
fn a_bare_close_is_graceful() {
    let _w = watchdog(Duration::from_secs(15), "close_bare");
    close_case("bare", How::BareClose, "graceful", "INFO", FIRST_MS);
}

/// docs/protocol.md, "Closing and reconnecting": only 1001 (or a bare Close) is graceful;
/// any other code is unexpected, 1000 included (usepod-agent's classify_close does the
/// same).
#[test]
fn close_1000_is_unexpected() {
    let _w = watchdog(Duration::from_secs(15), "close_1000");
    close_case(
        "normal",
        How::Close(1000, "done"),
        "unexpected",
        "WARN",
        FIRST_MS,
    );
}

#[test]
fn close_1011_is_unexpected() {
    let _w = watchdog(Duration::from_secs(15), "close_1011");
    close_case(
        "internal",
        How::Close(1011, "internal error"),
        "unexpected",
        "WARN",
        FIRST_MS,
    );
}

#[test]
fn a_tcp_drop_without_close_is_unexpected() {
    let _w = watchdog(Duration::from_secs(15), "tcp_drop");
    close_case("tcpdrop", How::DropTcp, "unexpected", "WARN", FIRST_MS);
}

/// `n` agents, each with its own identity, authenticated and past capabilities.
fn fleet(s: &Setup, n: usize) -> (Vec<Agent>, Vec<support::coordinator::Conn>) {
    let mut agents = Vec::new();
    let mut conns = Vec::new();
    for i in 0..n {
        // Each agent has its own identity file.
        let mut cfg = s.config.clone();
        let key = s.dir.join(format!("agent{i}")).join("identity.key");
        cfg["identity"]["key_path"] = json!(key.to_str().unwrap());
        let path = support::agent::write_config(s.dir.path(), &format!("agent{i}.json"), &cfg);
        agents.push(Agent::spawn(
            &format!("fleet{i}"),
            &["--config", path.to_str().unwrap(), "run"],
            &[],
            s.dir.path(),
        ));
    }
    for i in 0..n {
        let c = s.coord.accept(S5);
        c.authenticate(Some(&format!("prov-fleet-{i}")));
        c.expect_capabilities(S5);
        conns.push(c);
    }
    (agents, conns)
}

#[test]
fn after_a_deploy_drain_a_fleet_does_not_come_back_in_the_same_second() {
    let _w = watchdog(Duration::from_secs(25), "deploy_drain_spread");
    const N: usize = 5;
    let s = Setup::new("fleet");
    let (_agents, conns) = fleet(&s, N);
    let drained_at = Instant::now();
    for c in &conns {
        c.send_close(1001, "drain:deploy");
    }
    let mut delays = Vec::new();
    for _ in 0..N {
        let left = Duration::from_secs_f64(DRAIN_MAX + 1.0).saturating_sub(drained_at.elapsed());
        let Some(c) = s.coord.try_accept(left) else {
            panic!(
                "only {} of {N} agents came back within {DRAIN_MAX} s",
                delays.len()
            );
        };
        delays.push(secs(c.accepted_at - drained_at));
    }
    delays.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let spread = delays[N - 1] - delays[0];
    // Plain 1 s x [0.8, 1.2) jitter spans at most 0.4 s; a deliberate spread over a few
    // seconds spans far more (for uniform 0..5 s, spread < 0.6 s has odds ~1e-3).
    assert!(
        spread >= 0.6,
        "reconnect delays after drain:deploy {delays:.3?} span only {spread:.3} s: the \
         fleet comes back together"
    );
    assert!(delays[N - 1] <= DRAIN_MAX, "delays {delays:.3?}");
}

/// The crash case with real agents: every connection dropped without a Close. Each agent's
/// decided delay (its log line) lies in the first window, and together they spread: 8
/// uniform draws over 4 s span less than 0.8 s with odds ~1e-4, where 1 s x [0.8, 1.2)
/// spans at most 0.4 s.
#[test]
fn after_a_crash_a_fleet_comes_back_spread_over_the_first_window() {
    let _w = watchdog(Duration::from_secs(30), "crash_spread");
    const N: usize = 8;
    let s = Setup::new("crashfleet");
    let (agents, conns) = fleet(&s, N);
    let dropped_at = Instant::now();
    for c in &conns {
        c.drop_tcp();
    }
    let mut decided: Vec<u64> = agents.iter().map(decided_delay_ms).collect();
    decided.sort_unstable();
    for d in &decided {
        assert!(FIRST_MS.contains(d), "decided delays {decided:?} ms");
    }
    let spread_ms = decided[N - 1] - decided[0];
    assert!(
        spread_ms >= 800,
        "after a crash the fleet decided {decided:?} ms: spans only {spread_ms} ms"
    );
    let last = Duration::from_millis(decided[N - 1]) + Duration::from_secs_f64(RECONNECT_SLACK);
    for i in 0..N {
        let left = (last + Duration::from_secs(1)).saturating_sub(dropped_at.elapsed());
        let Some(c) = s.coord.try_accept(left) else {
            panic!("only {i} of {N} agents came back within {last:?} (decided {decided:?} ms)");
        };
        assert!(
            c.accepted_at - dropped_at <= last,
            "an agent came back {:?} after the crash; the last decided {last:?}",
            c.accepted_at - dropped_at
        );
    }
}

/// Reject `n` handshakes in a row (n <= 3); returns when the first `auth_failed` was sent,
/// each later connection's accept time, and the connection that followed the last
/// rejection.
fn reject_n(s: &Setup, n: usize) -> (Instant, Vec<Instant>, support::coordinator::Conn) {
    let mut conn = s.coord.accept(S5);
    let mut first = None;
    let mut accepts = Vec::new();
    for (i, window_end) in WINDOW_ENDS_S.iter().enumerate().take(n) {
        let a = conn.reject("invalid signature");
        let first_at = *first.get_or_insert(a.auth_ok_at);
        let end = window_end + RECONNECT_SLACK + 1.0;
        let wait =
            (first_at + Duration::from_secs_f64(end)).saturating_duration_since(Instant::now());
        let Some(next) = s.coord.try_accept(wait) else {
            panic!(
                "no reconnect within {end} s of the first auth_failed after auth_failed #{}",
                i + 1
            );
        };
        accepts.push(next.accepted_at);
        conn = next;
    }
    (first.unwrap(), accepts, conn)
}

// Where the first three pre-auth windows end, in seconds after the first failure: 4, 8 and
// 16 s long, laid end to end (src/reconnect.rs). A retry lands in its window plus a dial.
const WINDOW_ENDS_S: [f64; 3] = [4.0, 12.0, 28.0];

/// Each retry lands in its own window, counted from the first failure: the second after
/// 4 s, where a retry drawn from the failure on (or 1 s doubling) would often come sooner.
#[test]
fn auth_failed_retries_escalate_over_windows_laid_end_to_end() {
    let _w = watchdog(Duration::from_secs(30), "auth_failed_backoff");
    let s = Setup::new("backoff");
    let agent = s.spawn();
    let (first, accepts, _last) = reject_n(&s, 2);
    let at: Vec<f64> = accepts.iter().map(|t| secs(*t - first)).collect();
    let mut start = 0.0;
    for (i, t) in at.iter().enumerate() {
        let (lo, hi) = (start - 0.005, WINDOW_ENDS_S[i] + RECONNECT_SLACK);
        assert!(
            (lo..=hi).contains(t),
            "retry #{} came {t:.3} s after the first auth_failed, expected within its window \
             {start}..{} s (+ a dial); all {at:.3?}",
            i + 1,
            WINDOW_ENDS_S[i]
        );
        start = WINDOW_ENDS_S[i];
    }
    assert!(
        agent.wait_for_log("connection attempt 1 failed", S5),
        "{}",
        agent.logs()
    );
    let first_ms = decided_delay_ms(&agent);
    assert!(
        FIRST_MS.contains(&first_ms),
        "first retry decided {first_ms} ms"
    );
    assert!(agent.wait_for_log("connection attempt 2 failed", S5));
    assert!(!agent.has_log("authenticated as"));
}

#[test]
fn a_session_past_auth_ok_resets_the_backoff() {
    let _w = watchdog(Duration::from_secs(35), "backoff_reset");
    let s = Setup::new("reset");
    let agent = s.spawn();
    let (first, accepts, conn) = reject_n(&s, 2);
    assert!(
        secs(accepts[1] - first) >= 3.995,
        "the second retry should wait for the second window"
    );
    // Past the two failures' log lines.
    assert!(agent.wait_for_log("connection attempt 2 failed", S5));
    decided_delay_ms(&agent);
    conn.authenticate(Some("prov-reset"));
    conn.expect_capabilities(S5);
    let dropped_at = conn.drop_tcp();
    assert_close_logged(&agent, "unexpected", "WARN");
    let delay_ms = decided_delay_ms(&agent);
    assert!(
        FIRST_MS.contains(&delay_ms),
        "after a session past auth_ok the first window again, decided {delay_ms} ms"
    );
    let Some(next) = s.coord.try_accept(support::FIRST_RECONNECT) else {
        panic!("no reconnect after the post-auth drop");
    };
    let gap = secs(next.accepted_at - dropped_at);
    assert!(
        gap <= delay_ms as f64 / 1000.0 + RECONNECT_SLACK,
        "reconnected {gap:.3} s after the drop, having decided {delay_ms} ms"
    );
    // And the failure count starts over: this is failure 1 again, not 3.
    next.reject("invalid signature");
    assert!(
        agent.wait_for_log("connection attempt 1 failed", S5),
        "the failure count did not start over after auth_ok\n{}",
        agent.logs()
    );
}
