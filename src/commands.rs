//! What each command does, for the thin `main` that parses the command line:
//! logging and config loading first, then one function per command. `run` is
//! where the running agent's parts are put together.

use crate::cli::{self, Command};
use crate::config::{self, Config, Overrides};
use crate::identity::Identity;
use crate::{
    agent, discovery, gate, hardware, net, session, shutdown, state, supervisor, untrusted,
};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

/// The log target of these lines: the command's own, under the crate's name, as
/// they were when they came from the binary's main (log filters and readers of
/// the log see them there, not under a module path).
const TARGET: &str = "usepod_edge";

/// Exit status for a config or usage problem, distinct from runtime failures.
pub const EXIT_CONFIG: u8 = 2;

/// Why logging could not be set up.
#[derive(Debug)]
pub enum LoggingError {
    /// Not a level name (the text given).
    Level(String),
    Init(log::SetLoggerError),
}

impl std::fmt::Display for LoggingError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoggingError::Level(text) => write!(
                f,
                "unknown log level {text:?} (error, warn, info, debug, trace)"
            ),
            LoggingError::Init(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for LoggingError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LoggingError::Level(_) => None,
            LoggingError::Init(e) => Some(e),
        }
    }
}

pub fn init_logging(flag: Option<&str>) -> Result<(), LoggingError> {
    let text = flag
        .map(str::to_owned)
        .or_else(|| std::env::var("USEPOD_EDGE_LOG").ok())
        .unwrap_or_else(|| "info".into());
    let level: log::LevelFilter = text
        .parse()
        .map_err(|_| LoggingError::Level(text.clone()))?;
    simple_logger::SimpleLogger::new()
        .with_level(level)
        // Their debug output is about their internals, not about this agent.
        .with_module_level("rustls", level.min(log::LevelFilter::Info))
        .with_module_level("tungstenite", level.min(log::LevelFilter::Info))
        .with_utc_timestamps()
        .init()
        .map_err(LoggingError::Init)
}

/// The config file named by flag or environment (explicit) or the default.
pub fn config_path(cli: &cli::Cli) -> (PathBuf, bool) {
    match (&cli.config, std::env::var_os(config::ENV_CONFIG)) {
        (Some(p), _) => (p.clone(), true),
        (None, Some(p)) if !p.is_empty() => (PathBuf::from(p), true),
        _ => (config::default_config_path(), false),
    }
}

pub fn load_config(cli: &cli::Cli) -> Result<Config, ExitCode> {
    let (path, mut explicit) = config_path(cli);
    // `pair` writes the config, so a missing one is expected there; with
    // --force a broken one is about to be replaced.
    if cli.command == Command::Pair {
        explicit = false;
        if cli.force && Config::load(&path, false, &Overrides::from_env()).is_err() {
            return Config::from_str(&path.display().to_string(), "{}", &Overrides::from_env())
                .map_err(|_| ExitCode::from(EXIT_CONFIG));
        }
    }
    match Config::load(&path, explicit, &Overrides::from_env()) {
        Ok(c) => {
            if c.source.is_none() {
                log::info!(target: TARGET, "no config file at {}; using defaults", path.display());
            }
            for w in &c.warnings {
                log::warn!(target: TARGET, "{w}");
            }
            Ok(c)
        }
        Err(e) => {
            log::error!(target: TARGET, "{e}");
            Err(ExitCode::from(EXIT_CONFIG))
        }
    }
}

pub fn validate(config: &Config) -> ExitCode {
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
    for line in gate::explain_config(config) {
        println!("{line}");
    }
    for w in &config.warnings {
        println!("warning: {w}");
    }
    ExitCode::SUCCESS
}

pub fn show_identity(config: &Config) -> ExitCode {
    match Identity::load(&config.key_path) {
        Ok(id) => {
            println!("file: {}", id.path().display());
            println!("public: {}", id.public_b64());
            let pid = id
                .provider_id()
                .map(|p| untrusted::shown(p, 140).to_string());
            println!("provider_id: {}", pid.as_deref().unwrap_or("none"));
            ExitCode::SUCCESS
        }
        Err(e) => {
            log::error!(target: TARGET, "{e}");
            ExitCode::FAILURE
        }
    }
}

pub fn discover(config: &Config) -> ExitCode {
    let d = discovery::Discovery::new(config);
    d.round();
    let snap = d.snapshot();
    if snap.backends.is_empty() {
        println!("no backend found");
    }
    for (t, probe) in &snap.backends {
        let Some(p) = probe else { continue };
        let state = if p.healthy {
            "healthy".to_owned()
        } else {
            format!("unavailable: {}", p.problem.as_deref().unwrap_or("?"))
        };
        let slots = p.slots.map(|s| format!(", {s} slots")).unwrap_or_default();
        println!("{} {} ({state}{slots})", t.kind.as_str(), t.url);
        for m in &p.models {
            let routed = snap
                .routes
                .get(&m.id)
                .is_some_and(|r| Arc::ptr_eq(&r.target, t));
            let ctx = m
                .context_window
                .map(|c| format!(" context {c}"))
                .unwrap_or_default();
            let note = if routed { "" } else { " (not offered here)" };
            println!("  {}{ctx}{note}", m.id);
        }
    }
    // What capabilities will say about this machine.
    println!("hardware: {}", hardware::describe(&gate::root()));
    if snap.routes.is_empty() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

pub fn run(config: Config) -> ExitCode {
    if crate::release::version::test_trailer().is_some_and(|t| t.crash_on_run) {
        panic!("test hook: this build crashes as it starts (USEPOD_EDGE_TEST_TRAILER)");
    }
    let (identity, created) = match Identity::load_or_create(&config.key_path) {
        Ok(r) => r,
        Err(e) => {
            log::error!(target: TARGET, "{e}");
            return ExitCode::FAILURE;
        }
    };
    if created {
        log::info!(target: TARGET, "created a new identity at {}", config.key_path.display());
    }
    let pid = identity
        .provider_id()
        .map(|p| untrusted::shown(p, 140).to_string());
    log::info!(
        target: TARGET,
        "usepod-edge {} public key {} provider_id {}",
        crate::release::version::running(),
        identity.public_b64(),
        pid.as_deref().unwrap_or("(none yet)")
    );
    let roots = match session::trust_anchors(
        &config.coordinator,
        std::env::var_os(session::ENV_SSL_CERT_FILE),
    ) {
        Ok(r) => r,
        Err(e) => {
            log::error!(target: TARGET, "{e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    // A proxy variable that can never work (socks5://, https://) is a config
    // error now, not a reconnect loop later.
    if let Err(e) = net::proxy::from_env(&config.coordinator.url) {
        log::error!(target: TARGET, "config error in environment: {e}");
        return ExitCode::from(EXIT_CONFIG);
    }
    let tls = match net::tls::client_config(&roots) {
        Ok(t) => t,
        Err(e) => {
            log::error!(target: TARGET, "{e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let agent = Arc::new(agent::Agent::new(config, identity, tls));
    discovery::spawn(Arc::clone(&agent.discovery));
    // Before the first session, so its first capabilities already obey a pause.
    gate::start(Arc::clone(&agent));
    state::spawn_writer(Arc::clone(&agent));
    let (wake_tx, wake_rx) = crossbeam_channel::bounded::<()>(1);
    if let Err(e) = shutdown::install(Arc::clone(&agent), wake_tx) {
        log::error!(target: TARGET, "cannot install signal handlers: {e}");
        return ExitCode::FAILURE;
    }
    supervisor::run(&agent, &wake_rx);
    // Lines of the last jobs may still be queued for the ledger.
    agent.jobs.ledger.flush(std::time::Duration::from_secs(2));
    let status = shutdown::exit_status(&agent);
    log::info!(target: TARGET, "stopped");
    ExitCode::from(status)
}
