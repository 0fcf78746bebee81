//! The program: what `main` does, in the library so that a bench-only binary with a
//! counting allocator (benches/alloc_count) runs exactly the agent that ships.

use crate::cli::{self, Command, Parsed};
use crate::commands::{self, EXIT_CONFIG};
use crate::{doctor, ledger, pair, pause, state, upgrade};
use std::process::ExitCode;

/// The whole command line: parse, set up logging and config, run the command.
pub fn main() -> ExitCode {
    let parsed = match cli::parse(std::env::args().skip(1)) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("usepod-edge: {e}\n\n{}", cli::USAGE);
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let cli = match parsed {
        Parsed::Help => {
            print!("{}", cli::USAGE);
            return ExitCode::SUCCESS;
        }
        Parsed::Version => {
            println!("usepod-edge {}", crate::release::version::running());
            return ExitCode::SUCCESS;
        }
        Parsed::Go(cli) => cli,
    };
    if let Err(e) = commands::init_logging(cli.log_level.as_deref()) {
        eprintln!("usepod-edge: {e}");
        return ExitCode::from(EXIT_CONFIG);
    }
    // Release tooling needs no config.
    match cli.command {
        Command::ReleaseKey => return upgrade::sign::new_key(&cli.files),
        Command::ReleaseSign => return upgrade::sign::sign_files(&cli.files),
        _ => {}
    }
    let config = match commands::load_config(&cli) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match cli.command {
        Command::Validate => commands::validate(&config),
        Command::Identity => commands::show_identity(&config),
        Command::Discover => commands::discover(&config),
        Command::Status => state::show(&config, cli.json),
        Command::Ledger => ledger::show(
            &config.ledger,
            cli.ledger.since.as_deref(),
            cli.ledger.by,
            cli.json,
        ),
        Command::Doctor => doctor::run(&config),
        Command::Pair => {
            let path = commands::config_path(&cli).0;
            pair::run(&path, cli.api.as_deref(), cli.force, &config)
        }
        Command::Pause => pause::pause_cmd(&config, cli.drain),
        Command::Resume => pause::resume_cmd(&config),
        Command::Upgrade => {
            let path = commands::config_path(&cli).0;
            upgrade::run(&config, &path, &cli.upgrade)
        }
        Command::ReleaseKey | Command::ReleaseSign => ExitCode::SUCCESS,
        Command::Run => commands::run(config),
    }
}
