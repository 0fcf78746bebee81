//! Appending ledger lines off the jobs' path: job threads hand a line to a
//! bounded queue and go on; one thread (the agent's upkeep thread, which takes the
//! [`Writer`]) writes, rotates, and survives a disk that refuses the file.

use super::entry::{Backend, Entry, Finished};
use super::state::LedgerState;
use super::tally::Tally;
use crate::config::{LedgerConfig, Pricing};
use crate::discovery::Target;
use crate::lock::lock;
use crate::protocol::{JobRequest, Outbound};
use crossbeam_channel::{Receiver, Sender, TrySendError};
use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// Lines waiting for the writer; a full queue drops lines rather than hold a job.
const QUEUE: usize = 1024;

/// One message on the writer's queue.
pub struct Queued(Msg);

enum Msg {
    /// Boxed: the channel allocates and writes every one of its slots up front, so a
    /// slot the size of an `Entry` would hold ~200 KiB resident for an idle queue.
    Line(Box<Entry>),
    /// Answered once every line queued before it has been dealt with.
    Flush(Sender<()>),
}

/// The writing end: whoever serves the ledger takes it ([`Ledger::take_writer`]) and
/// hands it each message of its queue.
pub struct Writer {
    rx: Receiver<Queued>,
    sink: Sink,
    lost: Arc<AtomicU64>,
    /// A reload's settings, taken up before the next message.
    settings: Arc<Mutex<Option<LedgerConfig>>>,
}

impl Writer {
    pub fn queue(&self) -> &Receiver<Queued> {
        &self.rx
    }

    pub fn handle(&mut self, q: Queued) {
        if let Some(cfg) = lock(&self.settings).take() {
            self.sink = Sink::new(&cfg);
        }
        match q.0 {
            Msg::Line(e) => {
                if !self.sink.append(&e) {
                    self.lost.fetch_add(1, Ordering::Relaxed);
                }
            }
            Msg::Flush(ack) => {
                let _ = ack.send(());
            }
        }
    }

    /// Serves the queue until every sender is gone.
    fn run(mut self) {
        while let Ok(q) = self.rx.recv() {
            self.handle(q);
        }
    }
}

/// The handle the job threads share.
pub struct Ledger {
    path: Mutex<PathBuf>,
    /// Reloadable: the prices a finished job's line records.
    pricing: Mutex<Pricing>,
    tx: Sender<Queued>,
    /// Until its server takes it.
    writer: Mutex<Option<Writer>>,
    /// A reload's settings for the writer.
    settings: Arc<Mutex<Option<LedgerConfig>>>,
    totals: Mutex<Tally>,
    /// Lines never written: queue full, writer gone, or the file refused them.
    lost: Arc<AtomicU64>,
    /// The "queue full" warning is given once per run of lost lines.
    behind: AtomicBool,
}

impl Ledger {
    /// The ledger, its writer waiting to be taken ([`Ledger::take_writer`]); the file
    /// is opened when the first line comes.
    pub fn new(cfg: &LedgerConfig, pricing: Pricing) -> Ledger {
        let (tx, rx) = crossbeam_channel::bounded::<Queued>(QUEUE);
        let lost = Arc::new(AtomicU64::new(0));
        let settings = Arc::new(Mutex::new(None));
        let writer = Writer {
            rx,
            sink: Sink::new(cfg),
            lost: Arc::clone(&lost),
            settings: Arc::clone(&settings),
        };
        Ledger {
            path: Mutex::new(cfg.path.clone()),
            pricing: Mutex::new(pricing),
            tx,
            writer: Mutex::new(Some(writer)),
            settings,
            totals: Mutex::new(Tally::default()),
            lost,
            behind: AtomicBool::new(false),
        }
    }

    /// A ledger whose writer has a thread of its own.
    pub fn start(cfg: &LedgerConfig, pricing: Pricing) -> Ledger {
        let ledger = Ledger::new(cfg, pricing);
        if let Some(writer) = ledger.take_writer() {
            let spawned = crate::stack::thread("ledger").spawn(move || writer.run());
            if let Err(e) = spawned {
                log::error!(
                    "cannot start the ledger writer: {e}; {} gets no lines",
                    cfg.path.display()
                );
            }
        }
        ledger
    }

    /// The writing end, once: its taker serves the queue from then on.
    pub fn take_writer(&self) -> Option<Writer> {
        lock(&self.writer).take()
    }

    /// The advertised (input, output) prices of a model, as capabilities resolve them.
    pub fn prices(&self, model: &str) -> (u64, u64) {
        lock(&self.pricing).resolve(model)
    }

    /// A reload's ledger settings and prices: lines queued before it go where they
    /// were headed, later ones follow the new settings.
    pub fn reconfigure(&self, cfg: &LedgerConfig, pricing: &Pricing) {
        *lock(&self.pricing) = pricing.clone();
        *lock(&self.path) = cfg.path.clone();
        *lock(&self.settings) = Some(cfg.clone());
    }

    /// Records a job that reached a worker (received at `received`, run on
    /// `target`), once its terminal frame went out (`delivered`) or could not.
    pub fn record_job(
        &self,
        job: &JobRequest,
        target: &Target,
        received: Instant,
        terminal: Option<&Outbound>,
        delivered: bool,
    ) {
        self.record(&Finished {
            job_id: &job.job_id,
            model: &job.model_id,
            backend: Backend::of(target),
            terminal,
            delivered,
            elapsed_ms: u64::try_from(received.elapsed().as_millis()).unwrap_or(u64::MAX),
            prices: self.prices(&job.model_id),
            at: SystemTime::now(),
        });
    }

    /// Counts the job and queues its line; never waits.
    pub fn record(&self, f: &Finished) {
        let entry = f.entry();
        lock(&self.totals).add(&entry);
        let sent = match self.tx.try_send(Queued(Msg::Line(Box::new(entry)))) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => false,
        };
        if sent {
            self.behind.store(false, Ordering::Relaxed);
        } else {
            self.lost.fetch_add(1, Ordering::Relaxed);
            if !self.behind.swap(true, Ordering::Relaxed) {
                log::warn!(
                    "the ledger writer for {} is behind; this job's line is lost (jobs go on)",
                    lock(&self.path).display()
                );
            }
        }
    }

    /// Waits up to `limit` for the lines queued so far to be written (at exit).
    pub fn flush(&self, limit: Duration) -> bool {
        let (ack_tx, ack_rx) = crossbeam_channel::bounded(1);
        self.tx
            .send_timeout(Queued(Msg::Flush(ack_tx)), limit)
            .is_ok()
            && ack_rx.recv_timeout(limit).is_ok()
    }

    pub fn totals(&self) -> Tally {
        *lock(&self.totals)
    }

    /// The `ledger` object of the state file.
    pub fn snapshot(&self) -> LedgerState {
        LedgerState {
            tally: self.totals(),
            path: lock(&self.path).display().to_string(),
            lines_lost: self.lost.load(Ordering::Relaxed),
        }
    }
}

/// `base.N`: the Nth newest rotated file.
pub fn rotated(base: &Path, n: u32) -> PathBuf {
    let mut s = OsString::from(base.as_os_str());
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

/// Pure: whether `line` bytes no longer fit after `size`. A file with nothing in it
/// takes any line, so a line longer than the limit is still written.
pub fn should_rotate(size: u64, line: u64, max_bytes: u64) -> bool {
    size > 0 && size.saturating_add(line) > max_bytes
}

/// Pure: the renames that rotate `base` keeping `keep` old files, oldest first so
/// none is overwritten before it moved; `(from, None)` removes `from`.
pub fn rotation_plan(base: &Path, keep: u32) -> Vec<(PathBuf, Option<PathBuf>)> {
    if keep == 0 {
        return vec![(base.to_path_buf(), None)];
    }
    let mut plan: Vec<(PathBuf, Option<PathBuf>)> = (1..keep)
        .rev()
        .map(|n| (rotated(base, n), Some(rotated(base, n + 1))))
        .collect();
    plan.push((base.to_path_buf(), Some(rotated(base, 1))));
    plan
}

struct Open {
    file: File,
    size: u64,
    /// (device, inode): a file moved or deleted under us is noticed and reopened.
    id: (u64, u64),
    /// The file ends inside a line (a crash or a short write): the next line
    /// starts with a newline so that fragment stays a line of its own.
    torn: bool,
}

struct Sink {
    path: PathBuf,
    max_bytes: u64,
    keep: u32,
    open: Option<Open>,
    failing: bool,
    lost_since_ok: u64,
}

impl Sink {
    fn new(cfg: &LedgerConfig) -> Sink {
        Sink {
            path: cfg.path.clone(),
            max_bytes: cfg.max_bytes,
            keep: cfg.keep,
            open: None,
            failing: false,
            lost_since_ok: 0,
        }
    }

    /// Writes one line; false when it was lost. The first failure is logged with
    /// the path, later ones are not until a line gets through again.
    fn append(&mut self, e: &Entry) -> bool {
        let mut line = match serde_json::to_vec(e) {
            Ok(l) => l,
            Err(_) => return false,
        };
        line.push(b'\n');
        match self.write_line(&line) {
            Ok(()) => {
                if self.failing {
                    log::info!(
                        "the ledger {} is written again ({} line(s) were lost)",
                        self.path.display(),
                        self.lost_since_ok
                    );
                }
                self.failing = false;
                self.lost_since_ok = 0;
                true
            }
            Err(err) => {
                // Reopened next time: that re-reads the size and how the file ends.
                self.open = None;
                self.lost_since_ok += 1;
                if !self.failing {
                    self.failing = true;
                    log::warn!(
                        "cannot write the earnings ledger {}: {err}; jobs go on, their lines \
                         are lost until it can be written",
                        self.path.display()
                    );
                }
                false
            }
        }
    }

    fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        let moved = match (&self.open, std::fs::metadata(&self.path)) {
            (Some(o), Ok(m)) => o.id != (m.dev(), m.ino()),
            (Some(_), Err(_)) => true,
            (None, _) => false,
        };
        if moved {
            self.open = None;
        }
        let mut o = match self.open.take() {
            Some(o) => o,
            None => self.open_file()?,
        };
        if should_rotate(o.size, line.len() as u64, self.max_bytes) {
            drop(o);
            for (from, to) in rotation_plan(&self.path, self.keep) {
                let done = match &to {
                    Some(to) => std::fs::rename(&from, to),
                    None => std::fs::remove_file(&from),
                };
                match done {
                    Err(e) if e.kind() == io::ErrorKind::NotFound && from != self.path => {}
                    other => other?,
                }
            }
            o = self.open_file()?;
        }
        let sealed;
        let bytes = if o.torn {
            sealed = [b"\n", line].concat();
            &sealed[..]
        } else {
            line
        };
        // One write of the whole line on an O_APPEND file: a reader sees all of it
        // or, after a crash, a torn last line it skips.
        let n = o.file.write(bytes)?;
        o.size += n as u64;
        if n < bytes.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("only {n} of {} bytes written", bytes.len()),
            ));
        }
        o.torn = false;
        self.open = Some(o);
        Ok(())
    }

    fn open_file(&self) -> io::Result<Open> {
        crate::atomic_file::ensure_private_dir(&self.path)?;
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&self.path)?;
        let m = file.metadata()?;
        let size = m.len();
        let mut last = [0u8; 1];
        let torn = size > 0 && file.read_at(&mut last, size - 1)? == 1 && last[0] != b'\n';
        Ok(Open {
            file,
            size,
            id: (m.dev(), m.ino()),
            torn,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(dir: &Path, max_bytes: u64, keep: u32) -> LedgerConfig {
        LedgerConfig {
            path: dir.join("ledger.jsonl"),
            max_bytes,
            keep,
        }
    }

    fn tempdir(tag: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("usepod-edge-ledger-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn entry(id: &str) -> Entry {
        Entry {
            time: "2026-11-22T05:31:50.000000000+00:00".into(),
            job_id: id.into(),
            model: "m".into(),
            backend: Backend {
                kind: "vllm".into(),
                url: "http://127.0.0.1:8000/".into(),
            },
            input_tokens: 1,
            output_tokens: 2,
            duration_ms: 3,
            input_per_1m: 4,
            output_per_1m: 5,
            expected_micro_usdc: 0,
            outcome: "done".into(),
        }
    }

    fn line_len() -> u64 {
        serde_json::to_vec(&entry("j0")).unwrap().len() as u64 + 1
    }

    #[test]
    fn rotation_decision() {
        assert!(!should_rotate(0, 500, 100), "an empty file takes any line");
        assert!(!should_rotate(50, 50, 100), "exactly full is still in");
        assert!(should_rotate(51, 50, 100));
        assert!(!should_rotate(u64::MAX - 1, 0, u64::MAX));
        assert!(should_rotate(u64::MAX, 1, u64::MAX - 1), "no overflow");
    }

    #[test]
    fn rotation_moves_oldest_first() {
        let b = Path::new("/v/ledger.jsonl");
        let p = |s: &str| PathBuf::from(s);
        assert_eq!(rotation_plan(b, 0), vec![(p("/v/ledger.jsonl"), None)]);
        assert_eq!(
            rotation_plan(b, 1),
            vec![(p("/v/ledger.jsonl"), Some(p("/v/ledger.jsonl.1")))]
        );
        assert_eq!(
            rotation_plan(b, 3),
            vec![
                (p("/v/ledger.jsonl.2"), Some(p("/v/ledger.jsonl.3"))),
                (p("/v/ledger.jsonl.1"), Some(p("/v/ledger.jsonl.2"))),
                (p("/v/ledger.jsonl"), Some(p("/v/ledger.jsonl.1"))),
            ]
        );
    }

    #[test]
    fn sink_rotates_and_keeps_n_files() {
        let d = tempdir("rotate");
        let c = cfg(&d, 2 * line_len(), 2);
        let mut s = Sink::new(&c);
        for i in 0..7 {
            assert!(s.append(&entry(&format!("j{i}"))));
        }
        let ids = |p: &Path| -> Vec<String> {
            std::fs::read_to_string(p)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str::<Entry>(l).unwrap().job_id)
                .collect()
        };
        assert_eq!(ids(&c.path), ["j6"]);
        assert_eq!(ids(&rotated(&c.path, 1)), ["j4", "j5"]);
        assert_eq!(ids(&rotated(&c.path, 2)), ["j2", "j3"]);
        assert!(!rotated(&c.path, 3).exists(), "j0 and j1 rotated out");
        let mode = std::fs::metadata(&c.path).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_torn_tail_is_sealed_before_the_next_line() {
        let d = tempdir("torn");
        let c = cfg(&d, 1 << 20, 1);
        std::fs::write(&c.path, "{\"time\":\"2026-11-2").unwrap();
        let mut s = Sink::new(&c);
        assert!(s.append(&entry("after")));
        let text = std::fs::read_to_string(&c.path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "{\"time\":\"2026-11-2");
        assert_eq!(
            serde_json::from_str::<Entry>(lines[1]).unwrap().job_id,
            "after"
        );
        assert!(text.ends_with('\n'));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_removed_file_is_recreated() {
        let d = tempdir("removed");
        let c = cfg(&d, 1 << 20, 1);
        let mut s = Sink::new(&c);
        assert!(s.append(&entry("one")));
        std::fs::remove_file(&c.path).unwrap();
        assert!(s.append(&entry("two")));
        let text = std::fs::read_to_string(&c.path).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn an_unwritable_path_loses_lines_and_recovers() {
        let d = tempdir("unwritable");
        // A regular file where the directory should be: refused even to root.
        std::fs::write(d.join("blocker"), "").unwrap();
        let c = LedgerConfig {
            path: d.join("blocker").join("ledger.jsonl"),
            max_bytes: 1 << 20,
            keep: 1,
        };
        let mut s = Sink::new(&c);
        assert!(!s.append(&entry("a")));
        assert!(!s.append(&entry("b")));
        assert!(s.failing);
        std::fs::remove_file(d.join("blocker")).unwrap();
        assert!(s.append(&entry("c")));
        assert!(!s.failing);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn record_counts_and_flush_writes() {
        let d = tempdir("record");
        let c = cfg(&d, 1 << 20, 1);
        let l = Ledger::start(
            &c,
            crate::config::Config::from_str("t", "{}", &Default::default())
                .unwrap()
                .pricing,
        );
        assert_eq!(l.prices("x"), (500_000, 1_000_000));
        let done = crate::protocol::Outbound::JobDone {
            job_id: "j".into(),
            tokens: crate::protocol::Tokens::new(1000, 2000),
            duration_ms: 5,
        };
        let f = Finished {
            job_id: "j",
            model: "x",
            backend: entry("a").backend,
            terminal: Some(&done),
            delivered: true,
            elapsed_ms: 5,
            prices: l.prices("x"),
            at: std::time::SystemTime::now(),
        };
        l.record(&f);
        l.record(&f);
        assert!(l.flush(Duration::from_secs(5)));
        assert_eq!(l.totals().expected_micro_usdc, 2 * 2500);
        let snap = l.snapshot();
        assert_eq!((snap.tally.jobs, snap.lines_lost), (2, 0));
        let written = serde_json::to_value(&snap).unwrap();
        assert_eq!(written["expected_usdc"], "0.005000");
        assert_eq!(written["jobs"], 2);
        let read: LedgerState = serde_json::from_value(written).unwrap();
        assert_eq!(read, snap, "the state file reads back what it wrote");
        assert_eq!(std::fs::read_to_string(&c.path).unwrap().lines().count(), 2);
        std::fs::remove_dir_all(&d).unwrap();
    }
}
