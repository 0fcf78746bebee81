//! `usepod-edge` with a counting global allocator: the agent exactly as it ships (it
//! calls the library's `entry::main`), for `make bench`'s heap allocations per event and
//! its idle footprint. Bench-only (`required-features = ["bench-alloc"]`), so nothing
//! operators run carries it; its source lives under benches/ because the allocator needs
//! `unsafe`, which src/ forbids.
//!
//! With `USEPOD_EDGE_ALLOC_COUNT=FILE` a thread (named `alloc-count`) rewrites FILE every
//! 20 ms, in place and without allocating itself, with four lines of 20 digits: the
//! number of allocations so far (reallocations included), the bytes live (as requested
//! by the callers, not as the allocator rounds them), the blocks live, and the most bytes
//! ever live at once.
//!
//! With `USEPOD_EDGE_ALLOC_SIZES=FILE` as well, the live blocks are also counted by
//! requested size (exact sizes, in a fixed table of 2,048 sizes; sizes past that are
//! summed on one line, size 0), and every 500 ms the same thread writes them to FILE
//! (through FILE.tmp and a rename), one `SIZE BLOCKS` line per size with blocks live.
//! Off by default: the table costs a probe per allocation and 32 KiB of memory.

use std::alloc::{GlobalAlloc, Layout, System};
use std::ffi::OsString;
use std::io::Write as _;
use std::os::unix::fs::FileExt;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);
static LIVE_BLOCKS: AtomicUsize = AtomicUsize::new(0);
static PEAK_BYTES: AtomicUsize = AtomicUsize::new(0);

/// Live blocks by exact requested size (open addressing, linear probing; a slot's key
/// never changes once set, so a size keeps its slot while its count goes to zero).
const SLOTS: usize = 2048;
static SIZES_ON: AtomicBool = AtomicBool::new(false);
static SIZE_KEYS: [AtomicUsize; SLOTS] = [const { AtomicUsize::new(0) }; SLOTS];
static SIZE_LIVE: [AtomicIsize; SLOTS] = [const { AtomicIsize::new(0) }; SLOTS];
/// Blocks and bytes live of sizes that found no slot.
static OVERFLOW_BLOCKS: AtomicIsize = AtomicIsize::new(0);
static OVERFLOW_BYTES: AtomicIsize = AtomicIsize::new(0);

fn by_size(size: usize, delta: isize) {
    if !SIZES_ON.load(Ordering::Relaxed) || size == 0 {
        return;
    }
    let mut i = size.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (usize::BITS - SLOTS.ilog2());
    for _ in 0..SLOTS {
        let key = SIZE_KEYS[i].load(Ordering::Relaxed);
        let found = key == size
            || (key == 0
                && match SIZE_KEYS[i].compare_exchange(
                    0,
                    size,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => true,
                    Err(other) => other == size,
                });
        if found {
            SIZE_LIVE[i].fetch_add(delta, Ordering::Relaxed);
            return;
        }
        i = (i + 1) % SLOTS;
    }
    OVERFLOW_BLOCKS.fetch_add(delta, Ordering::Relaxed);
    OVERFLOW_BYTES.fetch_add(delta * size as isize, Ordering::Relaxed);
}

fn allocated(size: usize) {
    let live = LIVE_BYTES.fetch_add(size, Ordering::Relaxed) + size;
    PEAK_BYTES.fetch_max(live, Ordering::Relaxed);
    LIVE_BLOCKS.fetch_add(1, Ordering::Relaxed);
    by_size(size, 1);
}

fn freed(size: usize) {
    LIVE_BYTES.fetch_sub(size, Ordering::Relaxed);
    LIVE_BLOCKS.fetch_sub(1, Ordering::Relaxed);
    by_size(size, -1);
}

struct Counting;

// SAFETY: every call is passed unchanged to the system allocator; counting touches
// only atomics.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            allocated(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            allocated(layout.size());
        }
        p
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            freed(layout.size());
            allocated(new_size);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        freed(layout.size());
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn put_digits(line: &mut [u8], mut n: u64) {
    for digit in line.iter_mut().rev() {
        *digit = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

/// Writes the live blocks by size to `tmp`, then renames it to `path`; allocates nothing
/// (paths this short go through a stack buffer in std).
fn write_sizes(path: &OsString, tmp: &OsString) -> std::io::Result<()> {
    let mut file = std::fs::File::create(tmp)?;
    let mut buf = [0u8; 4096];
    let mut used = 0;
    let entries = (0..SLOTS)
        .map(|i| {
            (
                SIZE_KEYS[i].load(Ordering::Relaxed),
                SIZE_LIVE[i].load(Ordering::Relaxed),
            )
        })
        .chain(std::iter::once((
            0,
            OVERFLOW_BLOCKS.load(Ordering::Relaxed),
        )));
    for (size, live) in entries {
        if live <= 0 {
            continue;
        }
        if used + 48 > buf.len() {
            file.write_all(&buf[..used])?;
            used = 0;
        }
        let mut cursor = std::io::Cursor::new(&mut buf[used..]);
        // Overflow line: size 0, its blocks, and its bytes as a third field.
        if size == 0 {
            writeln!(
                cursor,
                "0 {live} {}",
                OVERFLOW_BYTES.load(Ordering::Relaxed)
            )?;
        } else {
            writeln!(cursor, "{size} {live}")?;
        }
        used += cursor.position() as usize;
    }
    file.write_all(&buf[..used])?;
    drop(file);
    std::fs::rename(tmp, path)
}

fn report(file: Option<std::fs::File>, sizes: Option<(OsString, OsString)>) {
    let mut lines = [b'\n'; 84];
    for tick in 0u64.. {
        if let Some(file) = &file {
            let values = [
                ALLOCS.load(Ordering::Relaxed),
                LIVE_BYTES.load(Ordering::Relaxed) as u64,
                LIVE_BLOCKS.load(Ordering::Relaxed) as u64,
                PEAK_BYTES.load(Ordering::Relaxed) as u64,
            ];
            for (line, v) in lines.chunks_mut(21).zip(values) {
                put_digits(&mut line[..20], v);
            }
            if file.write_all_at(&lines, 0).is_err() {
                return;
            }
        }
        if let Some((path, tmp)) = &sizes {
            if tick % 25 == 0 && write_sizes(path, tmp).is_err() {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn main() -> ExitCode {
    let file = std::env::var_os("USEPOD_EDGE_ALLOC_COUNT").and_then(|path| {
        std::fs::File::create(&path)
            .map_err(|e| eprintln!("alloc count: cannot create {path:?}: {e}"))
            .ok()
    });
    let sizes = std::env::var_os("USEPOD_EDGE_ALLOC_SIZES").map(|path| {
        let mut tmp = path.clone();
        tmp.push(".tmp");
        SIZES_ON.store(true, Ordering::Relaxed);
        (path, tmp)
    });
    if file.is_some() || sizes.is_some() {
        let spawned = std::thread::Builder::new()
            .name("alloc-count".into())
            .spawn(move || report(file, sizes));
        if let Err(e) = spawned {
            eprintln!("alloc count: cannot start its thread: {e}");
        }
    }
    usepod_edge::entry::main()
}
