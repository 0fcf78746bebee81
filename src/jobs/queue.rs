//! The hand-off from admission to the worker threads: bounded by the pool's
//! size, and a cancelled job leaves it at once (with the request it holds, up
//! to `limits.max_request_bytes`) instead of waiting for a worker to skip it.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};

/// What the queue needs to know of an item: the job it belongs to.
pub trait Queued {
    fn job_id(&self) -> &str;
}

struct State<T> {
    items: VecDeque<T>,
    closed: bool,
    /// Workers blocked in `pop`.
    waiting: usize,
}

pub struct WorkQueue<T> {
    capacity: std::sync::atomic::AtomicUsize,
    state: Mutex<State<T>>,
    ready: Condvar,
}

impl<T: Queued> WorkQueue<T> {
    pub fn new(capacity: usize) -> WorkQueue<T> {
        WorkQueue {
            capacity: std::sync::atomic::AtomicUsize::new(capacity),
            state: Mutex::new(State {
                items: VecDeque::with_capacity(capacity),
                closed: false,
                waiting: 0,
            }),
            ready: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        crate::lock::lock(&self.state)
    }

    /// A reload's pool size; items already queued stay.
    pub fn set_capacity(&self, capacity: usize) {
        self.capacity
            .store(capacity, std::sync::atomic::Ordering::Relaxed);
    }

    /// Queues `item`, or gives it back when the queue is full or closed. Ok(true) when
    /// a waiting worker will take it; Ok(false) when every worker is busy.
    pub fn push(&self, item: T) -> Result<bool, T> {
        let mut st = self.lock();
        if st.closed || st.items.len() >= self.capacity.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(item);
        }
        st.items.push_back(item);
        let taken = st.waiting >= st.items.len();
        drop(st);
        self.ready.notify_one();
        Ok(taken)
    }

    /// The next item, waiting for one; None once the queue is closed and empty.
    pub fn pop(&self) -> Option<T> {
        let mut st = self.lock();
        loop {
            if let Some(item) = st.items.pop_front() {
                return Some(item);
            }
            if st.closed {
                return None;
            }
            st.waiting += 1;
            st = crate::lock::unpoisoned(self.ready.wait(st));
            st.waiting -= 1;
        }
    }

    /// Takes the queued item of `job_id` out, if it has not reached a worker.
    pub fn remove(&self, job_id: &str) -> Option<T> {
        let mut st = self.lock();
        let at = st.items.iter().position(|i| i.job_id() == job_id)?;
        st.items.remove(at)
    }

    /// Empties the queue; returns how many items were dropped.
    pub fn clear(&self) -> usize {
        let mut st = self.lock();
        let n = st.items.len();
        st.items.clear();
        n
    }

    /// Workers finish what is queued, then their `pop` returns None.
    pub fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().items.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    impl Queued for &'static str {
        fn job_id(&self) -> &str {
            self
        }
    }

    #[test]
    fn bounded_and_in_order() {
        let q = WorkQueue::new(2);
        assert_eq!(q.push("a"), Ok(false), "no worker waits");
        assert_eq!(q.push("b"), Ok(false));
        assert_eq!(q.push("c"), Err("c"), "full at capacity");
        assert_eq!(q.len(), 2);
        assert_eq!(q.pop(), Some("a"));
        assert_eq!(q.push("c"), Ok(false));
        assert_eq!(q.pop(), Some("b"));
        assert_eq!(q.pop(), Some("c"));
        assert_eq!(q.len(), 0);
    }

    #[test]
    fn a_removed_item_never_reaches_a_worker_and_frees_its_place() {
        let q = WorkQueue::new(2);
        q.push("a").unwrap();
        q.push("b").unwrap();
        assert_eq!(q.remove("a"), Some("a"));
        assert_eq!(q.remove("a"), None, "already gone");
        assert_eq!(q.remove("zzz"), None);
        q.push("c").unwrap();
        assert_eq!(q.pop(), Some("b"));
        assert_eq!(q.pop(), Some("c"));
        q.push("d").unwrap();
        assert_eq!(q.clear(), 1);
        assert_eq!(q.len(), 0);
    }

    #[test]
    fn a_waiting_worker_wakes_for_work_and_for_close() {
        let q = Arc::new(WorkQueue::new(4));
        let (tx, rx) = crossbeam_channel::unbounded();
        let worker = {
            let q = Arc::clone(&q);
            std::thread::spawn(move || {
                while let Some(item) = q.pop() {
                    tx.send(item).unwrap();
                }
            })
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while q.lock().waiting == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the worker never waited"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(q.push("a"), Ok(true), "the waiting worker takes it");
        assert_eq!(rx.recv_timeout(Duration::from_secs(10)), Ok("a"));
        q.push("b").unwrap();
        q.close();
        assert_eq!(q.push("c"), Err("c"), "closed");
        assert_eq!(rx.recv_timeout(Duration::from_secs(10)), Ok("b"));
        worker.join().unwrap();
        assert!(rx.try_recv().is_err());
    }
}
