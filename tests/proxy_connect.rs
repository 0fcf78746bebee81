//! The coordinator connection through an HTTP CONNECT proxy taken from the environment
//! (HTTPS_PROXY / https_proxy / ALL_PROXY, NO_PROXY), and extra trust anchors from
//! SSL_CERT_FILE.
//!
//! A loopback coordinator never goes through a proxy, by design, so the tunnel tests name
//! the coordinator `coordinator.test` (a reserved TLD: nothing resolves it). Only the test
//! proxy maps that name to the local coordinator, and the test CA issues the
//! coordinator's certificate for it; the agent therefore succeeds only if it asked the
//! proxy for the tunnel and verified TLS end to end through it.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine as _;
use support::agent::{base_config, run_cli, Agent, Setup};
use support::coordinator::Coordinator;
use support::proxy::{ConnectProxy, ProxyAuth};
use support::tls::TestCa;
use support::watchdog;

const NAME: &str = "coordinator.test";

/// A setup whose coordinator is `wss://coordinator.test:PORT/...`, with a certificate for
/// that name from the setup's CA.
fn named_setup(name: &str) -> Setup {
    let mut s = Setup::new(name);
    s.ca = TestCa::with_server_names(&[NAME]);
    s.ca_file = s.ca.write_ca_pem(s.dir.path());
    s.coord = Coordinator::start_tls(&s.ca);
    let url = format!("wss://{NAME}:{}/provider/connect", s.coord.port());
    s.config = base_config(&url, Some(&s.ca_file), &s.key_path);
    s
}

fn coordinator_target(s: &Setup) -> String {
    format!("{NAME}:{}", s.coord.port())
}

fn coordinator_addr(s: &Setup) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], s.coord.port()))
}

/// `run` at trace level with `envs` on top of an environment where no proxy or CA
/// variable leaks in from the developer's shell (the harness removes the uppercase
/// proxy variables and sets NO_PROXY; lowercase no_proxy and SSL_CERT_FILE are ours).
fn spawn_with(s: &Setup, envs: &[(&str, &str)]) -> Agent {
    let path = s.write_config();
    let mut all = vec![("no_proxy", ""), ("SSL_CERT_FILE", "")];
    all.extend_from_slice(envs);
    Agent::spawn(
        &s.name,
        &[
            "--config",
            path.to_str().unwrap(),
            "--log-level",
            "trace",
            "run",
        ],
        &all,
        s.dir.path(),
    )
}

/// Authentication and capabilities over the connection the coordinator accepts next.
fn expect_session(s: &Setup) {
    let conn = s.coord.accept(Duration::from_secs(10));
    conn.authenticate(Some("prov-proxy"));
    conn.expect_capabilities(Duration::from_secs(10));
}

#[test]
fn https_proxy_tunnels_the_coordinator_with_tls_verified_end_to_end() {
    let _w = watchdog(Duration::from_secs(60), "https_proxy_tunnel");
    let s = named_setup("proxy_tunnel");
    let proxy = ConnectProxy::start(
        &[(&coordinator_target(&s), coordinator_addr(&s))],
        ProxyAuth::Open,
    );
    let agent = spawn_with(&s, &[("HTTPS_PROXY", &proxy.url())]);
    expect_session(&s);
    assert!(
        agent.wait_for_log("authenticated as prov-proxy", Duration::from_secs(5)),
        "{}",
        agent.logs()
    );
    let reqs = proxy.requests();
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    assert_eq!(
        reqs[0].line,
        format!("CONNECT {} HTTP/1.1", coordinator_target(&s))
    );
    assert_eq!(reqs[0].proxy_authorization, None);
    assert_eq!(proxy.tunnels(), 1);
    // Said once, at info, with the proxy and where the setting came from.
    let said = format!(
        "through proxy http://127.0.0.1:{} (from HTTPS_PROXY)",
        proxy.port()
    );
    assert_eq!(agent.count_logs(&said), 1, "{}", agent.logs());
    assert!(
        agent
            .log_lines()
            .iter()
            .any(|l| l.contains(&said) && l.contains("INFO")),
        "{}",
        agent.logs()
    );
}

#[test]
fn tls_through_the_tunnel_is_still_verified() {
    let _w = watchdog(Duration::from_secs(60), "tunnel_tls_verified");
    let mut s = named_setup("proxy_tls_verified");
    // The agent trusts a different CA than the one that signed the coordinator.
    let other = TestCa::with_server_names(&[NAME]);
    let other_file = s.dir.join("other-ca.pem");
    std::fs::write(&other_file, &other.ca_pem).unwrap();
    s.set(
        "/coordinator/ca_file",
        serde_json::json!(other_file.to_str().unwrap()),
    );
    let proxy = ConnectProxy::start(
        &[(&coordinator_target(&s), coordinator_addr(&s))],
        ProxyAuth::Open,
    );
    let agent = spawn_with(&s, &[("HTTPS_PROXY", &proxy.url())]);
    assert!(
        agent.wait_for_log("TLS failed", Duration::from_secs(15)),
        "{}",
        agent.logs()
    );
    assert!(proxy.tunnels() >= 1);
    assert!(s.coord.try_accept(Duration::from_millis(300)).is_none());
}

#[test]
fn lowercase_https_proxy_and_all_proxy_work() {
    let _w = watchdog(Duration::from_secs(90), "lowercase_and_all_proxy");
    for var in ["https_proxy", "ALL_PROXY", "all_proxy"] {
        let s = named_setup(&format!("proxy_{var}"));
        let proxy = ConnectProxy::start(
            &[(&coordinator_target(&s), coordinator_addr(&s))],
            ProxyAuth::Open,
        );
        let agent = spawn_with(&s, &[(var, &proxy.url())]);
        expect_session(&s);
        assert_eq!(proxy.tunnels(), 1, "{var}");
        assert!(
            agent.wait_for_log(&format!("(from {var})"), Duration::from_secs(5)),
            "{var}: {}",
            agent.logs()
        );
    }
}

#[test]
fn no_proxy_bypasses_the_proxy() {
    let _w = watchdog(Duration::from_secs(90), "no_proxy_bypass");
    for (var, value) in [
        ("NO_PROXY", NAME),
        ("no_proxy", ".test"),
        ("NO_PROXY", "*"),
        ("no_proxy", "localhost, coordinator.test"),
    ] {
        let s = named_setup("proxy_no_proxy");
        let proxy = ConnectProxy::start(
            &[(&coordinator_target(&s), coordinator_addr(&s))],
            ProxyAuth::Open,
        );
        let agent = spawn_with(&s, &[("HTTPS_PROXY", &proxy.url()), (var, value)]);
        // Direct means resolving the made-up name, which fails.
        assert!(
            agent.wait_for_log(&format!("cannot resolve {NAME}"), Duration::from_secs(15)),
            "{var}={value}: {}",
            agent.logs()
        );
        assert_eq!(proxy.tcp_accepts(), 0, "{var}={value}");
        assert!(!agent.has_log("through proxy"), "{}", agent.logs());
    }
}

#[test]
fn a_loopback_coordinator_never_uses_the_proxy() {
    let _w = watchdog(Duration::from_secs(60), "loopback_no_proxy");
    // wss://localhost:PORT, with every proxy variable set and NO_PROXY empty.
    let s = Setup::new("proxy_loopback");
    let proxy = ConnectProxy::start(&[], ProxyAuth::Open);
    let url = proxy.url();
    let agent = spawn_with(
        &s,
        &[
            ("HTTPS_PROXY", &url),
            ("https_proxy", &url),
            ("ALL_PROXY", &url),
            ("all_proxy", &url),
            ("http_proxy", &url),
            ("NO_PROXY", ""),
        ],
    );
    expect_session(&s);
    assert_eq!(proxy.tcp_accepts(), 0);
    assert!(!agent.has_log("through proxy"), "{}", agent.logs());
}

#[test]
fn proxy_credentials_are_sent_but_never_logged() {
    let _w = watchdog(Duration::from_secs(60), "proxy_credentials");
    let s = named_setup("proxy_credentials");
    let (user, pass) = ("edge-op", "pa55:w@rd%");
    let encoded_pass = "pa55:w%40rd%25";
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
    let proxy = ConnectProxy::start(
        &[(&coordinator_target(&s), coordinator_addr(&s))],
        ProxyAuth::Require(format!("Basic {basic}")),
    );
    let agent = spawn_with(
        &s,
        &[(
            "HTTPS_PROXY",
            &proxy.url_with_credentials(user, encoded_pass),
        )],
    );
    expect_session(&s);
    assert_eq!(proxy.tunnels(), 1);
    let reqs = proxy.requests();
    assert_eq!(
        reqs[0].proxy_authorization.as_deref(),
        Some(format!("Basic {basic}").as_str())
    );
    assert!(agent.wait_for_log("with credentials", Duration::from_secs(5)));
    let logs = agent.logs();
    for secret in [user, pass, encoded_pass, "pa55", basic.as_str()] {
        assert!(
            !logs.contains(secret),
            "{secret:?} appears in the logs:\n{logs}"
        );
    }
}

#[test]
fn a_password_with_unescaped_slash_question_hash_and_at_is_still_user_info() {
    let _w = watchdog(Duration::from_secs(60), "proxy_password_delimiters");
    let mut s = named_setup("proxy_password_delimiters");
    s.set("/status/interval_s", serde_json::json!(0.1));
    let (user, pass) = ("edge-op", "s3/cr?t#x@y");
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
    let proxy = ConnectProxy::start(
        &[(&coordinator_target(&s), coordinator_addr(&s))],
        ProxyAuth::Require(format!("Basic {basic}")),
    );
    let agent = spawn_with(
        &s,
        &[("HTTPS_PROXY", &proxy.url_with_credentials(user, pass))],
    );
    // Kept open, so the state file shows the live session.
    let conn = s.coord.accept(Duration::from_secs(10));
    conn.authenticate(Some("prov-proxy"));
    conn.expect_capabilities(Duration::from_secs(10));
    assert_eq!(
        proxy.requests()[0].proxy_authorization.as_deref(),
        Some(format!("Basic {basic}").as_str()),
        "the whole password, up to the last @, went to the proxy"
    );
    assert!(agent.wait_for_log("with credentials", Duration::from_secs(5)));
    let state = s.key_path.with_file_name("state.json");
    assert!(support::wait_until(Duration::from_secs(3), || {
        std::fs::read_to_string(&state).is_ok_and(|t| t.contains("\"connected\""))
    }));
    let shown = format!(
        "{}\n{}",
        agent.logs(),
        std::fs::read_to_string(&state).unwrap()
    );
    for secret in [user, pass, "s3/cr", "cr?t", "t#x", basic.as_str()] {
        assert!(!shown.contains(secret), "{secret:?} was shown:\n{shown}");
    }
}

#[test]
fn a_407_is_logged_clearly() {
    let _w = watchdog(Duration::from_secs(60), "proxy_407");
    let s = named_setup("proxy_407");
    let route = [(coordinator_target(&s), coordinator_addr(&s))];
    let route: Vec<_> = route.iter().map(|(t, a)| (t.as_str(), *a)).collect();

    // No credentials at all.
    let proxy = ConnectProxy::start(&route, ProxyAuth::Require("Basic x".into()));
    let agent = spawn_with(&s, &[("HTTPS_PROXY", &proxy.url())]);
    let line = agent
        .wait_for_log_line("407 Proxy Authentication Required", Duration::from_secs(15))
        .map(|(_, l)| l)
        .unwrap_or_else(|| panic!("no 407 line:\n{}", agent.logs()));
    assert!(line.contains("needs credentials"), "{line}");
    assert!(
        line.contains(&format!("proxy http://127.0.0.1:{}", proxy.port())),
        "{line}"
    );
    assert_eq!(proxy.tunnels(), 0);
    drop(agent);

    // Wrong credentials: rejected, and the password stays out of the line.
    let proxy = ConnectProxy::start(&route, ProxyAuth::AlwaysDeny);
    let agent = spawn_with(
        &s,
        &[("HTTPS_PROXY", &proxy.url_with_credentials("op", "n0t-it"))],
    );
    let line = agent
        .wait_for_log_line("407 Proxy Authentication Required", Duration::from_secs(15))
        .map(|(_, l)| l)
        .unwrap_or_else(|| panic!("no 407 line:\n{}", agent.logs()));
    assert!(line.contains("rejected the credentials"), "{line}");
    assert!(!agent.logs().contains("n0t-it"), "{}", agent.logs());
    assert!(proxy.requests()[0].proxy_authorization.is_some());
}

#[test]
fn a_proxy_that_cannot_route_gives_its_status() {
    let _w = watchdog(Duration::from_secs(60), "proxy_502");
    let s = named_setup("proxy_502");
    let proxy = ConnectProxy::start(&[], ProxyAuth::Open);
    let agent = spawn_with(&s, &[("HTTPS_PROXY", &proxy.url())]);
    assert!(
        agent.wait_for_log(
            "the proxy refused CONNECT: 502 Bad Gateway",
            Duration::from_secs(15)
        ),
        "{}",
        agent.logs()
    );
}

#[test]
fn a_socks_proxy_is_a_config_error_without_echoing_the_password() {
    let _w = watchdog(Duration::from_secs(30), "socks_config_error");
    let s = named_setup("proxy_socks");
    let path = s.write_config();
    let out = run_cli(
        &["--config", path.to_str().unwrap(), "run"],
        &[
            ("no_proxy", ""),
            ("ALL_PROXY", "socks5://op:hunter2@127.0.0.1:1080"),
        ],
        s.dir.path(),
        Duration::from_secs(10),
    );
    assert_eq!(out.code, Some(2), "{}", out.describe());
    assert!(
        out.stderr.contains(
            "config error in environment: ALL_PROXY: socks5:// proxies are not supported"
        ),
        "{}",
        out.describe()
    );
    assert!(!out.stderr.contains("hunter2"), "{}", out.describe());
}

#[test]
fn ssl_cert_file_adds_a_trust_anchor() {
    let _w = watchdog(Duration::from_secs(60), "ssl_cert_file");
    let mut s = Setup::new("ssl_cert_file");
    // No ca_file: only SSL_CERT_FILE can make the test CA trusted.
    s.config = base_config(&s.coord.url(), None, &s.key_path);
    let ca = s.ca_file.to_str().unwrap().to_string();
    let _agent = spawn_with(&s, &[("SSL_CERT_FILE", &ca)]);
    expect_session(&s);

    // Unreadable: a config error naming the variable, exit 2.
    let path = s.write_config();
    let missing = s.dir.join("no-such-ca.pem");
    let out = run_cli(
        &["--config", path.to_str().unwrap(), "run"],
        &[("SSL_CERT_FILE", missing.to_str().unwrap())],
        s.dir.path(),
        Duration::from_secs(10),
    );
    assert_eq!(out.code, Some(2), "{}", out.describe());
    assert!(
        out.stderr
            .contains("config error in environment: SSL_CERT_FILE: cannot read"),
        "{}",
        out.describe()
    );
}

#[test]
fn ssl_cert_file_and_ca_file_both_count() {
    let _w = watchdog(Duration::from_secs(60), "ssl_cert_file_and_ca_file");
    // ca_file trusts an unrelated CA; SSL_CERT_FILE holds the coordinator's.
    let mut s = Setup::new("ssl_cert_file_and_ca_file");
    let other = TestCa::new();
    let other_file = s.dir.join("other-ca.pem");
    std::fs::write(&other_file, &other.ca_pem).unwrap();
    s.config = base_config(&s.coord.url(), Some(&other_file), &s.key_path);
    let ca = s.ca_file.to_str().unwrap().to_string();
    let _agent = spawn_with(&s, &[("SSL_CERT_FILE", &ca)]);
    expect_session(&s);
}

#[test]
fn doctor_checks_the_coordinator_through_the_proxy() {
    let _w = watchdog(Duration::from_secs(60), "doctor_through_proxy");
    let s = named_setup("proxy_doctor");
    let proxy = ConnectProxy::start(
        &[(&coordinator_target(&s), coordinator_addr(&s))],
        ProxyAuth::Open,
    );
    let path = s.write_config();
    let out = run_cli(
        &["--config", path.to_str().unwrap(), "doctor"],
        &[
            ("HTTPS_PROXY", &proxy.url()),
            ("no_proxy", ""),
            ("SSL_CERT_FILE", ""),
        ],
        s.dir.path(),
        Duration::from_secs(40),
    );
    let via = format!("proxy http://127.0.0.1:{} from HTTPS_PROXY", proxy.port());
    for name in ["coordinator_dns", "coordinator_tcp", "coordinator_tls"] {
        let line = out
            .stdout
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(name))
            .unwrap_or_else(|| panic!("no {name} line:\n{}", out.stdout));
        assert!(line.starts_with("PASS"), "{line}\n{}", out.stdout);
        if name != "coordinator_tls" {
            assert!(line.contains(&via), "{line}");
        }
    }
    assert!(
        s.coord.try_accept(Duration::from_secs(2)).is_some(),
        "the coordinator saw the upgrade through the tunnel"
    );
    assert!(proxy.tunnels() >= 2, "TCP and TLS checks both tunnelled");
}
