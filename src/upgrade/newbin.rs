//! Asking the new binary, before it is swapped in, whether it runs here: its
//! `--version`, `validate` of the live config, and `identity` (it reads the
//! agent's key file). Each run is bounded: a binary that hangs is refused.

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(30);

/// What a run of the new binary gave, or why it did not run.
pub fn run(bin: &Path, args: &[&OsStr]) -> std::io::Result<Output> {
    let child = Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let pid = child.id();
    let (tx, rx) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(LIMIT) {
        Ok(out) => out,
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer in {} s", LIMIT.as_secs()),
            ))
        }
    }
}

/// The output's text for a message: stdout and stderr, bounded.
pub fn said(out: &Output) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    crate::untrusted::shown(text.trim(), 600).to_string()
}
