//! [`Config`]: every setting, from environment variables (or the equivalent flags).
//!
//! Invalid values stop the server at startup with a message naming the variable.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::error::{ContextKind, ContextValue};
use clap::{CommandFactory, Parser};
use serde::Serialize;

use crate::http::BodyLimits;
use crate::layer::forwarded::{InvalidNetwork, TrustedProxies};
use crate::layer::try_files::{RuleError, TryFilesRule};
use crate::php::{PoolConfig, WorkerMatch};
use crate::server::{ServeConfig, Tls, TlsError};

/// The server's configuration. Each field reads the environment variable in its `env` name.
#[derive(Debug, Clone, Parser, Serialize)]
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

    /// Output a response keeps in memory for a client slower than its script; past it, output
    /// goes to a temporary file (see OUTPUT_SPOOL_SIZE).
    #[arg(long, env = "OUTPUT_BUFFER_SIZE", value_name = "OUTPUT_BUFFER_SIZE", default_value = "256K", value_parser = parse_size)]
    pub output_buffer_size: u64,

    /// Temporary-file space all responses together may use for output their clients have not
    /// read yet, so scripts finish and free their worker at once; 0 = none (a script whose
    /// client falls OUTPUT_BUFFER_SIZE behind waits for it, up to WRITE_TIMEOUT).
    #[arg(long, env = "OUTPUT_SPOOL_SIZE", value_name = "OUTPUT_SPOOL_SIZE", default_value = "1G", value_parser = parse_size)]
    pub output_spool_size: u64,

    /// A client that accepts no output for this long while output waits for it is given up:
    /// what it has not read is dropped and its response breaks off.
    #[arg(long, env = "WRITE_TIMEOUT", value_name = "WRITE_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    #[serde(serialize_with = "duration_text")]
    pub write_timeout: Duration,

    /// Requests taking longer get 504 and their script is stopped: `30s`, `2m`, `5m`, … or `off`.
    /// `tokio_request_heartbeat()` extends it.
    #[arg(long, env = "REQUEST_TIMEOUT", value_name = "REQUEST_TIMEOUT", default_value = "2m", value_parser = parse_optional_duration)]
    #[serde(serialize_with = "optional_duration_text")]
    pub request_timeout: ::std::option::Option<Duration>, // spelled out: clap treats a bare `Option` as "flag may be absent"

    /// Requests allowed per client IP per RATE_WINDOW; 0 = no rate limiting.
    #[arg(
        long,
        env = "RATE_LIMIT",
        value_name = "RATE_LIMIT",
        default_value_t = 0
    )]
    pub rate_limit: u32,

    /// The rate-limit window, in seconds.
    #[arg(long, env = "RATE_WINDOW", value_name = "RATE_WINDOW", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub rate_window: u64,

    /// Load balancers whose `Forwarded` / `X-Forwarded-For` / `-Proto` / `-Port` headers give the
    /// client's address, scheme and port: addresses or networks (`10.0.0.0/8, ::1`); empty = none.
    #[arg(long, env = "TRUSTED_PROXIES", value_name = "TRUSTED_PROXIES", default_value = "", value_parser = parse_trusted_proxies)]
    pub trusted_proxies: TrustedProxies,

    /// `Cache-Control: max-age` for static files: `1d`, `1w`, `1m` (month), `1y`, any `Ns`/`Nh`, or `off`.
    #[arg(long, env = "STATIC_CACHE_TTL", value_name = "STATIC_CACHE_TTL", default_value = "1d", value_parser = parse_cache_ttl)]
    #[serde(serialize_with = "optional_duration_text")]
    pub static_cache_ttl: ::std::option::Option<Duration>,

    /// Front controller (e.g. `index.php`): every request that is not a static file runs it,
    /// and no other script is reachable.
    #[arg(
        long,
        env = "INDEX_FILE",
        value_name = "INDEX_FILE",
        default_value = ""
    )]
    pub index_file: String,

    /// Worker mode: this script (absolute, or relative to DOCUMENT_ROOT) runs once per worker
    /// thread, boots the application and serves requests through tokio_handle_request(); empty =
    /// off.
    #[arg(
        long,
        env = "WORKER_SCRIPT",
        value_name = "WORKER_SCRIPT",
        default_value = ""
    )]
    pub worker_script: String,

    /// Worker mode: which requests the worker script serves, `*` or a path prefix such as `/api`
    /// (the others run as scripts).
    #[arg(
        long,
        env = "WORKER_MATCH",
        value_name = "WORKER_MATCH",
        default_value = "*"
    )]
    #[serde(serialize_with = "display_text")]
    pub worker_match: WorkerMatch,

    /// Worker mode: requests one run of the worker script serves before it is started afresh;
    /// 0 = no limit.
    #[arg(
        long,
        env = "WORKER_MAX_REQUESTS",
        value_name = "WORKER_MAX_REQUESTS",
        default_value_t = 0
    )]
    pub worker_max_requests: u64,

    /// Worker mode: threads running the worker script; 0 = as many as PHP_WORKERS.
    #[arg(
        long,
        env = "WORKER_THREADS",
        value_name = "WORKER_THREADS",
        default_value_t = 0
    )]
    pub worker_threads: usize,

    /// nginx's `try_files`, e.g. `$uri $uri/ /index.php?$args`: candidates tried in order, then
    /// a fallback URI or `=404`; empty = files, directory indexes and scripts only.
    #[arg(long, env = "TRY_FILES", value_name = "TRY_FILES", default_value = "", value_parser = parse_try_files)]
    pub try_files: ::std::option::Option<TryFilesRule>,

    /// Directory of `{status}.html` pages shown to browsers for empty error responses; empty = off.
    #[arg(
        long,
        env = "ERROR_PAGES_DIR",
        value_name = "ERROR_PAGES_DIR",
        default_value = ""
    )]
    pub error_pages_dir: String,

    /// `1`: requests with `X-Profile: 1` get `X-Profile-*` timing headers.
    #[arg(long, env = "PROFILE", value_name = "PROFILE", default_value = "0", value_parser = parse_flag)]
    pub profile: bool,

    /// `1`: one `access` log line per request.
    #[arg(long, env = "ACCESS_LOG", value_name = "ACCESS_LOG", default_value = "0", value_parser = parse_flag)]
    pub access_log: bool,

    /// PEM certificate chain: with TLS_KEY, serve HTTPS (TLS 1.3/1.2, ALPN h2 and http/1.1).
    #[arg(long, env = "TLS_CERT", value_name = "TLS_CERT", default_value = "")]
    pub tls_cert: String,

    /// PEM private key (PKCS#8, PKCS#1 or SEC1) for TLS_CERT.
    #[arg(long, env = "TLS_KEY", value_name = "TLS_KEY", default_value = "")]
    pub tls_key: String,

    /// Time a client has to complete the TLS handshake.
    #[arg(long, env = "TLS_HANDSHAKE_TIMEOUT", value_name = "TLS_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    #[serde(serialize_with = "duration_text")]
    pub tls_handshake_timeout: Duration,

    /// Largest HTTP/1 request head (request line + headers); larger ones get 431.
    #[arg(long, env = "MAX_HEADER_SIZE", value_name = "MAX_HEADER_SIZE", default_value = "64K", value_parser = parse_size)]
    pub max_header_size: u64,

    /// Most header fields in one HTTP/1 request; more get 431.
    #[arg(long, env = "MAX_HEADERS", value_name = "MAX_HEADERS", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_headers: u32,

    /// Concurrent streams per HTTP/2 connection.
    #[arg(long, env = "H2_MAX_CONCURRENT_STREAMS", value_name = "H2_MAX_CONCURRENT_STREAMS", default_value_t = 250, value_parser = clap::value_parser!(u32).range(1..))]
    pub h2_max_concurrent_streams: u32,

    /// A connection that moves no byte for this long is closed gracefully (HTTP/2: GOAWAY).
    #[arg(long, env = "KEEPALIVE_TIMEOUT", value_name = "KEEPALIVE_TIMEOUT", default_value = "75s", value_parser = parse_duration)]
    #[serde(serialize_with = "duration_text")]
    pub keepalive_timeout: Duration,

    /// On SIGTERM/SIGINT, in-flight requests get this many seconds to finish.
    #[arg(
        long,
        env = "DRAIN_TIMEOUT_SECS",
        value_name = "DRAIN_TIMEOUT_SECS",
        default_value_t = 30
    )]
    pub drain_timeout_secs: u64,

    /// OTLP/HTTP collector (e.g. `http://127.0.0.1:4318`): export a span per request. The other
    /// standard `OTEL_EXPORTER_OTLP_*` and `OTEL_BSP_*` variables apply too. Empty = off.
    #[arg(
        long,
        env = "OTEL_EXPORTER_OTLP_ENDPOINT",
        value_name = "OTEL_EXPORTER_OTLP_ENDPOINT",
        default_value = ""
    )]
    pub otel_exporter_otlp_endpoint: String,

    /// The service name on exported spans.
    #[arg(
        long,
        env = "OTEL_SERVICE_NAME",
        value_name = "OTEL_SERVICE_NAME",
        default_value = "tokio_php"
    )]
    pub otel_service_name: String,

    /// A php.ini file to load instead of PHP's compiled-in search path; empty = PHP's default
    /// (`php --ini` of the same build shows it). Directives can also be set one by one with
    /// `PHP_INI_<DIRECTIVE>` variables (see [`Config::php_ini_overrides`]).
    #[arg(long, env = "PHP_INI", value_name = "PHP_INI", default_value = "")]
    pub php_ini: String,

    /// Address of the internal server (`/health`, `/metrics`, `/config`); empty = off.
    #[arg(long, env = "INTERNAL_ADDR", value_name = "INTERNAL_ADDR", default_value = "", value_parser = parse_optional_addr)]
    pub internal_addr: ::std::option::Option<SocketAddr>,

    /// Time a client has to send its request headers (e.g. `30s`).
    #[arg(long, env = "HEADER_READ_TIMEOUT", value_name = "HEADER_READ_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    #[serde(serialize_with = "duration_text")]
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
        if let Err(error) = config.validate() {
            eprintln!("error: {error}");
            std::process::exit(2);
        }
        config
    }

    /// Checks what the parsers alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.use_stub && !self.document_root.is_dir() {
            return Err(ConfigError::NotADirectory {
                variable: "DOCUMENT_ROOT",
                path: self.document_root.clone(),
            });
        }
        if self.body_spill_threshold > self.max_body_size {
            return Err(ConfigError::SpillAboveMaxBody {
                spill_threshold: self.body_spill_threshold,
                max_body_size: self.max_body_size,
            });
        }
        if !self.error_pages_dir.is_empty() && !Path::new(&self.error_pages_dir).is_dir() {
            return Err(ConfigError::NotADirectory {
                variable: "ERROR_PAGES_DIR",
                path: self.error_pages_dir.clone().into(),
            });
        }
        if !self.php_ini.is_empty() && !Path::new(&self.php_ini).is_file() {
            return Err(ConfigError::NotAFile {
                variable: "PHP_INI",
                path: self.php_ini.clone().into(),
            });
        }
        if let (Some(rule), false) = (&self.try_files, self.index_file.is_empty()) {
            return Err(ConfigError::IndexFileAndTryFiles {
                index_file: self.index_file.clone(),
                try_files: rule.to_string(),
            });
        }
        if self.tls_cert.is_empty() != self.tls_key.is_empty() {
            return Err(ConfigError::TlsHalfSet);
        }
        if self.worker_script.is_empty() {
            let worker_settings = [
                ("WORKER_MATCH", self.worker_match != WorkerMatch::All),
                ("WORKER_MAX_REQUESTS", self.worker_max_requests != 0),
                ("WORKER_THREADS", self.worker_threads != 0),
            ];
            if let Some((variable, _)) = worker_settings.into_iter().find(|(_, set)| *set) {
                return Err(ConfigError::WorkerSettingWithoutScript { variable });
            }
        }
        let zero = [
            ("KEEPALIVE_TIMEOUT", self.keepalive_timeout.is_zero()),
            ("HEADER_READ_TIMEOUT", self.header_read_timeout.is_zero()),
            ("WRITE_TIMEOUT", self.write_timeout.is_zero()),
            ("OUTPUT_BUFFER_SIZE", self.output_buffer_size == 0),
        ];
        if let Some((variable, _)) = zero.into_iter().find(|(_, is_zero)| *is_zero) {
            return Err(ConfigError::Zero { variable });
        }
        Ok(())
    }

    /// php.ini directives from `PHP_INI_<DIRECTIVE>=value` environment variables: the name is
    /// lowercased and `__` stands for `.`, so `PHP_INI_MEMORY_LIMIT=256M` sets `memory_limit` and
    /// `PHP_INI_SESSION__SAVE_PATH=/var/lib/php/sessions` sets `session.save_path`. They are
    /// applied after php.ini, so they win. Sorted by name, for a stable order.
    pub fn php_ini_overrides() -> Vec<(String, String)> {
        php_ini_overrides_from(std::env::vars())
    }

    /// Worker mode's pool settings (`WORKER_THREADS`, `QUEUE_CAPACITY` …), when
    /// `WORKER_SCRIPT` is set.
    pub fn worker_pool(&self) -> Option<PoolConfig> {
        if self.worker_script.is_empty() {
            return None;
        }
        let mut pool = self.pool();
        if self.worker_threads > 0 {
            pool.workers = self.worker_threads;
        }
        Some(pool)
    }

    /// The worker pool settings.
    pub fn pool(&self) -> PoolConfig {
        PoolConfig {
            workers: self.php_workers,
            queue_capacity: self.queue_capacity,
            output_buffer_limit: usize::try_from(self.output_buffer_size).unwrap_or(usize::MAX),
            output_spool_limit: self.output_spool_size,
            write_timeout: self.write_timeout,
            ..PoolConfig::default()
        }
    }

    /// Connection settings, with TLS loaded (errors name the file and the problem).
    pub fn serve(&self) -> Result<ServeConfig, TlsError> {
        let tls = if self.tls_cert.is_empty() {
            None
        } else {
            Some(Tls::from_pem_files(
                Path::new(&self.tls_cert),
                Path::new(&self.tls_key),
                self.tls_handshake_timeout,
            )?)
        };
        Ok(ServeConfig {
            tls,
            header_read_timeout: self.header_read_timeout,
            max_header_size: usize::try_from(self.max_header_size).unwrap_or(usize::MAX),
            max_headers: self.max_headers as usize,
            h2_max_concurrent_streams: self.h2_max_concurrent_streams,
            drain_timeout: Duration::from_secs(self.drain_timeout_secs),
            keep_alive_timeout: self.keepalive_timeout,
            ..ServeConfig::default()
        })
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

/// See [`Config::php_ini_overrides`].
pub fn php_ini_overrides_from(
    vars: impl IntoIterator<Item = (String, String)>,
) -> Vec<(String, String)> {
    let mut overrides: Vec<(String, String)> = vars
        .into_iter()
        .filter_map(|(name, value)| {
            let directive = name.strip_prefix("PHP_INI_")?;
            (!directive.is_empty())
                .then(|| (directive.to_ascii_lowercase().replace("__", "."), value))
        })
        .collect();
    overrides.sort();
    overrides
}

/// A socket address, or empty for none.
pub fn parse_optional_addr(value: &str) -> Result<Option<SocketAddr>, InvalidValue> {
    match value.trim() {
        "" | "off" => Ok(None),
        other => other
            .parse()
            .map(Some)
            .map_err(|e| InvalidValue::new("an address such as 127.0.0.1:9090", value).because(e)),
    }
}

fn display_text<S: serde::Serializer>(
    value: &impl std::fmt::Display,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_str(value)
}

fn duration_text<S: serde::Serializer>(
    duration: &Duration,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&humantime::format_duration(*duration).to_string())
}

fn optional_duration_text<S: serde::Serializer>(
    duration: &Option<Duration>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match duration {
        Some(duration) => duration_text(duration, serializer),
        None => serializer.serialize_str("off"),
    }
}

/// `1`/`0`, `true`/`false`, `yes`/`no`, `on`/`off` (any case).
pub fn parse_flag(value: &str) -> Result<bool, InvalidValue> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" | "" => Ok(false),
        _ => Err(InvalidValue::new(
            "1/0, true/false, yes/no or on/off",
            value,
        )),
    }
}

/// A byte size: a number with an optional `K`, `M` or `G` suffix (powers of 1024; `B`/`iB`
/// suffixes allowed, e.g. `512K`, `64MiB`, `1G`).
pub fn parse_size(value: &str) -> Result<u64, InvalidValue> {
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
        .ok_or_else(|| InvalidValue::new("a size such as 512K, 64M or 1G", value))
}

/// `TRUSTED_PROXIES`: networks separated by commas or spaces.
pub fn parse_trusted_proxies(value: &str) -> Result<TrustedProxies, InvalidNetwork> {
    value.parse()
}

/// A `TRY_FILES` rule (nginx's `try_files` syntax), or none when empty.
pub fn parse_try_files(value: &str) -> Result<Option<TryFilesRule>, RuleError> {
    if value.trim().is_empty() {
        return Ok(None);
    }
    value.parse().map(Some)
}

/// A duration, or `off` (also `0`) for none.
pub fn parse_optional_duration(value: &str) -> Result<Option<Duration>, InvalidValue> {
    match value.trim() {
        "off" | "0" | "" => Ok(None),
        other => parse_duration(other).map(Some),
    }
}

/// A cache lifetime: a number with `s`, `h`, `d`, `w`, `m` (30-day month) or `y` (365 days), or
/// `off`.
pub fn parse_cache_ttl(value: &str) -> Result<Option<Duration>, InvalidValue> {
    let text = value.trim();
    if text == "off" || text == "0" {
        return Ok(None);
    }
    let error = || InvalidValue::new("a lifetime such as 1d, 1w, 1m, 1y or off", value);
    let unit_at = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(error)?;
    let (number, unit) = text.split_at(unit_at);
    let number: u64 = number.parse().map_err(|_| error())?;
    let seconds = match unit {
        "s" => 1,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        "m" => 30 * 86_400,
        "y" => 365 * 86_400,
        _ => return Err(error()),
    };
    Ok(Some(Duration::from_secs(
        number.checked_mul(seconds).ok_or_else(error)?,
    )))
}

/// A duration such as `30s`, `2m`, `1h` or `500ms`.
pub fn parse_duration(value: &str) -> Result<Duration, InvalidValue> {
    humantime::parse_duration(value.trim())
        .map_err(|e| InvalidValue::new("a duration such as 30s or 2m", value).because(e))
}

/// A value none of the parsers above accepts: what was expected, what was given and, when the
/// underlying parser said more, its reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected {expected}, got {value:?}{}", reason.as_ref().map(|r| format!(" ({r})")).unwrap_or_default())]
pub struct InvalidValue {
    /// What the setting takes, e.g. `a size such as 512K, 64M or 1G`.
    pub expected: &'static str,
    /// The value as given.
    pub value: String,
    /// The underlying parser's reason, if any.
    pub reason: Option<String>,
}

impl InvalidValue {
    fn new(expected: &'static str, value: &str) -> InvalidValue {
        InvalidValue {
            expected,
            value: value.to_string(),
            reason: None,
        }
    }

    fn because(mut self, reason: impl std::fmt::Display) -> InvalidValue {
        self.reason = Some(reason.to_string());
        self
    }
}

/// A configuration the parsers accept value by value but that cannot run, naming the
/// variables at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A directory setting that names no directory.
    #[error("{variable}={} is not a directory", path.display())]
    NotADirectory {
        /// The variable, e.g. `DOCUMENT_ROOT`.
        variable: &'static str,
        /// Its value.
        path: PathBuf,
    },
    /// A file setting that names no file.
    #[error("{variable}={} is not a file", path.display())]
    NotAFile {
        /// The variable, e.g. `PHP_INI`.
        variable: &'static str,
        /// Its value.
        path: PathBuf,
    },
    /// Bodies would spill to disk only past the size at which they are refused.
    #[error(
        "BODY_SPILL_THRESHOLD ({spill_threshold}) is larger than MAX_BODY_SIZE ({max_body_size})"
    )]
    SpillAboveMaxBody {
        /// `BODY_SPILL_THRESHOLD` in bytes.
        spill_threshold: u64,
        /// `MAX_BODY_SIZE` in bytes.
        max_body_size: u64,
    },
    /// Two routing modes at once.
    #[error(
        "INDEX_FILE={index_file} and TRY_FILES={try_files} are both set; set one: INDEX_FILE runs a strict \
         front controller and makes every other script unreachable, TRY_FILES routes as \
         nginx's try_files (e.g. TRY_FILES='$uri $uri/ /{}?$args' also runs existing scripts)",
        index_file.trim_start_matches('/')
    )]
    IndexFileAndTryFiles {
        /// `INDEX_FILE`.
        index_file: String,
        /// `TRY_FILES`.
        try_files: String,
    },
    /// A worker-mode setting without worker mode.
    #[error("{variable} is set but WORKER_SCRIPT is not; it applies to worker mode only")]
    WorkerSettingWithoutScript {
        /// The variable.
        variable: &'static str,
    },
    /// One of `TLS_CERT` and `TLS_KEY` without the other.
    #[error("TLS_CERT and TLS_KEY must be set together")]
    TlsHalfSet,
    /// A setting that must be positive set to zero.
    #[error("{variable} must be greater than 0")]
    Zero {
        /// The variable.
        variable: &'static str,
    },
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
    fn timeouts_and_cache_lifetimes() {
        assert_eq!(parse_optional_duration("off"), Ok(None));
        assert_eq!(
            parse_optional_duration("30s"),
            Ok(Some(Duration::from_secs(30)))
        );
        assert_eq!(
            parse_optional_duration("2m"),
            Ok(Some(Duration::from_secs(120)))
        );
        assert!(parse_optional_duration("soon").is_err());
        assert_eq!(parse_cache_ttl("off"), Ok(None));
        assert_eq!(parse_cache_ttl("1d"), Ok(Some(Duration::from_secs(86_400))));
        assert_eq!(
            parse_cache_ttl("1w"),
            Ok(Some(Duration::from_secs(604_800)))
        );
        assert_eq!(
            parse_cache_ttl("1m"),
            Ok(Some(Duration::from_secs(2_592_000)))
        );
        assert_eq!(
            parse_cache_ttl("1y"),
            Ok(Some(Duration::from_secs(31_536_000)))
        );
        assert!(parse_cache_ttl("1x").is_err());
        assert!(parse_cache_ttl("d").is_err());
    }

    #[test]
    fn php_ini_overrides_map_names() {
        let vars = [
            ("PHP_INI_MEMORY_LIMIT", "256M"),
            ("PHP_INI_SESSION__SAVE_PATH", "/tmp/s"),
            ("PHP_INI_OPCACHE__JIT_BUFFER_SIZE", "32M"),
            ("PHP_INI", "/etc/php.ini"),
            ("OTHER", "x"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        let overrides = php_ini_overrides_from(vars);
        let expected = [
            ("memory_limit", "256M"),
            ("opcache.jit_buffer_size", "32M"),
            ("session.save_path", "/tmp/s"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        assert_eq!(overrides, expected);
    }

    #[test]
    fn validation_errors_carry_the_variable_and_value() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_str().unwrap();
        let parse = |extra: &[&str]| {
            let mut args = vec!["tokio_php", "--document-root", root];
            args.extend_from_slice(extra);
            Config::try_parse_from(args).unwrap()
        };
        assert!(parse(&[]).validate().is_ok());
        let error = parse(&["--write-timeout", "0s"]).validate().unwrap_err();
        assert!(
            matches!(
                error,
                ConfigError::Zero {
                    variable: "WRITE_TIMEOUT"
                }
            ),
            "{error:?}"
        );
        let error = parse(&["--php-ini", "/nonexistent/php.ini"])
            .validate()
            .unwrap_err();
        assert!(
            matches!(&error, ConfigError::NotAFile { variable: "PHP_INI", path } if path == Path::new("/nonexistent/php.ini")),
            "{error:?}"
        );
        assert_eq!(
            error.to_string(),
            "PHP_INI=/nonexistent/php.ini is not a file"
        );
        let error = parse_size("lots").unwrap_err();
        assert_eq!(error.value, "lots");
        assert_eq!(
            error.to_string(),
            "expected a size such as 512K, 64M or 1G, got \"lots\""
        );
    }

    #[test]
    fn bad_values_name_the_variable() {
        let error = Config::try_parse_from(["tokio_php", "--php-workers", "many"]).unwrap_err();
        assert!(error.to_string().contains("PHP_WORKERS"), "{error}");
    }
}
