//! Inbound frames after auth (docs/protocol.md, "Other server messages", "Transport"):
//! junk is logged and ignored with the session kept up; oversized messages are refused
//! by dropping that connection, never by crashing.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::agent::Setup;
use support::coordinator::Conn;
use support::watchdog;

const S5: Duration = Duration::from_secs(5);

/// Start an agent with 0.5 s heartbeats, authenticate, run `send` on the connection,
/// then require that the same connection stays up: the read loop gets past the frames and
/// the agent keeps sending heartbeats.
fn survives(tag: &str, send: impl FnOnce(&Conn)) {
    let mut s = Setup::new(tag);
    s.set("/coordinator/heartbeat_interval_s", json!(0.5));
    let (mut agent, conn, _) = s.spawn_and_authenticate(Some("prov-inbound"));
    conn.expect_capabilities(S5);
    send(&conn);
    // Frames are read in order: the pong to a ping sent after them proves the read loop
    // took every one of them and is still answering.
    let probe = format!("after-{tag}");
    conn.send_ping(probe.as_bytes());
    assert!(
        conn.wait_pong(probe.as_bytes(), S5),
        "{tag}: no pong to a ping sent after the frames (ended: {:?})\n{}",
        conn.ended(),
        agent.logs()
    );
    let ponged_at = Instant::now();
    // Heartbeats already on their way before that prove nothing: count only those
    // received after the pong.
    let deadline = ponged_at + Duration::from_secs(4);
    let mut after = 0;
    while after < 2 {
        let left = deadline.saturating_duration_since(Instant::now());
        let hb = conn.recv_type("heartbeat", left).unwrap_or_else(|| {
            panic!(
                "{tag}: heartbeat {} after the frames never came (ended: {:?})\n{}",
                after + 1,
                conn.ended(),
                agent.logs()
            )
        });
        if hb.at > ponged_at {
            after += 1;
        }
    }
    assert!(
        conn.ended().is_none(),
        "{tag}: connection ended: {:?}",
        conn.ended()
    );
    assert_eq!(conn.peer_close(), None, "{tag}: the agent sent a Close");
    assert!(
        s.coord.try_accept(Duration::from_millis(10)).is_none(),
        "{tag}: the agent opened another connection"
    );
    assert!(agent.is_running(), "{tag}: the agent exited");
}

#[test]
fn invalid_json_is_ignored() {
    let _w = watchdog(Duration::from_secs(15), "invalid_json");
    survives("badjson", |c| {
        c.send_text("{\"type\": \"job\", \"job_id\": ");
        c.send_text("not json at all");
        c.send_text("");
    });
}

#[test]
fn a_message_without_type_is_ignored() {
    let _w = watchdog(Duration::from_secs(15), "missing_type");
    survives("notype", |c| {
        c.send_json(&json!({"job_id": "x", "data": 1}));
        c.send_json(&json!({"type": 42}));
        c.send_json(&json!({"type": null}));
    });
}

#[test]
fn json_that_is_not_an_object_is_ignored() {
    let _w = watchdog(Duration::from_secs(15), "non_object_json");
    survives("nonobject", |c| {
        c.send_text("[1,2,3]");
        c.send_text("\"heartbeat\"");
        c.send_text("null");
        c.send_text("12");
    });
}

#[test]
fn an_unknown_message_type_is_ignored() {
    let _w = watchdog(Duration::from_secs(15), "unknown_type");
    survives("unknowntype", |c| {
        c.send_json(&json!({"type": "quantum_entangle", "payload": {"x": [1, 2]}}));
        c.send_json(&json!({"type": "provider_update_v9", "job_id": "x"}));
    });
}

#[test]
fn config_update_is_ignored() {
    let _w = watchdog(Duration::from_secs(15), "config_update");
    survives("configupdate", |c| {
        c.send_json(
            &json!({"type": "config_update", "config": {"max_concurrent": 2,
            "models": [{"model_id": "m", "input_per_1m": 1}]}}),
        );
    });
}

#[test]
fn binary_frames_after_auth_are_ignored() {
    let _w = watchdog(Duration::from_secs(15), "binary_after_auth");
    survives("binary", |c| {
        c.send_binary(&[0, 1, 2, 3, 255]);
        c.send_binary(b"{\"type\":\"job_cancel\",\"job_id\":\"x\"}");
    });
}

#[test]
fn a_cancel_for_an_unknown_job_is_ignored() {
    let _w = watchdog(Duration::from_secs(15), "unknown_cancel");
    survives("unknowncancel", |c| {
        c.send_json(&json!({"type": "job_cancel",
            "job_id": "6f1c2b1e-2a4d-4c1b-9a43-7d3f0c9e5a10"}));
        c.send_json(&json!({"type": "job_cancel", "job_id": "not-a-uuid"}));
        c.send_json(&json!({"type": "job_cancel"}));
    });
}

#[test]
fn nothing_is_sent_back_for_ignored_frames() {
    let _w = watchdog(Duration::from_secs(15), "nothing_sent_back");
    let mut s = Setup::new("silent");
    s.set("/coordinator/heartbeat_interval_s", json!(0.5));
    let (_agent, conn, _) = s.spawn_and_authenticate(Some("prov-silent"));
    conn.expect_capabilities(S5);
    conn.send_text("garbage");
    conn.send_json(&json!({"type": "config_update"}));
    conn.send_json(&json!({"type": "no_such_type"}));
    conn.send_json(&json!({"type": "job_cancel",
        "job_id": "6f1c2b1e-2a4d-4c1b-9a43-7d3f0c9e5a10"}));
    conn.send_binary(&[9, 9]);
    // Over ~1.5 s only heartbeats may arrive.
    let deadline = std::time::Instant::now() + Duration::from_millis(1500);
    let mut beats = 0;
    while let Some(m) =
        conn.recv_timed(deadline.saturating_duration_since(std::time::Instant::now()))
    {
        assert_eq!(
            m.ty(),
            "heartbeat",
            "unexpected reply to an ignored frame: {}",
            m.value
        );
        beats += 1;
    }
    assert!(beats >= 1, "the session went quiet");
}

/// An oversized message must cost the agent that connection only: it refuses the message
/// (closing or dropping the connection), stays alive and reconnects.
fn refuses_oversized(tag: &str, send: impl FnOnce(&Conn)) {
    let s = Setup::new(tag);
    let (mut agent, conn, _) = s.spawn_and_authenticate(Some("prov-big"));
    conn.expect_capabilities(S5);
    send(&conn);
    assert!(
        conn.wait_closed(Duration::from_secs(5)),
        "{tag}: the agent kept the connection after an oversized message\n{}",
        agent.logs()
    );
    let Some(next) = s.coord.try_accept(support::FIRST_RECONNECT) else {
        panic!(
            "{tag}: no reconnect after the oversized message\n{}",
            agent.logs()
        );
    };
    assert!(agent.is_running(), "{tag}: the agent died");
    next.authenticate(Some("prov-big"));
    next.expect_capabilities(S5);
    assert!(agent.is_running(), "{tag}: the agent died");
}

fn big_message(bytes: usize) -> String {
    let pad = "a".repeat(bytes);
    format!("{{\"type\":\"config_update\",\"pad\":\"{pad}\"}}")
}

#[test]
fn a_20_mib_text_frame_drops_the_connection_not_the_agent() {
    let _w = watchdog(Duration::from_secs(20), "oversized_frame");
    refuses_oversized("bigframe", |c| {
        c.send_text(&big_message(20 << 20));
    });
}

#[test]
fn a_32_mib_message_in_small_fragments_drops_the_connection_not_the_agent() {
    let _w = watchdog(Duration::from_secs(20), "oversized_fragmented");
    // Each fragment is small (1 MiB); only the whole message is too big, so the agent's
    // own message cap must catch it.
    refuses_oversized("bigfragments", |c| {
        c.send_fragmented_text(&big_message(32 << 20), 1 << 20);
    });
}
