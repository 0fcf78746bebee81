//! `usepod-edge pair` against a fake pairing API on 127.0.0.1.

mod support;

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::agent::{run_cli, CliOutput};
use support::fake_backend::{FakeBackend, Kind};
use support::proxy::{ConnectProxy, ProxyAuth};
use support::tls::TestCa;
use support::{watchdog, TempDir};

/// Answers issue, then `pending` `pendings` times, then `final_status`; over TLS
/// when started with a server config.
struct PairApi {
    port: u16,
    seen: Arc<Mutex<Vec<(String, Value)>>>,
}

/// One request read from `s`, answered by `answer(path)`; None when the client
/// gave up (a refused certificate ends the TLS handshake on the first read).
fn serve_one<S: Read + Write>(
    s: S,
    answer: &mut dyn FnMut(&str) -> Value,
) -> Option<(String, Value)> {
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let path = line.split(' ').nth(1)?.to_owned();
    let mut len = 0;
    loop {
        let mut h = String::new();
        r.read_line(&mut h).ok()?;
        if h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().ok()?;
            }
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let text = answer(&path).to_string();
    let s = r.get_mut();
    let _ = write!(
        s,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    );
    let _ = s.flush();
    Some((path, body))
}

impl PairApi {
    fn start(pendings: usize, final_answer: Value) -> PairApi {
        PairApi::start_with(None, pendings, final_answer)
    }

    fn start_with(
        tls: Option<Arc<rustls::ServerConfig>>,
        pendings: usize,
        final_answer: Value,
    ) -> PairApi {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        std::thread::spawn(move || {
            let mut polls = 0;
            let mut answer = |path: &str| match path {
                "/v1/host/pair/issue" => {
                    json!({"pair_code":"WXYZ-2345","poll_token":"poll-tok","expires_at":"2026-11-22T09:00:00Z"})
                }
                "/v1/host/pair/poll" if polls < pendings => {
                    polls += 1;
                    json!({"status":"pending"})
                }
                "/v1/host/pair/poll" => final_answer.clone(),
                _ => json!({"error":"not found"}),
            };
            for s in l.incoming() {
                let Ok(s) = s else { return };
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let seen = match &tls {
                    None => serve_one(s, &mut answer),
                    Some(cfg) => {
                        let conn = rustls::ServerConnection::new(Arc::clone(cfg)).unwrap();
                        serve_one(rustls::StreamOwned::new(conn, s), &mut answer)
                    }
                };
                if let Some(req) = seen {
                    log.lock().unwrap().push(req);
                }
            }
        });
        PairApi { port, seen }
    }

    fn api(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn requests(&self) -> Vec<(String, Value)> {
        self.seen.lock().unwrap().clone()
    }
}

/// `usepod-edge --config CONFIG pair --api API --force`, run in `dir`.
fn pair_forced(
    dir: &TempDir,
    config: &std::path::Path,
    api: &str,
    envs: &[(&str, &str)],
) -> CliOutput {
    run_cli(
        &[
            "--config",
            config.to_str().unwrap(),
            "pair",
            "--api",
            api,
            "--force",
        ],
        envs,
        dir.path(),
        Duration::from_secs(30),
    )
}

#[test]
fn pairing_writes_the_config_and_keeps_the_provider_id() {
    let _w = watchdog(Duration::from_secs(40), "pairing");
    let dir = TempDir::new("pair");
    let fake = FakeBackend::start(Kind::LlamaCpp, &["paired-model"]);
    let api = PairApi::start(
        1,
        json!({"status":"active","host_token":"secret-host-token","provider_id":"prov-paired",
               "model_config":[{"model_id":"paired-model","input_per_1m":7,"output_per_1m":9,"max_concurrent":2}]}),
    );
    // The config pair starts from: only where the identity lives and which backend to offer.
    let seed = dir.join("seed.json");
    let key = dir.join("state/identity.key");
    std::fs::write(
        &seed,
        json!({"identity":{"key_path":key},"backends":[{"kind":"llamacpp","url":fake.url()}]})
            .to_string(),
    )
    .unwrap();
    let out = pair_forced(&dir, &seed, &api.api(), &[]);
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("WXYZ-2345") && out.stdout.contains("/host/pair"),
        "{}",
        out.stdout
    );
    assert!(!format!("{}{}", out.stdout, out.stderr).contains("secret-host-token"));

    let reqs = api.requests();
    let paths: Vec<&str> = reqs.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/v1/host/pair/issue",
            "/v1/host/pair/poll",
            "/v1/host/pair/poll"
        ]
    );
    let id = run_cli(
        &["--config", seed.to_str().unwrap(), "identity"],
        &[],
        dir.path(),
        Duration::from_secs(10),
    );
    assert!(
        id.stdout.contains("provider_id: prov-paired"),
        "{}",
        id.stdout
    );
    let public = id
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("public: "))
        .unwrap()
        .to_owned();
    assert_eq!(reqs[0].1["agent_pubkey"], public);
    let poll = &reqs[1].1;
    assert_eq!(poll["poll_token"], "poll-tok");
    assert_eq!(
        poll["capabilities"]["agent_version"],
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(poll["capabilities"]["backends"][0]["kind"], "llamacpp");
    assert_eq!(
        poll["capabilities"]["backends"][0]["models"],
        json!(["paired-model"])
    );

    // The seed config was replaced (--force) by the paired one; it validates.
    let written: Value = serde_json::from_str(&std::fs::read_to_string(&seed).unwrap()).unwrap();
    assert_eq!(
        written["coordinator"]["url"],
        format!("ws://127.0.0.1:{}/provider/connect", api.port)
    );
    assert_eq!(
        written["pricing"]["models"]["paired-model"],
        json!({"input_per_1m":7,"output_per_1m":9})
    );
    let v = run_cli(
        &["--config", seed.to_str().unwrap(), "validate"],
        &[],
        dir.path(),
        Duration::from_secs(10),
    );
    assert_eq!(v.code, Some(0), "{}{}", v.stdout, v.stderr);
    assert!(!v.stdout.contains("warning"), "{}", v.stdout);
}

#[test]
fn a_provider_id_that_would_add_lines_is_not_saved() {
    let _w = watchdog(Duration::from_secs(40), "pairing bad provider_id");
    let dir = TempDir::new("pair-badpid");
    let forged = support::identity::b64(&[9u8; 32]);
    let api = PairApi::start(
        0,
        json!({"status":"active","provider_id":format!("p1\nsecret: {forged}"),"model_config":[]}),
    );
    let seed = dir.join("seed.json");
    let key = dir.join("state/identity.key");
    std::fs::write(
        &seed,
        json!({"identity":{"key_path":key},"backends":[]}).to_string(),
    )
    .unwrap();
    let out = pair_forced(&dir, &seed, &api.api(), &[]);
    assert_eq!(out.code, Some(0), "{}", out.describe());
    assert!(
        out.stderr
            .contains("ignoring the provider_id in the pairing answer, \"p1\\nsecret: "),
        "{}",
        out.describe()
    );
    let text = std::fs::read_to_string(&key).unwrap();
    assert_eq!(
        text.lines().filter(|l| l.starts_with("secret:")).count(),
        1,
        "{text}"
    );
    assert!(
        !text.contains(&forged) && !text.contains("provider_id"),
        "{text}"
    );
    assert_eq!(support::identity::parse_identity(&text).provider_id, None);
}

#[test]
fn an_existing_config_is_not_clobbered_and_expiry_fails() {
    let _w = watchdog(Duration::from_secs(30), "pairing refusals");
    let dir = TempDir::new("pair-no");
    let api = PairApi::start(0, json!({"status":"expired"}));
    let cfg = dir.join("config.json");
    let original =
        json!({"identity":{"key_path":dir.join("k/identity.key")},"backends":[]}).to_string();
    std::fs::write(&cfg, &original).unwrap();
    let out = run_cli(
        &[
            "--config",
            cfg.to_str().unwrap(),
            "pair",
            "--api",
            &api.api(),
        ],
        &[],
        dir.path(),
        Duration::from_secs(10),
    );
    assert_ne!(out.code, Some(0));
    assert!(out.stderr.contains("--force"), "{}", out.stderr);
    assert_eq!(std::fs::read_to_string(&cfg).unwrap(), original);
    assert!(api.requests().is_empty(), "nothing is asked of the API");

    let out = run_cli(
        &[
            "--config",
            cfg.to_str().unwrap(),
            "pair",
            "--api",
            &api.api(),
            "--force",
        ],
        &[],
        dir.path(),
        Duration::from_secs(20),
    );
    assert_eq!(out.code, Some(1), "{}{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("expired"), "{}", out.stderr);
    assert_eq!(
        std::fs::read_to_string(&cfg).unwrap(),
        original,
        "an expired pairing writes nothing"
    );
}

#[test]
fn pairing_over_https_trusts_the_ca_file_keeps_it_and_refuses_an_unknown_ca() {
    let _w = watchdog(Duration::from_secs(40), "pairing https");
    let dir = TempDir::new("pair-tls");
    let ca = TestCa::new();
    let ca_file = ca.write_ca_pem(dir.path());
    let api = PairApi::start_with(
        Some(ca.server_config()),
        0,
        json!({"status":"active","provider_id":"prov-tls","model_config":[]}),
    );
    let https = format!("https://localhost:{}", api.port);
    let key = dir.join("state/identity.key");

    // Without the operator's CA the API's certificate is refused and nothing is written.
    let bare = dir.join("bare.json");
    let bare_text = json!({"identity":{"key_path":key},"backends":[]}).to_string();
    std::fs::write(&bare, &bare_text).unwrap();
    let out = pair_forced(&dir, &bare, &https, &[]);
    assert_eq!(out.code, Some(1), "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("/v1/host/pair/issue") && out.stderr.contains("certificate"),
        "the error names the call and the certificate problem: {}",
        out.stderr
    );
    assert_eq!(std::fs::read_to_string(&bare).unwrap(), bare_text);
    assert!(api.requests().is_empty(), "{:?}", api.requests());

    // With it (coordinator.ca_file), pairing goes through and the CA stays in the config.
    let seed = dir.join("seed.json");
    std::fs::write(
        &seed,
        json!({"coordinator":{"ca_file":ca_file},"identity":{"key_path":key},"backends":[]})
            .to_string(),
    )
    .unwrap();
    let out = pair_forced(&dir, &seed, &https, &[]);
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    let paths: Vec<String> = api.requests().into_iter().map(|(p, _)| p).collect();
    assert_eq!(paths, ["/v1/host/pair/issue", "/v1/host/pair/poll"]);
    let written: Value = serde_json::from_str(&std::fs::read_to_string(&seed).unwrap()).unwrap();
    assert_eq!(
        written["coordinator"]["url"],
        format!("wss://localhost:{}/provider/connect", api.port)
    );
    assert_eq!(written["coordinator"]["ca_file"], json!(ca_file));

    // Plain http to a host that is not loopback is refused before anything is sent.
    let out = pair_forced(&dir, &seed, "http://192.0.2.1:9", &[]);
    assert_ne!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("loopback"), "{}", out.stderr);
}

#[test]
fn pairing_goes_through_the_https_proxy_with_tls_end_to_end() {
    let _w = watchdog(Duration::from_secs(40), "pairing via proxy");
    let dir = TempDir::new("pair-proxy");
    // A name only the proxy can route (`.test` resolves nowhere), with a certificate for it.
    let ca = TestCa::with_server_names(&["pair.test"]);
    let ca_file = ca.write_ca_pem(dir.path());
    let api = PairApi::start_with(
        Some(ca.server_config()),
        0,
        json!({"status":"active","provider_id":"prov-proxied","model_config":[]}),
    );
    let target = format!("pair.test:{}", api.port);
    let proxy = ConnectProxy::start(
        &[(
            &target,
            std::net::SocketAddr::from(([127, 0, 0, 1], api.port)),
        )],
        ProxyAuth::Open,
    );
    let seed = dir.join("seed.json");
    std::fs::write(
        &seed,
        json!({"coordinator":{"ca_file":ca_file},"identity":{"key_path":dir.join("k/identity.key")},
               "backends":[]})
        .to_string(),
    )
    .unwrap();
    let out = pair_forced(
        &dir,
        &seed,
        &format!("https://{target}"),
        &[("HTTPS_PROXY", &proxy.url()), ("no_proxy", "")],
    );
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    let connects: Vec<String> = proxy.requests().into_iter().map(|r| r.line).collect();
    assert_eq!(
        connects,
        vec![format!("CONNECT {target} HTTP/1.1"); 2],
        "one tunnel per API call"
    );
    let paths: Vec<String> = api.requests().into_iter().map(|(p, _)| p).collect();
    assert_eq!(paths, ["/v1/host/pair/issue", "/v1/host/pair/poll"]);
    let written: Value = serde_json::from_str(&std::fs::read_to_string(&seed).unwrap()).unwrap();
    assert_eq!(
        written["coordinator"]["url"],
        format!("wss://{target}/provider/connect")
    );
}
