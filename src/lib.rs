//! tokio_php: an async HTTP server that runs PHP in-process.
//!
//! Requests are served by hyper (HTTP/1.1 and h2c) and handled by a tower stack whose innermost
//! service, [`php::PhpService`], runs each request's script on a pool of OS threads that each hold
//! their own thread-safe (ZTS) PHP context, driven through tokio_php's own SAPI.
//!
//! Start PHP ([`php::PhpRuntime`]) before the tokio runtime, then a [`php::PhpPool`], then serve
//! a [`php::PhpService`] (wrapped in whatever tower layers you like) with [`server::serve`].
#![warn(missing_docs)]
#![deny(unreachable_pub)]

pub mod admin;
pub mod config;
#[doc(hidden)]
pub mod fuzz;
pub mod http;
pub mod layer;
pub mod php;
pub mod server;
pub mod stack;
mod stub;
pub mod telemetry;

pub use crate::http::{BoxError, ConnInfo, ServerGenerated, TlsInfo, BUILD, SERVER_SOFTWARE};
pub use config::Config;
pub use stub::StubService;
