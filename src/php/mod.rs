//! PHP inside the process: the runtime, the worker pool and [`PhpService`].
//!
//! This is the only module with `unsafe` code: it calls the C SAPI shim in `ext/`, which owns
//! everything that touches PHP's globals or can longjmp.

pub(crate) mod body;
mod ffi;
mod pool;
pub(crate) mod request;
mod response;
mod runtime;
pub(crate) mod script;
mod service;
mod spool;

pub use body::BodyLimits;
pub use pool::{PhpPool, PoolConfig, PoolMonitor, PoolStats};
pub use request::{PhpIni, ServerVars};
pub use response::{FlushedEarly, IncompleteResponse, PhpBody, PhpTimings};
pub use runtime::{has_thread_timers, version, PhpRuntime, PhpRuntimeConfig, PhpStartError};
pub use script::{DocumentRoot, Resolution, Script};
pub use service::{PhpService, PhpServiceConfig, ResponseFuture};
