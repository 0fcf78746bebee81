//! `usepod-edge doctor`'s checks: each has a stable name and a deadline, and says
//! what it found or why it failed.

use crate::cancel::Cancel;
use crate::client::{self, Request};
use crate::config::Config;
use crate::host::{Env, Host};
use crate::identity::Identity;
use crate::net;
use crossbeam_channel::bounded;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// 2026-01-01T00:00:00Z: a clock before this release was built is wrong.
const CLOCK_FLOOR_UNIX: u64 = 1_767_225_600;
const SHORT: Duration = Duration::from_secs(10);
/// A one-token completion may have to load the model first.
const COMPLETION: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

/// Why a check failed: any error, or a sentence (`String` converts).
type Failure = Box<dyn std::error::Error + Send + Sync>;

/// Runs `f` on its own thread and gives up after `limit`, so one hung check
/// (DNS has no timeout of its own) cannot stall the rest. `f` returns what
/// the check found, or why it failed.
fn with_deadline(
    name: &str,
    limit: Duration,
    f: impl FnOnce() -> Result<String, Failure> + Send + 'static,
) -> Check {
    let (tx, rx) = bounded(1);
    let spawned = std::thread::Builder::new()
        .name(format!("doctor-{name}"))
        .spawn(move || {
            let _ = tx.send(f());
        });
    let result = match spawned {
        Err(e) => Err(format!("cannot start the check: {e}").into()),
        Ok(_) => rx
            .recv_timeout(limit)
            .unwrap_or_else(|_| Err(format!("no answer within {}s", limit.as_secs()).into())),
    };
    let (ok, detail) = match result {
        Ok(d) => (true, d),
        Err(e) => (false, e.to_string()),
    };
    Check {
        name: name.to_owned(),
        ok,
        detail,
    }
}

fn check_identity(config: &Config) -> Check {
    let path = config.key_path.clone();
    with_deadline("identity", SHORT, move || {
        let id = Identity::load(&path)?;
        let mode = std::fs::metadata(&path)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(format!(
                "{} has mode {mode:o}; it holds the secret key and must be 0600",
                path.display()
            )
            .into());
        }
        Ok(format!(
            "{} readable, mode 600, provider_id {}",
            path.display(),
            id.provider_id()
                .map(|p| crate::untrusted::shown(p, 140).to_string())
                .as_deref()
                .unwrap_or("none yet")
        ))
    })
}

/// DNS, TCP and TLS to the coordinator, each its own check. Behind a proxy the
/// agent resolves and connects to the proxy only (the proxy resolves the
/// coordinator), so that is what DNS and TCP check there.
fn check_coordinator(
    config: &Config,
    tls: std::sync::Arc<rustls::ClientConfig>,
    env: &Env,
) -> Vec<Check> {
    let url = config.coordinator.url.clone();
    let proxy = match net::proxy::for_target(&url, env) {
        Ok(p) => p,
        Err(e) => {
            return vec![Check {
                name: "coordinator_proxy".into(),
                ok: false,
                detail: format!("proxy setting {e}"),
            }]
        }
    };
    let via = proxy
        .as_ref()
        .map(|p| format!(" (proxy {p} from {})", p.source))
        .unwrap_or_default();
    let first_hop = proxy.map_or_else(|| url.clone(), |p| p.endpoint);
    let host = first_hop.host.clone();
    let port = first_hop.port;
    let dns_via = via.clone();
    let dns = with_deadline("coordinator_dns", SHORT, move || {
        let addrs = net::resolve(&host, port).map_err(|e| format!("{e}{dns_via}"))?;
        Ok(format!("{host} → {}{dns_via}", addrs[0]))
    });
    if !dns.ok {
        return vec![dns];
    }
    let cfg = config.coordinator.clone();
    let tcp_env = env.clone();
    let tcp = with_deadline(
        "coordinator_tcp",
        cfg.connect_timeout + cfg.handshake_timeout + SHORT,
        move || {
            let t = Instant::now();
            let sock = net::open(&cfg.url, &tcp_env, crate::session::timeouts(&cfg))
                .map_err(crate::session::SessionError::from)?;
            let peer = sock
                .peer_addr()
                .map(|a| a.to_string())
                .unwrap_or_else(|_| "?".into());
            Ok(format!(
                "connected to {}{via} via {peer} in {} ms",
                cfg.url.authority(),
                t.elapsed().as_millis()
            ))
        },
    );
    if !tcp.ok {
        return vec![dns, tcp];
    }
    let cfg = config.coordinator.clone();
    let max_inbound = crate::session::max_inbound_message(config.limits.max_request_bytes);
    let env = env.clone();
    let ws = with_deadline(
        "coordinator_tls",
        cfg.connect_timeout + cfg.handshake_timeout + SHORT,
        move || {
            let ws = crate::session::dial(&cfg, &tls, max_inbound, &env)?;
            ws.get_ref().shutdown();
            let what = if cfg.url.scheme == crate::endpoint::Scheme::Wss {
                "TLS certificate verified, WebSocket upgrade accepted"
            } else {
                "plain ws:// (no TLS), WebSocket upgrade accepted"
            };
            Ok(what.into())
        },
    );
    vec![dns, tcp, ws]
}

fn check_backends(config: &Config) -> Vec<Check> {
    let d = crate::discovery::Discovery::new(config);
    d.round();
    let snap = d.snapshot();
    if snap.backends.is_empty() {
        return vec![Check {
            name: "backends".into(),
            ok: false,
            detail: format!(
                "none configured and none found on 127.0.0.1 ports {}",
                crate::backend::default_ports_text()
            ),
        }];
    }
    let mut out = Vec::new();
    for (t, p) in &snap.backends {
        let name = format!("backend {} {}", t.kind.as_str(), t.url);
        let Some(p) = p.as_ref().filter(|p| p.healthy) else {
            let why = p
                .as_ref()
                .and_then(|p| p.problem.clone())
                .unwrap_or_else(|| "not probed".into());
            out.push(Check {
                name,
                ok: false,
                detail: why,
            });
            continue;
        };
        let Some(model) = p.models.first().map(|m| m.id.clone()) else {
            out.push(Check {
                name,
                ok: false,
                detail: "healthy but lists no model".into(),
            });
            continue;
        };
        let (url, key) = (t.url.clone(), t.api_key.clone());
        let slots = p.slots.map(|s| format!(", {s} slots")).unwrap_or_default();
        let n = p.models.len();
        out.push(with_deadline(&name, COMPLETION + SHORT, move || {
            let body = serde_json::json!({"model": model, "max_tokens": 1,
                "messages": [{"role": "user", "content": "ping"}]})
            .to_string();
            let req = Request {
                method: "POST",
                path: "/v1/chat/completions",
                headers: &[("Content-Type", "application/json")],
                api_key: key.as_deref(),
                body: Some(body.as_bytes()),
            };
            let t = Instant::now();
            let mut resp = client::send(
                &url,
                &req,
                client::Limits::quick(COMPLETION),
                &Cancel::default(),
            )?;
            let answer = resp.read_prefix(4096);
            if !(200..300).contains(&resp.status) {
                let text = String::from_utf8_lossy(&answer);
                let excerpt = crate::untrusted::shown(&text, 200);
                return Err(format!(
                    "one-token completion on {model}: HTTP {} {excerpt}",
                    resp.status
                )
                .into());
            }
            Ok(format!(
                "{n} model(s){slots}; one-token completion on {model} in {} ms",
                t.elapsed().as_millis()
            ))
        }));
    }
    out
}

/// The clock check on the time `now` reads: a device without a real-time clock starts in
/// 1970 (or at its last build) until NTP answers, and TLS cannot verify until then.
fn check_clock(now: SystemTime) -> Check {
    let secs = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let ok = secs >= CLOCK_FLOOR_UNIX;
    let shown = crate::clock::rfc3339(now);
    Check {
        name: "clock".into(),
        ok,
        detail: if ok {
            format!("{shown} UTC")
        } else {
            format!(
                "system time {shown} is before this release; TLS certificates will not verify (is NTP running?)"
            )
        },
    }
}

fn check_disk(config: &Config) -> Check {
    let dir = config
        .status
        .state_file
        .parent()
        .map(|p| p.to_path_buf())
        .unwrap_or_default();
    with_deadline("disk", SHORT, move || {
        let probe = dir.join(format!(".doctor-{}", std::process::id()));
        crate::atomic_file::write(&probe, b"ok", 0o600)
            .map_err(|e| format!("cannot write in {}: {e}", dir.display()))?;
        let _ = std::fs::remove_file(&probe);
        Ok(format!("{} is writable", dir.display()))
    })
}

/// Runs every check, each under its deadline.
pub fn checks(config: &Config, host: &Host) -> Vec<Check> {
    let mut checks = vec![Check {
        name: "config".into(),
        ok: true,
        detail: config
            .source
            .as_ref()
            .map(|p| format!("{} is valid", p.display()))
            .unwrap_or_else(|| "no file; defaults are valid".into()),
    }];
    checks.push(check_identity(config));
    checks.push(check_clock(SystemTime::now()));
    checks.push(check_disk(config));
    // The same trust anchors as the agent: ca_file plus $SSL_CERT_FILE.
    let roots = crate::session::trust_anchors(&config.coordinator, &host.env)
        .map_err(|e| e.to_string())
        .and_then(|r| net::tls::client_config(&r).map_err(|e| e.to_string()));
    match roots {
        Ok(tls) => checks.extend(check_coordinator(config, tls, &host.env)),
        Err(detail) => checks.push(Check {
            name: "coordinator_tls".into(),
            ok: false,
            detail,
        }),
    }
    checks.extend(check_backends(config));
    checks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hung_check_fails_at_its_deadline() {
        let t = Instant::now();
        let c = with_deadline("slow", Duration::from_millis(100), || {
            std::thread::sleep(Duration::from_secs(5));
            Ok(String::new())
        });
        assert!(!c.ok && c.detail.contains("no answer"));
        assert!(t.elapsed() < Duration::from_secs(2));
        assert!(with_deadline("fast", SHORT, || Ok("fine".into())).ok);
        assert_eq!(
            with_deadline("bad", SHORT, || Err("broken".into())).detail,
            "broken"
        );
    }

    #[test]
    fn the_clock_passes_from_the_release_floor_on_and_fails_before_it() {
        let at = |secs: u64| UNIX_EPOCH + Duration::from_secs(secs);
        assert_eq!(
            crate::clock::rfc3339(at(CLOCK_FLOOR_UNIX)),
            "2026-01-01T00:00:00.000000000+00:00"
        );
        let floor = check_clock(at(CLOCK_FLOOR_UNIX));
        assert_eq!(
            (floor.name.as_str(), floor.ok, floor.detail.as_str()),
            ("clock", true, "2026-01-01T00:00:00.000000000+00:00 UTC")
        );
        assert!(check_clock(at(2_000_000_000)).ok, "2033");
        // An RTC-less board just after boot, and one second before the floor.
        for (secs, shown) in [
            (42, "1970-01-01T00:00:42.000000000+00:00"),
            (CLOCK_FLOOR_UNIX - 1, "2025-12-31T23:59:59.000000000+00:00"),
        ] {
            let c = check_clock(at(secs));
            assert!(!c.ok, "{shown}");
            assert_eq!(
                c.detail,
                format!(
                    "system time {shown} is before this release; TLS certificates will not \
                     verify (is NTP running?)"
                )
            );
        }
    }
}
