//! One admitted job as the queue holds it and a worker runs it.

use super::queue::Queued;
use crate::cancel::Cancel;
use crate::discovery::Target;
use crate::outgoing::Outbox;
use crate::protocol::JobRequest;
use std::sync::Arc;
use std::time::Instant;

/// One admitted job on its way to a worker.
pub struct Work {
    pub job: JobRequest,
    /// The pool member picked at admission; after a retry, the one that ran the job.
    pub member: Arc<Target>,
    /// The model's context window as capabilities offered it (the pool's smallest).
    pub context_window: Option<u32>,
    pub cancel: Cancel,
    pub ticket: u64,
    pub out: Outbox,
    pub received: Instant,
}

impl Queued for Work {
    fn job_id(&self) -> &str {
        &self.job.job_id
    }
}
