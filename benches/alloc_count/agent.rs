//! `usepod-edge` with a counting global allocator: the agent exactly as it ships (it
//! calls the library's `entry::main`), for `make bench`'s heap allocations per event.
//! Bench-only (`required-features = ["bench-alloc"]`), so nothing operators run
//! carries it; its source lives under benches/ because the allocator needs `unsafe`,
//! which src/ forbids.
//!
//! With `USEPOD_EDGE_ALLOC_COUNT=FILE` a thread rewrites FILE every 20 ms with the
//! number of allocations so far (reallocations included), as 20 digits and a newline,
//! in place and without allocating itself.

use std::alloc::{GlobalAlloc, Layout, System};
use std::os::unix::fs::FileExt;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

struct Counting;

// SAFETY: every call is passed unchanged to the system allocator; counting touches
// only an atomic.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn report(file: std::fs::File) {
    let mut line = [b'0'; 21];
    line[20] = b'\n';
    loop {
        let mut n = ALLOCS.load(Ordering::Relaxed);
        for digit in line[..20].iter_mut().rev() {
            *digit = b'0' + (n % 10) as u8;
            n /= 10;
        }
        if file.write_all_at(&line, 0).is_err() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn main() -> ExitCode {
    if let Some(path) = std::env::var_os("USEPOD_EDGE_ALLOC_COUNT") {
        match std::fs::File::create(&path) {
            Ok(file) => {
                std::thread::spawn(move || report(file));
            }
            Err(e) => eprintln!("alloc count: cannot create {path:?}: {e}"),
        }
    }
    usepod_edge::entry::main()
}
