//! One admitted job as the queue holds it and a worker runs it.

use super::queue::Queued;
use crate::cancel::Cancel;
use crate::outgoing::Outbox;
use crate::protocol::JobRequest;
use std::time::Instant;

/// One admitted job on its way to a worker.
pub struct Work {
    pub job: JobRequest,
    pub route: crate::discovery::Route,
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
