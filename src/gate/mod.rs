//! The admission gate: the operator's reasons not to take jobs (paused, outside the
//! serving schedule, local use, heat, battery power) combined into one decision.
//!
//! While any reason stands, new jobs are answered `out_of_capacity` with the reason,
//! the models are withdrawn (capabilities re-sent with none), running jobs finish and
//! the session stays up; when none is left the models are announced again. The monitor
//! (monitor.rs) re-reads the inputs when the agent's upkeep thread steps it (every status
//! interval, and at once when the operator acts); each rule is a pure function in its
//! own module, and [`blocks`] (decision.rs) is the pure combination.

pub mod control;
mod decision;
mod explain;
pub mod local;
mod monitor;
pub mod sensors;
mod shared;
pub mod tz;

pub use decision::{
    blocks, refusal, schedule_state, unix_of, wall_of, Block, Inputs, Reason, ScheduleState,
};
pub use explain::explain_config;
pub use monitor::{Monitor, Parts};
pub use shared::{At, BlockState, Gate, Serving};
