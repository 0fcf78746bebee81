//! Command-line parsing in two stages: raw words, then a validated [`Cli`].

use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Run,
    Validate,
    Identity,
    Discover,
    Status,
    Doctor,
    Pair,
    Pause,
    Resume,
    Reload,
    Ledger,
    Upgrade,
    ReleaseKey,
    ReleaseSign,
}

/// `ledger --since DATE --by day|model`
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LedgerArgs {
    pub since: Option<String>,
    pub by: Option<crate::ledger::GroupBy>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cli {
    pub command: Command,
    pub config: Option<PathBuf>,
    pub log_level: Option<String>,
    /// `status --json`
    pub json: bool,
    /// `pair --api URL`
    pub api: Option<String>,
    /// `pair --force`: replace an existing config
    pub force: bool,
    pub ledger: LedgerArgs,
    /// `pause --drain`: wait until the running jobs have finished
    pub drain: bool,
    /// `upgrade --from ... --sig ... --dry-run --allow-downgrade`
    pub upgrade: crate::upgrade::Args,
    /// `release-key PATH`, `release-sign FILE...`
    pub files: Vec<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    Go(Cli),
    Help,
    Version,
}

pub const USAGE: &str = "\
usepod-edge: a Use Pod provider agent for edge GPUs

usage: usepod-edge [--config PATH] [--log-level LEVEL] [COMMAND]

commands:
  run        connect to the coordinator and serve jobs (default)
  validate   check the config file and print what it resolves to
  identity   print this agent's public key and provider_id
  discover   probe the backends once, print what was found (and the
             hardware description capabilities carry), and exit
  status     what the running agent is doing (--json for the raw state)
  doctor     check config, identity, clock, disk, coordinator and backends
  pair       pair this device with your Use Pod account and write the config
             (--api URL, default https://api.usepod.ai; --force replaces a config)
  ledger     sum the earnings ledger: jobs, tokens, expected USDC, errors
             (--since 2026-11-01|RFC 3339 time|7d|12h, --by day|model, --json)
  pause      the running agent stops taking jobs and withdraws its models;
             running jobs finish (--drain waits for them); lasts until resume
  resume     the running agent takes jobs again
  reload     the running agent reads its config again and applies it without
             dropping its session or a job; prints what changed (or why not)
  upgrade    install a signed release in place of this binary and restart the
             running agent on it: --from PATH|URL (signature: --sig, default
             the same with .sig), --dry-run checks everything but swaps
             nothing, --allow-downgrade; rolled back if it fails its starts

release tooling (docs/upgrades.md):
  release-key PATH     write a new signing key, print its public key
  release-sign FILE..  write FILE.sig with the key in $USEPOD_EDGE_SIGNING_KEY_FILE
                       (or base64 in $USEPOD_EDGE_SIGNING_KEY)

options:
  -c, --config PATH      config file (env USEPOD_EDGE_CONFIG; default
                         ~/.config/usepod-edge/config.json if present,
                         else /etc/usepod-edge/config.json)
      --json             with status and ledger: print JSON
      --drain            with pause: wait until no job is running
  -l, --log-level LEVEL  error, warn, info (default), debug, trace
                         (env USEPOD_EDGE_LOG)
  -V, --version          print the version
  -h, --help             print this help

environment: USEPOD_EDGE_COORDINATOR_URL, USEPOD_EDGE_ENROLLMENT_CODE,
USEPOD_EDGE_KEY_PATH override the matching config keys.
";

/// A command line that cannot be run; the text says why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Parsed, UsageError> {
    let mut command = None;
    let mut config = None;
    let mut log_level = None;
    let mut json = false;
    let mut api = None;
    let mut force = false;
    let mut ledger = LedgerArgs::default();
    let mut drain = false;
    let mut upgrade = crate::upgrade::Args::default();
    let mut files = Vec::new();
    let mut args = args.into_iter();
    while let Some(a) = args.next() {
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
            _ => (a.clone(), None),
        };
        let mut value = |name: &str| {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| UsageError(format!("{name} needs a value")))
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(Parsed::Help),
            "-V" | "--version" => return Ok(Parsed::Version),
            "-c" | "--config" => config = Some(PathBuf::from(value("--config")?)),
            "-l" | "--log-level" => log_level = Some(value("--log-level")?),
            "--json" => json = true,
            "--api" => api = Some(value("--api")?),
            "--force" => force = true,
            "--since" => ledger.since = Some(value("--since")?),
            "--by" => {
                let v = value("--by")?;
                let by = crate::ledger::GroupBy::parse(&v)
                    .ok_or_else(|| UsageError(format!("--by wants day or model, got {v:?}")))?;
                ledger.by = Some(by);
            }
            "--drain" => drain = true,
            "--from" => upgrade.from = Some(value("--from")?),
            "--sig" => upgrade.sig = Some(value("--sig")?),
            "--dry-run" => upgrade.dry_run = true,
            "--allow-downgrade" => upgrade.allow_downgrade = true,
            w if w.starts_with('-') => return Err(UsageError(format!("unknown option {w}"))),
            w if matches!(command, Some(Command::ReleaseKey | Command::ReleaseSign)) => {
                files.push(PathBuf::from(w));
            }
            w => {
                let c = match w {
                    "run" => Command::Run,
                    "validate" => Command::Validate,
                    "identity" => Command::Identity,
                    "discover" => Command::Discover,
                    "status" => Command::Status,
                    "doctor" => Command::Doctor,
                    "pair" => Command::Pair,
                    "ledger" => Command::Ledger,
                    "pause" => Command::Pause,
                    "resume" => Command::Resume,
                    "reload" => Command::Reload,
                    "upgrade" => Command::Upgrade,
                    "release-key" => Command::ReleaseKey,
                    "release-sign" => Command::ReleaseSign,
                    other => return Err(UsageError(format!("unknown command {other:?}"))),
                };
                if command.replace(c).is_some() {
                    return Err(UsageError("only one command may be given".into()));
                }
            }
        }
    }
    Ok(Parsed::Go(Cli {
        command: command.unwrap_or(Command::Run),
        config,
        log_level,
        json,
        api,
        force,
        ledger,
        drain,
        upgrade,
        files,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Parsed, UsageError> {
        parse(args.iter().map(|s| s.to_string()))
    }

    /// Why `args` are refused.
    fn refused(args: &[&str]) -> String {
        p(args).unwrap_err().to_string()
    }

    #[test]
    fn parses_commands_and_flags() {
        assert_eq!(
            p(&["--config", "/x", "validate"]).unwrap(),
            Parsed::Go(Cli {
                command: Command::Validate,
                config: Some("/x".into()),
                log_level: None,
                json: false,
                api: None,
                force: false,
                ledger: LedgerArgs::default(),
                drain: false,
                upgrade: Default::default(),
                files: Vec::new(),
            })
        );
        assert_eq!(
            p(&["--log-level=debug"]).unwrap(),
            Parsed::Go(Cli {
                command: Command::Run,
                config: None,
                log_level: Some("debug".into()),
                json: false,
                api: None,
                force: false,
                ledger: LedgerArgs::default(),
                drain: false,
                upgrade: Default::default(),
                files: Vec::new(),
            })
        );
        assert_eq!(p(&["run", "--version"]).unwrap(), Parsed::Version);
        assert_eq!(p(&["-h"]).unwrap(), Parsed::Help);
        let Parsed::Go(c) = p(&["pause", "--drain"]).unwrap() else {
            panic!("pause parses")
        };
        assert_eq!((c.command, c.drain), (Command::Pause, true));
        let Parsed::Go(c) = p(&["resume"]).unwrap() else {
            panic!("resume parses")
        };
        assert_eq!((c.command, c.drain), (Command::Resume, false));
    }

    #[test]
    fn ledger_flags() {
        let Parsed::Go(c) = p(&["ledger", "--since", "7d", "--by=model", "--json"]).unwrap() else {
            panic!("not a command")
        };
        assert_eq!(c.command, Command::Ledger);
        assert!(c.json);
        assert_eq!(
            c.ledger,
            LedgerArgs {
                since: Some("7d".into()),
                by: Some(crate::ledger::GroupBy::Model),
            }
        );
        assert_eq!(
            refused(&["ledger", "--by", "week"]),
            "--by wants day or model, got \"week\""
        );
        assert!(refused(&["ledger", "--since"]).contains("needs a value"));
    }

    #[test]
    fn upgrade_and_release_tooling() {
        let Parsed::Go(c) = p(&["upgrade", "--from", "https://x/b", "--dry-run"]).unwrap() else {
            panic!("upgrade parses")
        };
        assert_eq!(c.command, Command::Upgrade);
        assert_eq!(
            c.upgrade,
            crate::upgrade::Args {
                from: Some("https://x/b".into()),
                sig: None,
                dry_run: true,
                allow_downgrade: false
            }
        );
        let Parsed::Go(c) = p(&["release-sign", "a", "b"]).unwrap() else {
            panic!("release-sign parses")
        };
        assert_eq!(c.command, Command::ReleaseSign);
        assert_eq!(c.files, [PathBuf::from("a"), PathBuf::from("b")]);
        assert!(refused(&["upgrade", "extra"]).contains("unknown command"));
    }

    #[test]
    fn rejects_bad_words() {
        assert!(refused(&["--config"]).contains("needs a value"));
        assert!(refused(&["--nope"]).contains("unknown option"));
        assert!(refused(&["fly"]).contains("unknown command"));
        assert!(refused(&["run", "validate"]).contains("only one"));
    }
}
