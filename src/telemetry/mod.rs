//! What the server tells about itself: Prometheus [`metrics`], OpenTelemetry [`trace`] export
//! and JSON [`log`] lines.

pub mod log;
pub mod metrics;
pub mod trace;

pub use metrics::{Metrics, PoolStats, RestartReason, WorkerStats};
pub use trace::{OtelError, OtelExport};
