//! The values layers and [`PhpService`](crate::php::PhpService) hand each other through request
//! and response extensions, besides the trace ([`TraceContext`](super::TraceContext),
//! [`RequestId`](super::RequestId)), the [`Deadline`](super::Deadline), the connection
//! ([`ConnInfo`](super::ConnInfo)) and the routing decision ([`Script`](super::Script)).

use std::time::Duration;

/// Extra `$_SERVER` entries, set by layers through request extensions (as nginx's
/// `fastcgi_param` does for php-fpm). They are registered after the standard ones, so they win.
///
/// ```
/// use tokio_php::http::ServerVars;
///
/// let mut request = http::Request::new(());
/// request
///     .extensions_mut()
///     .get_or_insert_default::<ServerVars>()
///     .insert("APP_TENANT", "acme");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerVars {
    vars: Vec<(String, String)>,
}

impl ServerVars {
    /// Adds `$_SERVER[name] = value`.
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.vars.push((name.into(), value.into()));
    }

    /// The entries, in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.vars.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

/// php.ini directives for one request only, set through request extensions — what php-fpm's
/// `PHP_VALUE` FastCGI parameter does. Values are php.ini syntax (constants such as `E_ALL` and
/// expressions work; quote values containing `;`). They apply before PHP starts the request, so
/// they also govern how it is read (`post_max_size`, `enable_post_data_reading`, …), and are
/// restored when it ends. They act at the per-directory level, like `.user.ini` or
/// `php_value`: system-only directives are refused, and scripts may still `ini_set()` them.
///
/// ```
/// use tokio_php::http::PhpIni;
///
/// let mut request = http::Request::new(());
/// request
///     .extensions_mut()
///     .get_or_insert_default::<PhpIni>()
///     .insert("memory_limit", "256M");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PhpIni {
    entries: Vec<(String, String)>,
}

impl PhpIni {
    /// Sets `name = value` for this request.
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.entries.push((name.into(), value.into()));
    }

    /// The directives, in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// php.ini lines; entries whose name or value spans lines are left out.
    pub(crate) fn to_ini_text(&self) -> String {
        let mut text = String::new();
        for (name, value) in self.iter() {
            if name.contains(['\n', '\r', '=']) || value.contains(['\n', '\r']) {
                tracing::warn!(
                    name,
                    "ignoring a per-request ini directive that spans lines"
                );
                continue;
            }
            text.push_str(name);
            text.push('=');
            text.push_str(value);
            text.push('\n');
        }
        text
    }
}

/// Where a PHP request's time went, attached to its response's extensions (read by
/// [`ProfileLayer`](crate::layer::ProfileLayer)). For a streamed response the values are those
/// known when its headers left: `script` and `output` so far, and no `shutdown`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PhpTimings {
    /// Resolving the script, reading the request body and preparing PHP's request.
    pub parse: Duration,
    /// Waiting in the queue for a worker.
    pub queue: Duration,
    /// `php_request_startup()`.
    pub startup: Duration,
    /// Running the script (output time included).
    pub script: Duration,
    /// Handing output to the client (inside `script` and `shutdown`).
    pub output: Duration,
    /// `php_request_shutdown()`: shutdown functions, destructors, cleanup.
    pub shutdown: Option<Duration>,
}

/// Marks a streamed response whose output started with PHP's `flush()`: the script wants its
/// bytes delivered promptly (progress output, Server-Sent Events), so nothing should buffer it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlushedEarly;

/// Marks a response the server generated itself (404 for a missing script, 413, 429, 503, …)
/// rather than one a PHP script produced: [`ErrorPagesLayer`](crate::layer::ErrorPagesLayer) may replace its short
/// plain-text body with the configured HTML page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerGenerated;
