//! How a session ends (docs/protocol.md, "Closing and reconnecting"): each close kind is
//! classified and logged at its level, the closing handshake is completed, and the agent
//! comes back on the right schedule (post-auth reset, deploy-drain spread, pre-auth
//! exponential backoff with jitter).

mod support;

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
fn close_case(
    tag: &str,
    how: How,
    kind: &str,
    level: &str,
    decided: std::ops::RangeInclusive<u64>,
) {
    let s = Setup::new(tag);
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

// Post-auth sessions reset the backoff to 1 s x [0.8, 1.2).
const RESET_MS: std::ops::RangeInclusive<u64> = 800..=1199;
// After a drain the first reconnect is spread over 0..5 s (src/reconnect.rs, DRAIN_SPREAD;
// the spread's distribution is tested there, and across a fleet of agents below).
const DRAIN_MS: std::ops::RangeInclusive<u64> = 0..=5000;
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

#[test]
fn close_1001_with_another_reason_is_graceful() {
    let _w = watchdog(Duration::from_secs(15), "close_1001_other");
    close_case(
        "going_away",
        How::Close(1001, "coordinator shutting down"),
        "graceful",
        "INFO",
        RESET_MS,
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
        RESET_MS,
    );
}

#[test]
fn a_bare_close_is_graceful() {
    let _w = watchdog(Duration::from_secs(15), "close_bare");
    close_case("bare", How::BareClose, "graceful", "INFO", RESET_MS);
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
        RESET_MS,
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
        RESET_MS,
    );
}

#[test]
fn a_tcp_drop_without_close_is_unexpected() {
    let _w = watchdog(Duration::from_secs(15), "tcp_drop");
    close_case("tcpdrop", How::DropTcp, "unexpected", "WARN", RESET_MS);
}

#[test]
fn after_a_deploy_drain_a_fleet_does_not_come_back_in_the_same_second() {
    let _w = watchdog(Duration::from_secs(25), "deploy_drain_spread");
    const N: usize = 5;
    let s = Setup::new("fleet");
    let mut agents = Vec::new();
    let mut conns = Vec::new();
    for i in 0..N {
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
    for i in 0..N {
        let c = s.coord.accept(S5);
        c.authenticate(Some(&format!("prov-fleet-{i}")));
        c.expect_capabilities(S5);
        conns.push(c);
    }
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

/// Reject `n` handshakes in a row; returns each gap from `auth_failed` to the next TCP
/// accept and the connection that followed the last rejection.
fn reject_n(s: &Setup, n: usize) -> (Vec<f64>, support::coordinator::Conn) {
    let mut conn = s.coord.accept(S5);
    let mut gaps = Vec::new();
    for i in 0..n {
        let a = conn.reject("invalid signature");
        let wait = Duration::from_secs(4u64 << i.min(4));
        let Some(next) = s.coord.try_accept(wait) else {
            panic!("no reconnect within {wait:?} after auth_failed #{}", i + 1);
        };
        gaps.push(secs(next.accepted_at - a.auth_ok_at));
        conn = next;
    }
    (gaps, conn)
}

#[test]
fn auth_failed_backoff_doubles_from_one_second_with_jitter() {
    let _w = watchdog(Duration::from_secs(25), "auth_failed_backoff");
    let s = Setup::new("backoff");
    let agent = s.spawn();
    let (gaps, _last) = reject_n(&s, 3);
    for (i, gap) in gaps.iter().enumerate() {
        let base = (1u64 << i) as f64;
        let (lo, hi) = (0.8 * base - 0.05, 1.2 * base + 0.6);
        assert!(
            (lo..=hi).contains(gap),
            "reconnect gap #{} after auth_failed = {gap:.3} s, expected {lo:.2}..{hi:.2} s \
             (1 s doubling, x0.8..1.2 jitter); all gaps {gaps:.3?}",
            i + 1
        );
    }
    assert!(!agent.has_log("authenticated as"));
}

#[test]
fn a_session_past_auth_ok_resets_the_backoff() {
    let _w = watchdog(Duration::from_secs(20), "backoff_reset");
    let s = Setup::new("reset");
    let _agent = s.spawn();
    let (gaps, conn) = reject_n(&s, 2);
    assert!(gaps[1] >= 1.55, "second gap should be ~2 s: {gaps:.3?}");
    conn.authenticate(Some("prov-reset"));
    conn.expect_capabilities(S5);
    let dropped_at = conn.drop_tcp();
    let Some(next) = s.coord.try_accept(Duration::from_secs(6)) else {
        panic!("no reconnect after the post-auth drop");
    };
    let gap = secs(next.accepted_at - dropped_at);
    assert!(
        gap <= 1.2 + RECONNECT_SLACK,
        "after a session that passed auth_ok the backoff must be back at ~1 s, \
         reconnected after {gap:.3} s (escalated would be ~4 s)"
    );
}
