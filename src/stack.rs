//! The stacks of the agent's own threads. A stack reserves its size in address space and
//! holds in memory what the thread has touched (`make bench` prints it per thread: 4 to
//! 52 KiB in an idle agent). One size serves them all: the deepest is a job's or a
//! probe's, an HTTP exchange through ureq and rustls and a JSON body whose depth
//! serde_json bounds (128 levels), far below it.

/// Every thread the agent starts gets this much stack (std's default is 2 MiB).
pub const STACK: usize = 256 * 1024;

/// A builder for one of the agent's threads, named `name` (the name `top` and the bench
/// show).
pub fn thread(name: &str) -> std::thread::Builder {
    std::thread::Builder::new()
        .name(name.into())
        .stack_size(STACK)
}
