//! What every command shares: the exit status of a config or usage problem, and the
//! log target of the commands' own lines.

/// Exit status for a config or usage problem, distinct from runtime failures.
pub const EXIT_CONFIG: u8 = 2;

/// The log target of the commands' lines: the crate's name, as they were when they
/// came from the binary's main (log filters and readers of the log see them there,
/// not under a module path).
pub const TARGET: &str = "usepod_edge";
