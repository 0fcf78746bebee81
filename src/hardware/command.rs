//! Running a program with a deadline, for nvidia-smi.

use super::files::READ_CAP;
use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// Runs `program` and returns its stdout (capped) if it exits 0 within
/// `timeout`; a missing program, a failure or a hang all give `None`, and a
/// hung child is killed so it cannot pile up across reconnects.
pub(super) fn run_command(program: &str, args: &[&str], timeout: Duration) -> Option<String> {
    let deadline = Instant::now() + timeout;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let Some(stdout) = child.stdout.take() else {
        let _ = child.kill();
        let _ = child.wait();
        return None;
    };
    // Reading on a thread lets the wait below honour the deadline even if
    // the child never closes stdout.
    let (tx, rx) = mpsc::channel();
    let reader = thread::Builder::new()
        .name("nvidia-smi".into())
        .spawn(move || {
            let mut buf = Vec::new();
            let _ = stdout.take(READ_CAP).read_to_end(&mut buf);
            let _ = tx.send(buf);
        });
    if reader.is_err() {
        let _ = child.kill();
        let _ = child.wait();
        return None;
    }
    let output = rx.recv_timeout(deadline.saturating_duration_since(Instant::now()));
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                let output = output.ok()?;
                return status
                    .success()
                    .then(|| String::from_utf8_lossy(&output).into_owned());
            }
            Ok(None) if Instant::now() < deadline && output.is_ok() => {
                thread::sleep(Duration::from_millis(5));
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}
