//! Proves the test harness itself (tests/support) with an in-test agent stand-in: a
//! tungstenite + rustls client that trusts the test CA. If these fail, every agent test's
//! verdict is meaningless.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::{json, Value};
use support::coordinator::{verify_auth_response, Coordinator};
use support::tls::TestCa;
use support::{watchdog, TempDir};
use tungstenite::{Message, WebSocket};

type Client = WebSocket<Box<dyn ReadWrite>>;

trait ReadWrite: Read + Write + Send {}
impl<T: Read + Write + Send> ReadWrite for T {}

fn connect(coord: &Coordinator, ca: Option<&TestCa>) -> Result<Client, String> {
    let tcp = TcpStream::connect(("127.0.0.1", coord.port())).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let stream: Box<dyn ReadWrite> = match ca {
        Some(ca) => {
            let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
            let cc = rustls::ClientConnection::new(ca.client_config(), name).unwrap();
            Box::new(rustls::StreamOwned::new(cc, tcp))
        }
        None => Box::new(tcp),
    };
    tungstenite::client(coord.url(), stream)
        .map(|(ws, _)| ws)
        .map_err(|e| e.to_string())
}

fn read_json(ws: &mut Client) -> Value {
    loop {
        match ws.read().expect("client read") {
            Message::Text(t) => return serde_json::from_str(&t).unwrap(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("client: unexpected {other:?}"),
        }
    }
}

fn send_json(ws: &mut Client, v: Value) {
    ws.send(Message::text(v.to_string())).expect("client send");
}

/// What a correct agent does for the handshake; `sign_raw = false` signs the base64
/// text instead (a classic bug).
fn client_handshake(ws: &mut Client, seed: [u8; 32], sign_raw: bool) -> Value {
    let ch = read_json(ws);
    assert_eq!(ch["type"], "auth_challenge");
    let nonce_b64 = ch["nonce"].as_str().unwrap().to_string();
    let nonce = B64.decode(&nonce_b64).unwrap();
    assert_eq!(nonce.len(), 32);
    let kp = ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new(seed));
    let msg: Vec<u8> = if sign_raw {
        nonce
    } else {
        nonce_b64.into_bytes()
    };
    let sig = kp.sk.sign(&msg, None);
    send_json(
        ws,
        json!({"type":"auth_response","pubkey":B64.encode(*kp.pk),
               "signature":B64.encode(*sig),"agent_version":"0.1.0","enrollment_code":"E-1"}),
    );
    read_json(ws)
}

#[test]
fn tls_client_trusting_the_test_ca_authenticates_and_close_handshake_completes() {
    let _w = watchdog(Duration::from_secs(15), "tls_client_trusting_the_test_ca");
    let ca = TestCa::new();
    let coord = Coordinator::start_tls(&ca);
    assert!(coord.url().starts_with("wss://localhost:"));
    let client = {
        let cfg = ca.client_config();
        let port = coord.port();
        let url = coord.url();
        std::thread::spawn(move || {
            let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
            tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
            let cc = rustls::ClientConnection::new(cfg, name).unwrap();
            let stream: Box<dyn ReadWrite> = Box::new(rustls::StreamOwned::new(cc, tcp));
            let (mut ws, _) = tungstenite::client(url, stream).unwrap();
            let ok = client_handshake(&mut ws, [9u8; 32], true);
            send_json(&mut ws, json!({"type":"capabilities","models":[]}));
            ws.send(Message::Ping(vec![1, 2, 3].into())).unwrap();
            send_json(&mut ws, json!({"type":"heartbeat","queue_depth":0}));
            // Wait for the server's ping and close.
            let mut got_ping = false;
            let close = loop {
                match ws.read() {
                    Ok(Message::Ping(p)) => got_ping = p.as_ref() == b"hb",
                    Ok(Message::Close(f)) => {
                        break f.map(|f| (u16::from(f.code), f.reason.to_string()))
                    }
                    Ok(_) => {}
                    Err(e) => panic!("client read: {e}"),
                }
            };
            // Drive the reply out.
            let _ = ws.flush();
            let after = ws.read();
            (ok, got_ping, close, format!("{after:?}"))
        })
    };
    let conn = coord.accept(Duration::from_secs(5));
    assert_eq!(conn.path, "/provider/connect");
    let auth = conn.authenticate(Some("prov-self"));
    assert_eq!(auth.enrollment_code.as_deref(), Some("E-1"));
    assert_eq!(auth.pubkey, support::identity::public_from_seed([9u8; 32]));
    let caps = conn.expect_capabilities(Duration::from_secs(5));
    assert!(caps.at >= auth.auth_ok_at);
    let hb = conn.recv_type("heartbeat", Duration::from_secs(5)).unwrap();
    assert_eq!(hb.value["queue_depth"], 0);
    assert!(support::wait_until(Duration::from_secs(2), || conn
        .pings_seen()
        == 1));
    conn.send_ping(b"hb");
    conn.send_close(1001, "drain:deploy");
    assert!(
        conn.wait_closed(Duration::from_secs(5)),
        "close did not finish"
    );
    assert!(
        conn.close_acknowledged(),
        "the client's Close reply was not seen"
    );
    assert_eq!(
        conn.peer_close(),
        Some(Some((1001, "drain:deploy".to_string())))
    );
    let (ok, got_ping, close, after) = client.join().unwrap();
    assert_eq!(ok, json!({"type":"auth_ok","provider_id":"prov-self"}));
    assert!(got_ping, "server ping not received by the client");
    assert_eq!(close, Some((1001, "drain:deploy".to_string())));
    assert!(after.contains("ConnectionClosed"), "after close: {after}");
}

#[test]
#[should_panic(expected = "does not verify over the raw nonce")]
fn authenticate_rejects_a_signature_over_the_base64_text() {
    let _w = watchdog(
        Duration::from_secs(15),
        "authenticate_rejects_bad_signature",
    );
    let ca = TestCa::new();
    let coord = Coordinator::start_tls(&ca);
    let port = coord.port();
    let cfg = ca.client_config();
    let url = coord.url();
    let _client = std::thread::spawn(move || {
        let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let cc = rustls::ClientConnection::new(cfg, name).unwrap();
        let stream: Box<dyn ReadWrite> = Box::new(rustls::StreamOwned::new(cc, tcp));
        let (mut ws, _) = tungstenite::client(url, stream).unwrap();
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            client_handshake(&mut ws, [3u8; 32], false)
        }));
    });
    let conn = coord.accept(Duration::from_secs(5));
    conn.authenticate(None);
}

#[test]
fn verify_auth_response_checks_lengths_and_signature() {
    let seed = [5u8; 32];
    let kp = ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new(seed));
    let nonce = [7u8; 32];
    let good = json!({"type":"auth_response","pubkey":B64.encode(*kp.pk),
        "signature":B64.encode(*kp.sk.sign(nonce, None)),"agent_version":"1.2.3"});
    let a = verify_auth_response(&good, &nonce, Instant::now());
    assert_eq!(a.enrollment_code, None);
    assert_eq!(a.agent_version, "1.2.3");
    let unpadded = json!({"type":"auth_response",
        "pubkey":B64.encode(*kp.pk).trim_end_matches('=').to_string(),
        "signature":B64.encode(*kp.sk.sign(nonce, None)),"agent_version":"1.2.3"});
    assert!(
        std::panic::catch_unwind(|| verify_auth_response(&unpadded, &nonce, Instant::now()))
            .is_err()
    );
    let other_nonce = [8u8; 32];
    assert!(
        std::panic::catch_unwind(|| verify_auth_response(&good, &other_nonce, Instant::now()))
            .is_err()
    );
}

#[test]
fn client_trusting_another_ca_is_refused_and_counted() {
    let _w = watchdog(Duration::from_secs(15), "client_trusting_another_ca");
    let ca = TestCa::new();
    let other = TestCa::new();
    let coord = Coordinator::start_tls(&ca);
    let r = connect(&coord, Some(&other));
    assert!(r.is_err(), "a client trusting another CA must fail TLS");
    assert!(support::wait_until(Duration::from_secs(3), || !coord
        .handshake_failures()
        .is_empty()));
    assert!(coord.try_accept(Duration::from_millis(200)).is_none());
    assert_eq!(coord.tcp_accepts(), 1);
}

#[test]
fn plain_mode_drop_tcp_and_stop_reading() {
    let _w = watchdog(
        Duration::from_secs(15),
        "plain_mode_drop_tcp_and_stop_reading",
    );
    let coord = Coordinator::start_plain();
    assert!(coord.url().starts_with("ws://127.0.0.1:"));

    // drop_tcp: the client sees the connection end without a Close frame.
    let mut ws = connect(&coord, None).unwrap();
    let conn = coord.accept(Duration::from_secs(5));
    conn.send_text("{\"type\":\"x\"}");
    assert_eq!(read_json(&mut ws)["type"], "x");
    conn.drop_tcp();
    let r = ws.read();
    assert!(
        !matches!(r, Ok(Message::Close(_))),
        "drop_tcp must not send a Close frame: {r:?}"
    );
    assert!(r.is_err());
    assert!(conn.wait_closed(Duration::from_secs(1)));

    // stop_reading: pings stop being answered, the socket stays open.
    let mut ws = connect(&coord, None).unwrap();
    let conn = coord.accept(Duration::from_secs(5));
    ws.send(Message::Ping(vec![1].into())).unwrap();
    assert!(support::wait_until(Duration::from_secs(2), || conn
        .pings_seen()
        == 1));
    match ws.read().unwrap() {
        Message::Pong(p) => assert_eq!(p.as_ref(), &[1]),
        other => panic!("expected pong, got {other:?}"),
    }
    conn.stop_reading();
    ws.get_mut().write_all(&[]).expect("socket still writable");
    ws.send(Message::Ping(vec![2].into())).unwrap();
    ws.send(Message::text("{\"type\":\"lost\"}")).unwrap();
    let t0 = Instant::now();
    let r = ws.read();
    assert!(r.is_err(), "frozen conn must not answer: {r:?}");
    assert!(
        t0.elapsed() >= Duration::from_secs(4),
        "read timed out early"
    );
    assert_eq!(conn.pings_seen(), 1);
    assert!(conn.recv(Duration::from_millis(100)).is_none());
    assert!(conn.ended().is_none(), "a frozen conn is not ended");
}

#[test]
fn agent_initiated_close_is_answered_and_recorded() {
    let _w = watchdog(Duration::from_secs(15), "agent_initiated_close");
    let coord = Coordinator::start_plain();
    let mut ws = connect(&coord, None).unwrap();
    let conn = coord.accept(Duration::from_secs(5));
    ws.send(Message::Pong(vec![4].into())).unwrap();
    assert!(conn.wait_pong(&[4], Duration::from_secs(2)));
    ws.close(Some(tungstenite::protocol::CloseFrame {
        code: 1009.into(),
        reason: "too big".into(),
    }))
    .unwrap();
    // The harness answers; the client then sees the end of the handshake.
    let mut done = false;
    for _ in 0..10 {
        match ws.read() {
            Err(tungstenite::Error::ConnectionClosed) => {
                done = true;
                break;
            }
            Ok(_) => continue,
            Err(e) => panic!("client: {e}"),
        }
    }
    assert!(done, "harness did not answer the Close");
    assert!(conn.wait_closed(Duration::from_secs(2)));
    assert_eq!(conn.peer_close(), Some(Some((1009, "too big".to_string()))));
    assert!(
        !conn.close_acknowledged(),
        "the agent started this close, not the harness"
    );
}

#[test]
fn fragmented_and_binary_messages_arrive_whole() {
    let _w = watchdog(Duration::from_secs(15), "fragmented_and_binary");
    let ca = TestCa::new();
    let coord = Coordinator::start_tls(&ca);
    let mut ws = connect(&coord, Some(&ca)).unwrap();
    let conn = coord.accept(Duration::from_secs(5));
    let big = format!("{{\"type\":\"pad\",\"p\":\"{}\"}}", "a".repeat(3 << 20));
    let client = std::thread::spawn(move || {
        let mut got = Vec::new();
        for _ in 0..2 {
            match ws.read().unwrap() {
                Message::Text(t) => got.push(t.len()),
                Message::Binary(b) => got.push(b.len()),
                _ => {}
            }
        }
        ws.send(Message::binary(vec![1u8, 2])).unwrap();
        let _ = ws.read();
        got
    });
    conn.send_fragmented_text(&big, 1 << 20);
    conn.send_binary(&[0u8; 10]);
    let got = client.join().unwrap();
    assert_eq!(got, vec![big.len(), 10]);
    match conn.recv(Duration::from_secs(2)).unwrap().kind {
        support::coordinator::InboundKind::Binary(b) => assert_eq!(b, vec![1, 2]),
        other => panic!("expected binary, got {other:?}"),
    }
}

#[test]
fn identity_helpers_round_trip() {
    let text = support::identity::usepod_identity_text([1u8; 32], Some("prov-x"));
    let p = support::identity::parse_identity(&text);
    assert_eq!(p.secret, [1u8; 32]);
    assert_eq!(p.public, support::identity::public_from_seed([1u8; 32]));
    assert_eq!(p.provider_id.as_deref(), Some("prov-x"));
    let bad = text.replace(
        &support::identity::b64(&p.public),
        &support::identity::b64(&support::identity::public_from_seed([2u8; 32])),
    );
    assert!(std::panic::catch_unwind(|| support::identity::parse_identity(&bad)).is_err());
}

#[test]
fn temp_dirs_are_unique_and_removed() {
    let a = TempDir::new("x");
    let b = TempDir::new("x");
    assert_ne!(a.path(), b.path());
    let p = a.path().to_path_buf();
    std::fs::write(a.join("f"), "1").unwrap();
    drop(a);
    assert!(!p.exists());
}

/// Run by `watchdog_ends_a_hung_test` in a child process; sleeps past its watchdog.
#[test]
#[ignore = "helper: run only as a child of watchdog_ends_a_hung_test"]
fn watchdog_child_that_hangs() {
    if std::env::var("USEPOD_EDGE_WATCHDOG_CHILD").is_err() {
        return;
    }
    let _w = watchdog(Duration::from_millis(300), "watchdog_child_that_hangs");
    std::thread::sleep(Duration::from_secs(20));
}

#[test]
fn watchdog_ends_a_hung_test() {
    let _w = watchdog(Duration::from_secs(15), "watchdog_ends_a_hung_test");
    let t0 = Instant::now();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "watchdog_child_that_hangs",
            "--nocapture",
        ])
        .env("USEPOD_EDGE_WATCHDOG_CHILD", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(
        stderr.contains("WATCHDOG: test `watchdog_child_that_hangs`"),
        "{stderr}"
    );
    assert!(t0.elapsed() < Duration::from_secs(10));
}

/// Run by `a_skip_is_loud_locally_and_a_failure_in_ci` in a child process.
#[test]
#[ignore = "helper: run only as a child of a_skip_is_loud_locally_and_a_failure_in_ci"]
fn skip_child() {
    if std::env::var("USEPOD_EDGE_SKIP_CHILD").is_err() {
        return;
    }
    support::skip_or_fail("skip_child", "nothing to test with");
}

#[test]
fn a_skip_is_loud_locally_and_a_failure_in_ci() {
    let _w = watchdog(Duration::from_secs(15), "skip_or_fail");
    let run = |ci: Option<&str>| {
        let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
        cmd.args(["--ignored", "--exact", "skip_child"])
            .env("USEPOD_EDGE_SKIP_CHILD", "1")
            .env_remove("CI");
        if let Some(v) = ci {
            cmd.env("CI", v);
        }
        let out = cmd.output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), text)
    };
    for local in [None, Some(""), Some("0"), Some("false")] {
        let (code, text) = run(local);
        assert_eq!(code, Some(0), "CI={local:?}: a local skip passes\n{text}");
        assert!(
            text.contains("SKIPPED skip_child: nothing to test with"),
            "CI={local:?}: the skip is printed past libtest's capture\n{text}"
        );
    }
    for ci in ["1", "true"] {
        let (code, text) = run(Some(ci));
        assert_eq!(
            code,
            Some(101),
            "CI={ci}: a skip fails the test binary\n{text}"
        );
        assert!(
            text.contains("skip_child cannot run: nothing to test with"),
            "CI={ci}: the failure says what was missing\n{text}"
        );
    }
}
