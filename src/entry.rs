//! The program: what `main` does, in the library so that a bench-only binary with a
//! counting allocator (benches/alloc_count) runs exactly the agent that ships.
//! The command line is parsed, the Host read from the process, and both handed to
//! the command layer (src/cmd/).

use crate::cli::{self, Parsed};
use crate::cmd::{self, EXIT_CONFIG};
use crate::host::Host;
use std::process::ExitCode;

/// The whole command line: parse, read the process once, run the command.
pub fn main() -> ExitCode {
    let parsed = match cli::parse(std::env::args().skip(1)) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("usepod-edge: {e}\n\n{}", cli::USAGE);
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let host = Host::from_process();
    match parsed {
        Parsed::Help => {
            print!("{}", cli::USAGE);
            ExitCode::SUCCESS
        }
        Parsed::Version => {
            println!("usepod-edge {}", host.version);
            ExitCode::SUCCESS
        }
        Parsed::Go(cli) => cmd::dispatch(cli, host),
    }
}
