//! [`Config`]: every setting, from environment variables (or the equivalent flags).
//!
//! Invalid values stop the server at startup with a message naming the variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::error::{ContextKind, ContextValue};
use clap::{CommandFactory, Parser};

use crate::php::{BodyLimits, PoolConfig};

/// The server's configuration. Each field reads the environment variable in its `env` name.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "tokio_php",
    version,
    about = "Serve PHP applications in-process over HTTP/1.1 and HTTP/2"
)]
pub struct Config {
    /// Address to listen on.
    #[arg(
        long,
        env = "LISTEN_ADDR",
        value_name = "LISTEN_ADDR",
        default_value = "0.0.0.0:8080"
    )]
    pub listen_addr: SocketAddr,

    /// PHP worker threads; 0 = one per available core.
    #[arg(
        long,
        env = "PHP_WORKERS",
        value_name = "PHP_WORKERS",
        default_value_t = 0
    )]
    pub php_workers: usize,

    /// Requests that may wait for a worker; 0 = workers x 100. Past it: 503.
    #[arg(
        long,
        env = "QUEUE_CAPACITY",
        value_name = "QUEUE_CAPACITY",
        default_value_t = 0
    )]
    pub queue_capacity: usize,

    /// Directory the scripts are served from.
    #[arg(
        long,
        env = "DOCUMENT_ROOT",
        value_name = "DOCUMENT_ROOT",
        default_value = "/var/www/html"
    )]
    pub document_root: PathBuf,

    /// Answer every request with an empty 200, without PHP (to measure the server alone).
    #[arg(long, env = "USE_STUB", value_name = "USE_STUB", default_value = "0", value_parser = parse_flag)]
    pub use_stub: bool,

    /// Accepted for compatibility; tokio_php has one native executor, used either way.
    #[arg(long, env = "USE_EXT", value_name = "USE_EXT", default_value = "1", value_parser = parse_flag)]
    pub use_ext: bool,

    /// Log filter (tracing's EnvFilter syntax, e.g. `info` or `tokio_php=debug`).
    #[arg(
        long,
        env = "RUST_LOG",
        value_name = "RUST_LOG",
        default_value = "info"
    )]
    pub rust_log: String,

    /// Largest accepted request body (e.g. `64M`, `1G`); larger bodies get 413.
    #[arg(long, env = "MAX_BODY_SIZE", value_name = "MAX_BODY_SIZE", default_value = "64M", value_parser = parse_size)]
    pub max_body_size: u64,

    /// Request bodies past this size are buffered in a temporary file instead of memory.
    #[arg(long, env = "BODY_SPILL_THRESHOLD", value_name = "BODY_SPILL_THRESHOLD", default_value = "1M", value_parser = parse_size)]
    pub body_spill_threshold: u64,

    /// Time a client has to send its request headers (e.g. `30s`).
    #[arg(long, env = "HEADER_READ_TIMEOUT", value_name = "HEADER_READ_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub header_read_timeout: Duration,
}

impl Config {
    /// Reads the configuration from the environment and command line, exiting with a message
    /// naming the offending variable on error.
    pub fn load() -> Config {
        let config = Config::try_parse().unwrap_or_else(|error| {
            let Some(variable) = variable_of(&error) else {
                error.exit() // --help, --version, unknown flags: clap's own output
            };
            let value = match error.get(ContextKind::InvalidValue) {
                Some(ContextValue::String(value)) => value.clone(),
                _ => String::new(),
            };
            let reason = std::error::Error::source(&error)
                .map_or_else(|| error.kind().to_string(), |e| e.to_string());
            eprintln!("error: invalid {variable}={value:?}: {reason}");
            std::process::exit(2);
        });
        if let Err(message) = config.validate() {
            eprintln!("error: {message}");
            std::process::exit(2);
        }
        config
    }

    /// Checks what the parsers alone cannot.
    pub fn validate(&self) -> Result<(), String> {
        if !self.use_stub && !self.document_root.is_dir() {
            return Err(format!(
                "DOCUMENT_ROOT={} is not a directory",
                self.document_root.display()
            ));
        }
        if self.body_spill_threshold > self.max_body_size {
            return Err(format!(
                "BODY_SPILL_THRESHOLD ({}) is larger than MAX_BODY_SIZE ({})",
                self.body_spill_threshold, self.max_body_size
            ));
        }
        if self.header_read_timeout.is_zero() {
            return Err("HEADER_READ_TIMEOUT must be greater than 0".into());
        }
        Ok(())
    }

    /// The worker pool settings.
    pub fn pool(&self) -> PoolConfig {
        PoolConfig {
            workers: self.php_workers,
            queue_capacity: self.queue_capacity,
            ..PoolConfig::default()
        }
    }

    /// The request body limits.
    pub fn body_limits(&self) -> BodyLimits {
        BodyLimits {
            max_size: self.max_body_size,
            spill_threshold: usize::try_from(self.body_spill_threshold).unwrap_or(usize::MAX),
        }
    }
}

/// The environment variable behind the argument a parse error is about, so the message names
/// what the user actually set (clap alone names the flag).
fn variable_of(error: &clap::Error) -> Option<String> {
    let ContextValue::String(arg) = error.get(ContextKind::InvalidArg)? else {
        return None;
    };
    let long = arg.split_whitespace().next()?.trim_start_matches("--");
    Config::command()
        .get_arguments()
        .find(|a| a.get_long() == Some(long))
        .and_then(|a| a.get_env())
        .map(|env| env.to_string_lossy().into_owned())
}

/// `1`/`0`, `true`/`false`, `yes`/`no`, `on`/`off` (any case).
pub fn parse_flag(value: &str) -> Result<bool, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" | "" => Ok(false),
        _ => Err(format!(
            "expected 1/0, true/false, yes/no or on/off, got {value:?}"
        )),
    }
}

/// A byte size: a number with an optional `K`, `M` or `G` suffix (powers of 1024; `B`/`iB`
/// suffixes allowed, e.g. `512K`, `64MiB`, `1G`).
pub fn parse_size(value: &str) -> Result<u64, String> {
    let text = value.trim();
    let upper = text.to_ascii_uppercase();
    let upper = upper.trim_end_matches("IB").trim_end_matches('B');
    let (digits, multiplier) = match upper.chars().last() {
        Some('K') => (&upper[..upper.len() - 1], 1u64 << 10),
        Some('M') => (&upper[..upper.len() - 1], 1 << 20),
        Some('G') => (&upper[..upper.len() - 1], 1 << 30),
        _ => (upper, 1),
    };
    digits
        .trim()
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(multiplier))
        .ok_or_else(|| format!("expected a size such as 512K, 64M or 1G, got {value:?}"))
}

/// A duration such as `30s`, `2m`, `1h` or `500ms`.
pub fn parse_duration(value: &str) -> Result<Duration, String> {
    humantime::parse_duration(value.trim())
        .map_err(|e| format!("expected a duration such as 30s or 2m, got {value:?} ({e})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_accept_the_usual_spellings() {
        for yes in ["1", "true", "YES", "on"] {
            assert_eq!(parse_flag(yes), Ok(true));
        }
        for no in ["0", "false", "No", "off"] {
            assert_eq!(parse_flag(no), Ok(false));
        }
        assert!(parse_flag("maybe").is_err());
    }

    #[test]
    fn sizes_use_binary_suffixes() {
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size("4k"), Ok(4096));
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("-1M").is_err());
    }

    #[test]
    fn bad_values_name_the_variable() {
        let error = Config::try_parse_from(["tokio_php", "--php-workers", "many"]).unwrap_err();
        assert!(error.to_string().contains("PHP_WORKERS"), "{error}");
    }
}
