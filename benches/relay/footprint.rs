//! Idle footprint (`make bench`): where an idle, connected agent's resident memory goes,
//! for every agent the bench has (benches/relay/peers.rs: shipped musl, glibc, the
//! baseline's musl, usepod-agent, the counting build), in alternating rounds: each round
//! starts them all, each from its binary dropped from the page cache (as a service starts
//! at boot), against the same backend (each with its own loopback coordinator),
//! leaves them idle (BENCH_FOOTPRINT_SETTLE_S, default 32 s: past two heartbeats and
//! pings and the first backend re-probe), takes a snapshot of each and stops them.
//! BENCH_FOOTPRINT_ROUNDS (default 3; 0 skips this part); BENCH_FOOTPRINT_ONLY=1 runs
//! only this part; BENCH_FOOTPRINT_MAPS=1 prints every resident mapping to stderr.
//!
//! A snapshot reads /proc/PID/status (VmRSS, VmHWM) and /proc/PID/smaps, and puts every
//! mapping's resident pages (Rss) in one bucket:
//! - the executable's own mappings (path = /proc/PID/exe): file-backed pages (text,
//!   rodata, unwritten data) and the pages written since (relocations, .data), with the
//!   anonymous mapping right after them (.bss);
//! - thread stacks: the mapping that holds each thread's stack pointer, read from
//!   /proc/PID/task/TID/syscall (its next-to-last field: the user stack pointer of a
//!   thread blocked in a system call, as every thread of an idle agent is); the main
//!   thread's is `[stack]`. Alike for musl (stacks are anonymous mmaps with a PROT_NONE
//!   guard below) and glibc. A stack mapping also holds the thread's TLS and its libc
//!   thread block, at its top. The kernel merges an anonymous mapping made right above a
//!   stack's (a large malloc block) into it, so the stack is cut at its thread block,
//!   found in the process's memory (/proc/PID/mem) by its pointer to itself, and the
//!   pages above it (/proc/PID/pagemap) go to the heap;
//! - heap: `[heap]` (brk), glibc's non-main arenas (anonymous, 64 MiB-aligned, read-write
//!   part plus a PROT_NONE rest making 64 MiB), and every other anonymous mapping;
//! - shared libraries (file-backed mappings of other files) and the rest (vdso, vvar).
//!
//! Referenced pages (smaps, after writing 1 to /proc/PID/clear_refs once the agents are
//! connected) are those touched while idle. The counting build (benches/alloc_count)
//! adds the bytes the Rust heap holds live and the live blocks by requested size.

use super::common::*;
use super::peers::{self, Counting, Peer};
use std::collections::BTreeMap;
use std::time::Duration;

const MODEL: &str = "m";
/// glibc's HEAP_MAX_SIZE on 64-bit targets: each non-main arena's heap reserves this much.
const ARENA_HEAP: u64 = 64 << 20;
/// The lead's targets, KiB.
const MUSL_TARGET_KIB: u64 = 2253; // 2.2 MiB
const GLIBC_TARGET_KIB: u64 = 4096; // 4.0 MiB

struct Vma {
    start: u64,
    end: u64,
    perms: String,
    path: String,
    /// KiB resident; of which anonymous (written private pages).
    rss: u64,
    anon: u64,
    pss: u64,
    referenced: u64,
}

fn read_smaps(pid: u32) -> Vec<Vma> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let mut out: Vec<Vma> = Vec::new();
    for line in text.lines() {
        let mut cols = line.split_whitespace();
        let first = cols.next().unwrap_or("");
        if let Some((a, b)) = first.split_once('-') {
            if let (Ok(start), Ok(end)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16)) {
                let perms = cols.next().unwrap_or("").to_string();
                // offset, dev, inode, then the path (which may hold spaces).
                let path = cols.skip(3).collect::<Vec<_>>().join(" ");
                out.push(Vma {
                    start,
                    end,
                    perms,
                    path,
                    rss: 0,
                    anon: 0,
                    pss: 0,
                    referenced: 0,
                });
                continue;
            }
        }
        let kib = |k: &str| {
            line.strip_prefix(k)
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        };
        if let Some(v) = out.last_mut() {
            if let Some(n) = kib("Rss:") {
                v.rss = n;
            } else if let Some(n) = kib("Anonymous:") {
                v.anon = n;
            } else if let Some(n) = kib("Pss:") {
                v.pss = n;
            } else if let Some(n) = kib("Referenced:") {
                v.referenced = n;
            }
        }
    }
    out
}

/// (name, user stack pointer) of every thread; the pointer is None for a thread that is
/// running or whose syscall file cannot be read.
fn threads(pid: u32) -> Vec<(String, Option<u64>)> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    let mut tids: Vec<u32> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    tids.sort();
    for tid in tids {
        let base = format!("/proc/{pid}/task/{tid}");
        let mut name = std::fs::read_to_string(format!("{base}/comm"))
            .unwrap_or_default()
            .trim()
            .to_string();
        if tid == pid {
            name += " (main)";
        }
        // "NR ARG1..ARG6 SP PC" in a system call, "-1 SP PC" when blocked outside one,
        // "running" otherwise.
        let sp = std::fs::read_to_string(format!("{base}/syscall"))
            .ok()
            .and_then(|s| {
                let f: Vec<&str> = s.split_whitespace().collect();
                let v = f.get(f.len().checked_sub(2)?)?;
                u64::from_str_radix(v.strip_prefix("0x")?, 16).ok()
            });
        out.push((name, sp));
    }
    out
}

const PAGE: u64 = 4096;

/// Reads `len` bytes of the process's memory at `addr` (/proc/PID/mem; the bench started
/// the agent, so it may).
fn read_mem(pid: u32, addr: u64, len: u64) -> Option<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(format!("/proc/{pid}/mem")).ok()?;
    let mut buf = vec![0u8; len as usize];
    f.read_exact_at(&mut buf, addr).ok()?;
    Some(buf)
}

fn word_at(pid: u32, addr: u64) -> Option<u64> {
    let b = read_mem(pid, addr, 8)?;
    Some(u64::from_ne_bytes(b.try_into().ok()?))
}

/// The thread pointer of the thread whose stack pointer is `sp`, found in its stack
/// mapping `[sp, end)`: both musl and glibc put the thread's control block at the top of
/// the stack mapping, and it starts with a pointer to itself (x86_64); glibc's holds
/// itself again 16 bytes on (`tcbhead_t.self`), musl's holds the previous thread's
/// (`prev`), itself such a block. The lowest address that passes is taken.
fn thread_pointer(pid: u32, sp: u64, end: u64) -> Option<u64> {
    let from = sp & !7;
    let len = (end - from).min(8 << 20);
    let mem = read_mem(pid, from, len)?;
    let word = |off: usize| u64::from_ne_bytes(mem[off..off + 8].try_into().unwrap());
    let self_pointing = |a: u64| word_at(pid, a) == Some(a);
    (0..mem.len().saturating_sub(24))
        .step_by(8)
        .find_map(|off| {
            let a = from + off as u64;
            (word(off) == a && (word(off + 16) == a || self_pointing(word(off + 16)))).then_some(a)
        })
}

/// Pages of `[start, end)` resident, in KiB (/proc/PID/pagemap, bit 63).
fn resident_kib(pid: u32, start: u64, end: u64) -> Option<u64> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(format!("/proc/{pid}/pagemap")).ok()?;
    let pages = (end - start) / PAGE;
    let mut buf = vec![0u8; pages as usize * 8];
    f.read_exact_at(&mut buf, start / PAGE * 8).ok()?;
    let present = buf
        .chunks_exact(8)
        .filter(|e| u64::from_ne_bytes((*e).try_into().unwrap()) >> 63 == 1)
        .count() as u64;
    Some(present * PAGE / 1024)
}

/// A thread's stack mapping (index into the mappings) and its thread pointer.
type Located = (usize, Option<u64>);

struct ThreadStack {
    name: String,
    /// KiB resident in its stack mapping, and the mapping's size (guard page included).
    kib: u64,
    reserved_kib: u64,
}

#[derive(Default)]
struct Snapshot {
    vm_rss: u64,
    vm_hwm: u64,
    smaps_rss: u64,
    pss: u64,
    /// KiB referenced since the refs were cleared (when the agent had connected): all
    /// mappings, and the executable's.
    referenced: u64,
    bin_referenced: u64,
    bin_file: u64,
    bin_written: u64,
    heap_brk: u64,
    arenas: u64,
    arena_count: usize,
    anon_mmap: u64,
    stacks: u64,
    libs: u64,
    other: u64,
    threads: Vec<ThreadStack>,
    /// Threads whose stack mapping was not found (running, or no syscall file).
    unplaced: usize,
    /// Stack mappings with an anonymous mapping merged above them (thread: KiB split
    /// off to the heap), and stack mappings where no thread pointer was found.
    split: Vec<String>,
    no_tp: usize,
    /// The counting build's: allocations, bytes live, blocks live, peak bytes live.
    counters: Option<[u64; 4]>,
    /// The counting build's live blocks by requested size: (size, blocks), and the
    /// (blocks, bytes) of sizes its table had no room for.
    sizes: Vec<(u64, u64)>,
    overflow: (u64, u64),
}

impl Snapshot {
    fn heap(&self) -> u64 {
        self.heap_brk + self.arenas + self.anon_mmap
    }
}

fn snapshot(p: &Peer) -> Snapshot {
    let pid = p.pid();
    let tasks = threads(pid);
    let vmas = read_smaps(pid);
    let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
        .map(|e| e.display().to_string())
        .unwrap_or_default();
    let mut s = Snapshot {
        vm_rss: status_field(pid, "VmRSS"),
        vm_hwm: status_field(pid, "VmHWM"),
        smaps_rss: vmas.iter().map(|v| v.rss).sum(),
        pss: vmas.iter().map(|v| v.pss).sum(),
        referenced: vmas.iter().map(|v| v.referenced).sum(),
        bin_referenced: vmas
            .iter()
            .filter(|v| !exe.is_empty() && v.path == exe)
            .map(|v| v.referenced)
            .sum(),
        ..Default::default()
    };
    let debug = std::env::var_os("BENCH_FOOTPRINT_MAPS").is_some();
    let mut placed = vec![false; vmas.len()];
    let anon = |v: &Vma| v.path.is_empty();
    let guard_below = |i: usize| {
        i.checked_sub(1)
            .map(|g| &vmas[g])
            .filter(|g| g.end == vmas[i].start && g.perms.starts_with("---") && anon(g))
            .map_or(0, |g| g.end - g.start)
    };
    // Per thread: its stack mapping and, in an anonymous one, its thread pointer.
    let located: Vec<(&String, Option<Located>)> = tasks
        .iter()
        .map(|(name, sp)| {
            let at = sp.and_then(|sp| {
                let i = vmas.iter().position(|v| v.start <= sp && sp < v.end)?;
                let v = &vmas[i];
                Some((
                    i,
                    v.path
                        .is_empty()
                        .then(|| thread_pointer(pid, sp, v.end))
                        .flatten(),
                ))
            });
            (name, at)
        })
        .collect();
    // How far a stack mapping reaches past its thread pointer: the same for every thread
    // of a process (its libc's thread block: 1,224 bytes with musl, 2,368 with glibc
    // 2.3x), so the smallest is the true one; a mapping that reaches further has an
    // anonymous mapping merged above it (the kernel merges adjacent compatible ones: a
    // large malloc block made just before the thread, say), which goes to the heap.
    let span = located
        .iter()
        .filter_map(|(_, at)| {
            let (i, tp) = (*at)?;
            Some(vmas[i].end - tp?)
        })
        .min();
    for (name, at) in located {
        let Some((i, tp)) = at else {
            s.unplaced += 1;
            continue;
        };
        let v = &vmas[i];
        // Two threads never share a stack mapping; if they seem to, count it once.
        let mut kib = if placed[i] { 0 } else { v.rss };
        let mut end = v.end;
        match (tp, span) {
            (Some(tp), Some(span)) if !placed[i] => {
                let top = (tp + span).next_multiple_of(PAGE).min(v.end);
                if top < v.end {
                    if let Some(below) = resident_kib(pid, v.start, top) {
                        s.anon_mmap += v.rss - below.min(v.rss);
                        s.split
                            .push(format!("{name}: {} KiB", (v.end - top) / 1024));
                        kib = below.min(v.rss);
                        end = top;
                    }
                }
            }
            _ if v.path.is_empty() => s.no_tp += 1,
            _ => {}
        }
        placed[i] = true;
        s.stacks += kib;
        s.threads.push(ThreadStack {
            name: name.clone(),
            kib,
            reserved_kib: (end - v.start + guard_below(i)) / 1024,
        });
    }
    for (i, v) in vmas.iter().enumerate() {
        if placed[i] {
            continue;
        }
        let prev_is_exe = i > 0 && vmas[i - 1].path == exe && vmas[i - 1].end == v.start;
        if !exe.is_empty() && v.path == exe {
            s.bin_file += v.rss - v.anon;
            s.bin_written += v.anon;
        } else if anon(v) && prev_is_exe {
            s.bin_written += v.rss; // .bss
        } else if v.path == "[heap]" {
            s.heap_brk += v.rss;
        } else if v.path == "[stack]" {
            s.stacks += v.rss;
        } else if v.path.starts_with('[') {
            s.other += v.rss;
        } else if !anon(v) {
            s.libs += v.rss;
        } else if v.perms.starts_with("rw") && v.start % ARENA_HEAP == 0 && {
            let rest = vmas
                .get(i + 1)
                .filter(|n| n.start == v.end && n.perms.starts_with("---") && anon(n))
                .map_or(0, |n| n.end - n.start);
            v.end - v.start + rest == ARENA_HEAP
        } {
            s.arenas += v.rss;
            s.arena_count += 1;
        } else {
            s.anon_mmap += v.rss;
        }
    }
    s.counters = p.alloc_counters();
    if let Some(text) = p
        .sizes_file
        .as_ref()
        .and_then(|f| std::fs::read_to_string(f).ok())
    {
        for line in text.lines() {
            let f: Vec<u64> = line
                .split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect();
            match f[..] {
                [0, blocks, bytes] => s.overflow = (blocks, bytes),
                [size, blocks] => s.sizes.push((size, blocks)),
                _ => {}
            }
        }
    }
    if debug {
        eprintln!("--- {} (pid {pid}), exe {exe}", p.label);
        for v in vmas
            .iter()
            .filter(|v| v.rss > 0 || v.perms.starts_with("---"))
        {
            eprintln!(
                "{:x}-{:x} {} {:>8} KiB, rss {:>5}, anon {:>5} {}",
                v.start,
                v.end,
                v.perms,
                (v.end - v.start) / 1024,
                v.rss,
                v.anon,
                v.path
            );
        }
        for (name, sp) in &tasks {
            eprintln!("  thread {name}: sp {sp:x?}");
        }
        eprintln!(
            "  thread block span {span:?}; split off stacks: {:?}",
            s.split
        );
    }
    s
}

fn env_u64(key: &str, default: u64) -> u64 {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Thousands separators: 2812 -> "2,812".
fn n(v: u64) -> String {
    let s = v.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Runs the rounds and prints the tables.
pub fn compare(glibc: &str) {
    let rounds = env_u64("BENCH_FOOTPRINT_ROUNDS", 3);
    if rounds == 0 {
        return;
    }
    let settle = Duration::from_secs(env_u64("BENCH_FOOTPRINT_SETTLE_S", 32));
    let backend = BenchBackend::start(MODEL);
    let url = backend.url();
    // Per agent, in start order: label and one snapshot per round.
    let mut results: Vec<(String, Vec<Snapshot>)> = Vec::new();
    eprintln!(
        "bench: idle footprint, {rounds} rounds: start every agent, settle {} s, snapshot, stop",
        settle.as_secs()
    );
    for _ in 0..rounds {
        let agents = peers::start_all(glibc, &url, Counting::AllocsAndSizes);
        // Pages touched from here on show as Referenced in smaps: what the idle agent
        // uses, against what it holds.
        for p in &agents {
            let _ = std::fs::write(format!("/proc/{}/clear_refs", p.pid()), "1");
        }
        std::thread::sleep(settle);
        for p in &agents {
            // Whatever the agent sent while settling (heartbeats) is of no interest.
            while p.conn.recv(Duration::from_millis(1)).is_some() {}
            let snap = snapshot(p);
            match results.iter_mut().find(|(l, _)| *l == p.label) {
                Some((_, v)) => v.push(snap),
                None => results.push((p.label.clone(), vec![snap])),
            }
        }
        drop(agents);
    }
    // The round with the median VmRSS of each agent, and the range over rounds.
    let picked: Vec<(&str, &Snapshot, u64, u64)> = results
        .iter_mut()
        .map(|(label, snaps)| {
            snaps.sort_by_key(|s| s.vm_rss);
            let (lo, hi) = (snaps[0].vm_rss, snaps[snaps.len() - 1].vm_rss);
            (label.as_str(), &snaps[snaps.len() / 2], lo, hi)
        })
        .collect();
    print_tables(&picked, rounds, settle);
}

fn short(label: &str) -> String {
    label
        .trim_start_matches("usepod-edge, ")
        .trim_start_matches("usepod-edge ")
        .to_string()
}

fn print_tables(picked: &[(&str, &Snapshot, u64, u64)], rounds: u64, settle: Duration) {
    let shipped = picked.iter().position(|(l, ..)| l.contains("shipped"));
    let baseline = picked.iter().position(|(l, ..)| l.contains("baseline"));
    let ratio_col = shipped.zip(baseline);
    println!("\n#### Idle footprint\n");
    println!(
        "Every agent connected to its own loopback coordinator (TLS; usepod-agent ws://) with one \
         fake backend, then left idle {} s after its models were offered (heartbeats and pings \
         every 15 s, the backend re-probed at 30 s); {rounds} alternating rounds (each starts every \
         agent afresh, its binary dropped from the page cache first, as at boot; ours with MALLOC_ARENA_MAX=1 and MALLOC_TRIM_THRESHOLD_=65536, as their service files run them), the round with the median VmRSS shown. KiB, from /proc/PID/status and \
         /proc/PID/smaps (Rss); thread stacks: the mapping holding each thread's stack pointer \
         (/proc/PID/task/TID/syscall), up to its thread block; referenced: pages touched while \
         idle (smaps Referenced, after clear_refs once connected).\n",
        settle.as_secs()
    );
    let mut head = String::from("| KiB |");
    let mut rule = String::from("|---|");
    for (i, (label, ..)) in picked.iter().enumerate() {
        head += &format!(" {} |", short(label));
        rule += "---|";
        if Some(i) == baseline && ratio_col.is_some() {
            head += " shipped / baseline |";
            rule += "---|";
        }
    }
    println!("{head}\n{rule}");
    type Cell = fn(&Snapshot, u64, u64) -> (String, Option<u64>);
    let rows: Vec<(&str, Cell)> = vec![
        ("**VmRSS**", |s, _, _| {
            (format!("**{}**", n(s.vm_rss)), Some(s.vm_rss))
        }),
        ("VmRSS, lowest–highest round", |_, lo, hi| {
            (format!("{}–{}", n(lo), n(hi)), None)
        }),
        ("VmHWM", |s, _, _| (n(s.vm_hwm), Some(s.vm_hwm))),
        ("sum of smaps Rss", |s, _, _| {
            (n(s.smaps_rss), Some(s.smaps_rss))
        }),
        (
            "Pss (shared pages divided among their processes)",
            |s, _, _| (n(s.pss), Some(s.pss)),
        ),
        (
            "binary: file-backed (text, rodata, unwritten data)",
            |s, _, _| (n(s.bin_file), Some(s.bin_file)),
        ),
        ("binary: pages referenced while settling", |s, _, _| {
            (n(s.bin_referenced), Some(s.bin_referenced))
        }),
        (
            "binary: written (relocated data, .data, .bss)",
            |s, _, _| (n(s.bin_written), Some(s.bin_written)),
        ),
        ("heap: brk `[heap]`", |s, _, _| {
            (n(s.heap_brk), Some(s.heap_brk))
        }),
        ("heap: glibc arenas (count)", |s, _, _| {
            (
                format!("{} ({})", n(s.arenas), s.arena_count),
                Some(s.arenas),
            )
        }),
        ("heap: other anonymous mmaps", |s, _, _| {
            (n(s.anon_mmap), Some(s.anon_mmap))
        }),
        ("**heap, all**", |s, _, _| {
            (format!("**{}**", n(s.heap())), Some(s.heap()))
        }),
        ("**thread stacks** (threads)", |s, _, _| {
            let unplaced = if s.unplaced > 0 {
                format!(", {} not placed", s.unplaced)
            } else {
                String::new()
            };
            (
                format!("**{}** ({}{unplaced})", n(s.stacks), s.threads.len()),
                Some(s.stacks),
            )
        }),
        ("shared libraries", |s, _, _| (n(s.libs), Some(s.libs))),
        ("other (vdso, vvar)", |s, _, _| (n(s.other), Some(s.other))),
        (
            "all: pages referenced while settling (shared libraries: others' use too)",
            |s, _, _| (n(s.referenced), Some(s.referenced)),
        ),
        ("Rust heap live (counting allocator)", |s, _, _| {
            match s.counters {
                Some(c) => (
                    format!("{} in {} blocks", n(c[1] / 1024), n(c[2])),
                    Some(c[1] / 1024),
                ),
                None => ("–".into(), None),
            }
        }),
    ];
    for (name, cell) in &rows {
        let mut line = format!("| {name} |");
        let mut vals = Vec::new();
        for (i, (_, s, lo, hi)) in picked.iter().enumerate() {
            let (text, v) = cell(s, *lo, *hi);
            vals.push(v);
            line += &format!(" {text} |");
            if Some(i) == baseline {
                if let Some((a, b)) = ratio_col {
                    let r = match (cell(picked[a].1, 0, 0).1, cell(picked[b].1, 0, 0).1) {
                        (Some(x), Some(y)) if y > 0 => format!("{:.2}x", x as f64 / y as f64),
                        (Some(0), Some(0)) => "=".into(),
                        _ => "–".into(),
                    };
                    line += &format!(" {r} |");
                }
            }
        }
        println!("{line}");
    }

    for (label, s, ..) in picked {
        if !s.split.is_empty() || s.no_tp > 0 {
            println!(
                "\n{}: stack mappings with an anonymous mapping merged above them (moved to the heap): {}{}",
                short(label),
                if s.split.is_empty() { "none".into() } else { s.split.join(", ") },
                if s.no_tp > 0 {
                    format!("; {} stack mappings with no thread pointer found (not split)", s.no_tp)
                } else {
                    String::new()
                }
            );
        }
    }

    // Per thread: resident KiB of its stack mapping, threads of one name summed.
    println!("\nPer thread: resident KiB of its stack mapping (×N: N threads of that name, summed); reserved size below.\n");
    let mut names: Vec<String> = Vec::new();
    for (_, s, ..) in picked {
        for t in &s.threads {
            if !names.contains(&t.name) {
                names.push(t.name.clone());
            }
        }
    }
    let mut head = String::from("| thread |");
    let mut rule = String::from("|---|");
    for (label, ..) in picked {
        head += &format!(" {} |", short(label));
        rule += "---|";
    }
    println!("{head}\n{rule}");
    for name in &names {
        let mut line = format!("| {name} |");
        for (_, s, ..) in picked {
            let ts: Vec<&ThreadStack> = s.threads.iter().filter(|t| &t.name == name).collect();
            let kib: u64 = ts.iter().map(|t| t.kib).sum();
            line += &match ts.len() {
                0 => " – |".to_string(),
                1 => format!(" {kib} |"),
                k => format!(" ×{k}: {kib} |"),
            };
        }
        println!("{line}");
    }
    let mut line = String::from("| stack mapping sizes reserved (KiB: threads) |");
    for (_, s, ..) in picked {
        let mut by: BTreeMap<u64, usize> = BTreeMap::new();
        for t in &s.threads {
            *by.entry(t.reserved_kib).or_default() += 1;
        }
        let parts: Vec<String> = by
            .iter()
            .rev()
            .map(|(k, c)| format!("{}: {c}", n(*k)))
            .collect();
        line += &format!(" {} |", parts.join(", "));
    }
    println!("{line}");

    // Heap in use against held.
    let counting = picked.iter().find(|(_, s, ..)| s.counters.is_some());
    if let Some((clabel, cs, ..)) = counting {
        let c = cs.counters.unwrap();
        let live = c[1] / 1024;
        println!(
            "\nHeap held against heap in use: the counting build ({}) knows the bytes the Rust heap \
             holds live ({} KiB in {} blocks; at most {} KiB at once since it started); every build's \
             heap RSS (brk + arenas + anonymous mmaps) against that figure. Allocations that do not \
             go through Rust's allocator (libc's own) are not in it.\n",
            short(clabel),
            n(live),
            n(c[2]),
            n(c[3] / 1024)
        );
        println!("| build | heap RSS | held beyond live | heap RSS / live |");
        println!("|---|---|---|---|");
        for (label, s, ..) in picked {
            let h = s.heap();
            println!(
                "| {} | {} | {} | {:.2}x |",
                short(label),
                n(h),
                if h >= live {
                    n(h - live)
                } else {
                    format!("−{}", n(live - h))
                },
                h as f64 / live.max(1) as f64
            );
        }
        let mut sizes: Vec<(u64, u64)> = cs.sizes.clone();
        sizes.sort_by_key(|(size, blocks)| std::cmp::Reverse(size * blocks));
        let total: u64 = sizes.iter().map(|(s, b)| s * b).sum::<u64>() + cs.overflow.1;
        println!(
            "\nLargest live heap by requested size (counting build, at the snapshot): \
             blocks of one exact size, largest total first; the site is not recorded \
             (sizes point at it: a 16,384-byte block is a 16 KiB buffer). {} sizes live in all.\n",
            sizes.len()
        );
        println!("| size, bytes | blocks | KiB | share of live |");
        println!("|---|---|---|---|");
        for (size, blocks) in sizes.iter().take(15) {
            println!(
                "| {} | {blocks} | {:.1} | {:.1} % |",
                n(*size),
                (size * blocks) as f64 / 1024.0,
                (size * blocks) as f64 * 100.0 / total.max(1) as f64
            );
        }
        let rest: u64 = sizes.iter().skip(15).map(|(s, b)| s * b).sum();
        let rest_blocks: u64 = sizes.iter().skip(15).map(|(_, b)| b).sum();
        println!(
            "| the other {} sizes | {rest_blocks} | {:.1} | {:.1} % |",
            sizes.len().saturating_sub(15),
            rest as f64 / 1024.0,
            rest as f64 * 100.0 / total.max(1) as f64
        );
        if cs.overflow.0 > 0 {
            println!(
                "| sizes past the table | {} | {:.1} | |",
                cs.overflow.0,
                cs.overflow.1 as f64 / 1024.0
            );
        }
    }

    println!();
    for (needle, target, what) in [
        ("shipped", MUSL_TARGET_KIB, "shipped musl ≤ 2.2 MiB"),
        ("glibc release", GLIBC_TARGET_KIB, "glibc ≤ 4.0 MiB"),
    ] {
        if let Some((_, s, ..)) = picked.iter().find(|(l, ..)| l.contains(needle)) {
            println!(
                "- idle RSS {what}: {} KiB: {}",
                n(s.vm_rss),
                if s.vm_rss <= target { "met" } else { "MISSED" }
            );
        }
    }
}
