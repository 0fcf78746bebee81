//! `usepod-edge validate`: the config as the agent reads it, in words.

use crate::config::Config;
use crate::gate;
use crate::host::Host;
use std::process::ExitCode;

pub fn run(config: &Config, host: &Host) -> ExitCode {
    let src = config
        .source
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "(no file: defaults)".into());
    println!("config: {src} is valid");
    let c = &config.coordinator;
    let insecure = if c.allow_insecure {
        " (insecure ws:// allowed)"
    } else {
        ""
    };
    println!("coordinator: {}{insecure}", c.url);
    if let Some(ca) = &c.ca_file {
        println!(
            "extra CA: {} ({} certificate(s))",
            ca.display(),
            c.extra_roots.len()
        );
    }
    println!("identity: {}", config.key_path.display());
    let l = &config.ledger;
    println!(
        "ledger: {} (rotated past {} bytes, {} old file(s) kept)",
        l.path.display(),
        l.max_bytes,
        l.keep
    );
    if config.backends.is_empty() {
        println!(
            "backends: none configured; probing 127.0.0.1 ports {}",
            crate::backend::default_ports_text()
        );
    }
    for b in &config.backends {
        let allow = b
            .models
            .as_ref()
            .map(|m| format!(" models {m:?}"))
            .unwrap_or_default();
        let key = b
            .api_key_env
            .as_ref()
            .map(|e| format!(" key from ${e}"))
            .unwrap_or_default();
        let insecure = if b.allow_insecure {
            " (API key allowed over plain http)"
        } else {
            ""
        };
        println!(
            "backend: {} {}{allow}{key}{insecure}",
            b.kind.as_str(),
            b.url
        );
    }
    println!("max_concurrent: {}", config.limits.max_concurrent);
    for line in gate::explain_config(config, host) {
        println!("{line}");
    }
    for w in &config.warnings {
        println!("warning: {w}");
    }
    ExitCode::SUCCESS
}
