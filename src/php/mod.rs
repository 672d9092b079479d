//! PHP inside the process: the runtime, the worker pool (classic, or in worker mode) and
//! [`PhpService`].
//!
//! This is the only module with `unsafe` code, and within it only `ffi` (the bindings),
//! `runtime` (PHP's start and the SAPI's callbacks) and `thread` (a worker's PHP context) may
//! have it: they call the C SAPI shim in `ext/`, which owns everything that touches PHP's
//! globals or can longjmp.

#[allow(unsafe_code)]
mod ffi;
mod pool;
pub(crate) mod request;
mod response;
#[allow(unsafe_code)]
mod runtime;
mod service;
#[allow(unsafe_code)]
mod thread;
mod worker;

pub use crate::http::WorkerMatch;
pub use pool::{PhpPool, PoolConfig, PoolMonitor};
pub use response::PhpBody;
pub use runtime::{has_thread_timers, version, PhpRuntime, PhpRuntimeConfig, PhpStartError};
pub use service::{PhpService, PhpServiceConfig, ResponseFuture};
pub use worker::{WorkerConfig, WorkerStartError};
