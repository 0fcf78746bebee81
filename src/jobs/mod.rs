//! Job admission and execution (filled in by the jobs work).

use crate::agent::Agent;
use crate::config::Config;
use crate::protocol::{ErrorCode, JobRequest, Outbound};
use crate::session::Outgoing;
use crossbeam_channel::Sender;

pub struct Jobs {
    max: u32,
}

impl Jobs {
    pub fn new(config: &Config) -> Jobs {
        Jobs {
            max: config.limits.max_concurrent,
        }
    }

    pub fn submit(&self, agent: &Agent, job: JobRequest, _tx: &Sender<Outgoing>) -> Option<Outbound> {
        let _ = (agent, self.max);
        Some(Outbound::job_error(&job.job_id, ErrorCode::ModelNotLoaded, "not yet", 0))
    }

    pub fn cancel(&self, _job_id: &str) {}

    pub fn cancel_all(&self, _why: &str) {}

    pub fn in_flight(&self) -> u32 {
        0
    }
}
