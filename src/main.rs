//! usepod-edge: parses the command line and hands each command to the
//! library (src/entry.rs, src/cmd/).
#![forbid(unsafe_code)]

use std::process::ExitCode;

fn main() -> ExitCode {
    usepod_edge::entry::main()
}
