//! Everything the threads of a running agent share.

use crate::config::Config;
use crate::discovery::Discovery;
use crate::identity::Identity;
use crate::jobs::Jobs;
use crate::protocol::{HeartbeatStats, ModelOffer, OfferLimits, Outbound};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// How long capabilities wait for the first discovery round before going out
/// with what is known; later rounds re-send them.
pub const FIRST_ROUND_WAIT: Duration = Duration::from_millis(500);

pub struct Agent {
    pub config: Config,
    identity: Mutex<Identity>,
    pub tls: Arc<rustls::ClientConfig>,
    pub discovery: Arc<Discovery>,
    pub jobs: Jobs,
}

impl Agent {
    pub fn new(config: Config, identity: Identity, tls: Arc<rustls::ClientConfig>) -> Agent {
        let discovery = Arc::new(Discovery::new(&config));
        let jobs = Jobs::new(&config, Arc::clone(&discovery));
        Agent {
            config,
            identity: Mutex::new(identity),
            tls,
            discovery,
            jobs,
        }
    }

    pub fn lock_identity(&self) -> MutexGuard<'_, Identity> {
        self.identity.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The `capabilities` frame for the current route table.
    pub fn capabilities(&self) -> String {
        let snapshot = self.discovery.snapshot();
        let max = self.config.limits.max_concurrent;
        let models = snapshot
            .routes
            .iter()
            .map(|(id, route)| {
                let (input_per_1m, output_per_1m) = self.config.pricing.resolve(id);
                ModelOffer {
                    model_id: id.clone(),
                    input_per_1m,
                    output_per_1m,
                    // llama-server runs at most total_slots requests at a time.
                    max_concurrent: route.slots.map_or(max, |s| s.min(max)),
                    backend: route.target.kind.as_str(),
                    context_window: route.context_window,
                }
            })
            .collect();
        Outbound::Capabilities {
            models,
            limits: OfferLimits {
                max_concurrent_total: max,
                max_tokens_per_minute: self.config.limits.max_tokens_per_minute,
            },
            metadata: serde_json::json!({
                "agent_version": env!("CARGO_PKG_VERSION"),
                "agent": "usepod-edge",
            }),
        }
        .to_text()
    }

    /// Capabilities, giving the first discovery round a short chance to finish.
    pub fn capabilities_when_ready(&self) -> String {
        self.discovery.wait_first_round(FIRST_ROUND_WAIT);
        self.capabilities()
    }

    pub fn heartbeat_stats(&self) -> HeartbeatStats {
        HeartbeatStats {
            queue_depth: self.jobs.in_flight(),
            ..HeartbeatStats::default()
        }
    }
}
