//! The command layer: each command's arguments, what it prints and its exit status,
//! one file per command. Nothing below this layer prints: the domain modules return
//! typed results (and, for the long commands, their progress as values) for these
//! files to show.

mod codes;
mod discover;
mod doctor;
mod identity;
mod ledger;
mod pair;
mod pause;
mod release;
mod reload;
mod run;
mod setup;
mod status;
mod upgrade;
mod validate;

use crate::cli::{Cli, Command};
use crate::host::Host;
use std::process::ExitCode;

pub use codes::EXIT_CONFIG;
pub use setup::{config_path, init_logging};

/// Runs one parsed command line on this host.
pub fn dispatch(cli: Cli, host: Host) -> ExitCode {
    if let Err(e) = init_logging(cli.log_level.as_deref(), &host) {
        eprintln!("usepod-edge: {e}");
        return ExitCode::from(EXIT_CONFIG);
    }
    // Release tooling needs no config.
    match cli.command {
        Command::ReleaseKey => return release::new_key(&cli.files),
        Command::ReleaseSign => return release::sign(&cli.files, &host),
        _ => {}
    }
    let config = match setup::load_config(&cli) {
        Ok(c) => c,
        Err(_) if cli.command == Command::Reload => {
            eprintln!("usepod-edge: reload refused: the config is not valid (above); the running agent keeps its own");
            return ExitCode::FAILURE;
        }
        Err(code) => return code,
    };
    match cli.command {
        Command::Validate => validate::run(&config, &host),
        Command::Identity => identity::run(&config),
        Command::Discover => discover::run(&config, &host),
        Command::Status => status::run(&config, &host, cli.json),
        Command::Ledger => ledger::run(&config.ledger, &cli.ledger, cli.json),
        Command::Doctor => doctor::run(&config, &host),
        Command::Pair => pair::run(&config_path(&cli).0, &cli, &config, &host),
        Command::Pause => pause::pause(&config, cli.drain),
        Command::Resume => pause::resume(&config),
        Command::Reload => reload::run(&config),
        Command::Upgrade => upgrade::run(&config, &config_path(&cli).0, &cli.upgrade, &host),
        Command::ReleaseKey | Command::ReleaseSign => ExitCode::SUCCESS,
        Command::Run => run::run(config, config_path(&cli).0, host),
    }
}
