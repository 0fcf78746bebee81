//! Locks that outlive a panicking holder. The shipped binary aborts on a panic
//! (Cargo.toml), so there no lock is ever poisoned; unit tests unwind, and a
//! panic caught there (src/jobs/mod.rs) must not turn every later caller into a
//! second panic. What these mutexes guard (queues, counters, a socket, a slot)
//! stays consistent at every unlock: a holder that panics leaves it no worse
//! than a holder that returned early.

use std::sync::{LockResult, Mutex, MutexGuard, PoisonError};

/// The guard, poisoned or not.
pub fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    unpoisoned(m.lock())
}

/// What a lock operation yields (a guard, a condvar wait's guard, a mutex's
/// inner value), poisoned or not.
pub fn unpoisoned<G>(r: LockResult<G>) -> G {
    r.unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poisoned_mutex_still_locks() {
        let m = Mutex::new(1);
        let _ = std::thread::scope(|s| {
            s.spawn(|| {
                let _g = m.lock().unwrap();
                panic!("poisons the mutex");
            })
            .join()
        });
        assert!(m.is_poisoned());
        *lock(&m) += 1;
        assert_eq!(unpoisoned(m.into_inner()), 2);
    }
}
