//! Prometheus metrics: the request counters the metrics layer feeds, and the gauges sampled
//! when `/metrics` is scraped (uptime, rates, connections, PHP workers and queue, node load and
//! memory).
//!
//! Each server has its own registry (no global recorder), so several servers — or tests — in
//! one process never mix their numbers.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use metrics::{
    Counter, Gauge, Histogram, Key, KeyName, Label, Metadata, Recorder, SharedString, Unit,
};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

const DURATION: &str = "tokio_php_request_duration_seconds";
const WORKER_RESTARTS: &str = "tokio_php_worker_restarts_total";
const WORKER_REQUESTS: &str = "tokio_php_worker_requests_total";
const WORKER_SCRIPT_REQUESTS: &str = "tokio_php_worker_script_requests";
/// Latency buckets, in seconds: from a cached PHP page to a slow report.
const DURATION_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));

/// One server's metrics. Cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    started: Instant,
    requests: AtomicU64,
    duration_micros: AtomicU64,
    /// (when, requests) at the previous scrape, for the request rate between scrapes.
    last_scrape: Mutex<(Instant, u64)>,
    duration: Histogram,
    rate_limited: Counter,
    timed_out: Counter,
    /// 504s answered by the timeout layer; scripts stopped by a timeout without a 504 are added
    /// from the pool's count when rendering.
    answered_504: AtomicU64,
    dropped: AtomicU64,
    /// `tokio_php_requests_total{method}`, registered once per method label.
    by_method: [Counter; METHOD_LABELS.len()],
    /// `tokio_php_responses_total{status}`, registered on first use of each status.
    by_status: Box<[OnceLock<Counter>]>,
}

/// The method labels ([`method_label`]), in a fixed order.
const METHOD_LABELS: [&str; 8] = [
    "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "OTHER",
];

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics")
            .field("requests", &self.inner.requests.load(Ordering::Relaxed))
            .finish()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// Names, types and help texts, registered up front so every metric appears from the start.
const DESCRIPTIONS: &[(&str, Kind, &str)] = &[
    (
        "tokio_php_uptime_seconds",
        Kind::Gauge,
        "Seconds since the server started.",
    ),
    (
        "tokio_php_requests_per_second",
        Kind::Gauge,
        "Requests per second since the previous scrape.",
    ),
    (
        "tokio_php_response_time_avg_seconds",
        Kind::Gauge,
        "Mean time to the response head since start.",
    ),
    (
        "tokio_php_active_connections",
        Kind::Gauge,
        "Client connections open now.",
    ),
    (
        "tokio_php_pending_requests",
        Kind::Gauge,
        "Requests waiting in the queue for a PHP worker.",
    ),
    (
        "tokio_php_dropped_requests",
        Kind::Gauge,
        "Requests refused with 503 because the queue was full, since start.",
    ),
    (
        "tokio_php_requests_total",
        Kind::Counter,
        "Requests received, by method.",
    ),
    (
        "tokio_php_responses_total",
        Kind::Counter,
        "Responses sent, by status code.",
    ),
    (
        "tokio_php_request_duration_seconds",
        Kind::Histogram,
        "Time from request to response head.",
    ),
    (
        "tokio_php_rate_limited_requests_total",
        Kind::Counter,
        "Requests refused with 429 by the rate limiter.",
    ),
    (
        "tokio_php_timed_out_requests_total",
        Kind::Counter,
        "Requests stopped by a timeout: answered 504 by REQUEST_TIMEOUT, broken off by it after their head was sent, or ended by PHP's max_execution_time.",
    ),
    (
        "tokio_php_php_fatal_errors_total",
        Kind::Counter,
        "PHP fatal errors (uncaught exceptions, memory_limit and stack overflows included).",
    ),
    (
        "tokio_php_php_workers_replaced_total",
        Kind::Counter,
        "PHP worker threads retired after an unrecoverable error and replaced.",
    ),
    (
        "tokio_php_abandoned_requests_total",
        Kind::Counter,
        "Queued requests dropped before a worker took them: their client left or their deadline passed.",
    ),
    (
        "tokio_php_php_workers",
        Kind::Gauge,
        "PHP worker threads alive.",
    ),
    (
        "tokio_php_php_workers_busy",
        Kind::Gauge,
        "PHP workers running a script.",
    ),
    (
        "tokio_php_php_workers_idle",
        Kind::Gauge,
        "PHP workers waiting for a request.",
    ),
    (
        "tokio_php_queue_capacity",
        Kind::Gauge,
        "Requests that may wait for a PHP worker.",
    ),
    (
        "tokio_php_output_spool_bytes",
        Kind::Gauge,
        "Output of finished or running scripts waiting for slow clients in temporary files.",
    ),
    (
        "tokio_php_output_spool_files",
        Kind::Gauge,
        "Temporary files holding output for slow clients.",
    ),
    (
        "tokio_php_memory_usage_percent",
        Kind::Gauge,
        "Share of the machine's memory in use.",
    ),
    ("node_load1", Kind::Gauge, "1-minute load average."),
    ("node_load5", Kind::Gauge, "5-minute load average."),
    ("node_load15", Kind::Gauge, "15-minute load average."),
    ("node_memory_MemTotal_bytes", Kind::Gauge, "Total memory."),
    (
        "node_memory_MemAvailable_bytes",
        Kind::Gauge,
        "Memory available for new work.",
    ),
    (
        "node_memory_MemUsed_bytes",
        Kind::Gauge,
        "Memory in use (total minus available).",
    ),
    (
        WORKER_RESTARTS,
        Kind::Counter,
        "Worker mode: worker script restarts since start, by reason.",
    ),
    (
        WORKER_REQUESTS,
        Kind::Counter,
        "Worker mode: requests served since start, by worker thread.",
    ),
    (
        WORKER_SCRIPT_REQUESTS,
        Kind::Gauge,
        "Worker mode: requests served by the worker script running now, by worker thread.",
    ),
];

#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Metrics {
    /// An empty registry.
    pub fn new() -> Metrics {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(DURATION.to_string()), DURATION_BUCKETS)
            .expect("non-empty buckets")
            .build_recorder();
        for &(name, kind, help) in DESCRIPTIONS {
            let (key, help) = (KeyName::from_const_str(name), SharedString::const_str(help));
            let unit = name.ends_with("_seconds").then_some(Unit::Seconds);
            match kind {
                Kind::Counter => recorder.describe_counter(key, unit, help),
                Kind::Gauge => recorder.describe_gauge(key, unit, help),
                Kind::Histogram => recorder.describe_histogram(key, unit, help),
            }
        }
        let handle = recorder.handle();
        let counter =
            |name: &'static str| recorder.register_counter(&Key::from_static_name(name), &METADATA);
        let by_method = METHOD_LABELS.map(|method| {
            let key = Key::from_parts(
                "tokio_php_requests_total",
                vec![Label::new("method", method)],
            );
            recorder.register_counter(&key, &METADATA)
        });
        let inner = Inner {
            by_method,
            by_status: (0..1000).map(|_| OnceLock::new()).collect(),
            duration: recorder.register_histogram(&Key::from_static_name(DURATION), &METADATA),
            rate_limited: counter("tokio_php_rate_limited_requests_total"),
            timed_out: counter("tokio_php_timed_out_requests_total"),
            handle,
            started: Instant::now(),
            requests: AtomicU64::new(0),
            duration_micros: AtomicU64::new(0),
            last_scrape: Mutex::new((Instant::now(), 0)),
            answered_504: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            recorder,
        };
        Metrics {
            inner: Arc::new(inner),
        }
    }

    /// Records one answered request. `generated` marks responses the server made itself
    /// (a 429 from the rate limiter, a 504 from the timeout, a 503 for a full queue).
    pub fn record(&self, method: &Method, status: StatusCode, elapsed: Duration, generated: bool) {
        let inner = &self.inner;
        inner.requests.fetch_add(1, Ordering::Relaxed);
        inner.duration_micros.fetch_add(
            u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        inner.duration.record(elapsed.as_secs_f64());
        inner.by_method[method_index(method)].increment(1);
        self.status_counter(status).increment(1);
        if generated {
            match status {
                StatusCode::TOO_MANY_REQUESTS => inner.rate_limited.increment(1),
                StatusCode::GATEWAY_TIMEOUT => {
                    inner.answered_504.fetch_add(1, Ordering::Relaxed);
                }
                StatusCode::SERVICE_UNAVAILABLE => {
                    inner.dropped.fetch_add(1, Ordering::Relaxed);
                }
                _ => {}
            }
        }
    }

    /// Requests recorded since start.
    pub fn total_requests(&self) -> u64 {
        self.inner.requests.load(Ordering::Relaxed)
    }

    fn status_counter(&self, status: StatusCode) -> &Counter {
        self.inner.by_status[usize::from(status.as_u16()) % 1000].get_or_init(|| {
            let key = Key::from_parts(
                "tokio_php_responses_total",
                vec![Label::new("status", status.as_str().to_string())],
            );
            self.inner.recorder.register_counter(&key, &METADATA)
        })
    }

    fn gauge(&self, name: &'static str) -> Gauge {
        self.inner
            .recorder
            .register_gauge(&Key::from_static_name(name), &METADATA)
    }

    fn counter(&self, name: &'static str) -> Counter {
        self.inner
            .recorder
            .register_counter(&Key::from_static_name(name), &METADATA)
    }

    /// Samples the gauges and renders everything in the Prometheus text format, given the
    /// client connections open now and the PHP pool's load (none for a server without PHP).
    pub fn render(
        &self,
        active_connections: usize,
        pool: Option<PoolStats>,
        workers: Option<&WorkerStats>,
    ) -> String {
        let inner = &self.inner;
        let requests = inner.requests.load(Ordering::Relaxed);
        let now = Instant::now();
        self.gauge("tokio_php_uptime_seconds")
            .set(inner.started.elapsed().as_secs_f64());
        let rate = {
            let mut last = inner.last_scrape.lock().unwrap_or_else(|e| e.into_inner());
            let (since, before) = *last;
            *last = (now, requests);
            let seconds = now.duration_since(since).as_secs_f64();
            if seconds > 0.0 {
                (requests - before) as f64 / seconds
            } else {
                0.0
            }
        };
        self.gauge("tokio_php_requests_per_second").set(rate);
        let average = if requests == 0 {
            0.0
        } else {
            inner.duration_micros.load(Ordering::Relaxed) as f64 / requests as f64 / 1e6
        };
        self.gauge("tokio_php_response_time_avg_seconds")
            .set(average);
        self.gauge("tokio_php_active_connections")
            .set(active_connections as f64);
        self.gauge("tokio_php_dropped_requests")
            .set(inner.dropped.load(Ordering::Relaxed) as f64);
        let scripts_timed_out = pool.map_or(0, |pool| pool.timeouts);
        inner
            .timed_out
            .absolute(inner.answered_504.load(Ordering::Relaxed) + scripts_timed_out);
        if let Some(pool) = pool {
            self.gauge("tokio_php_pending_requests")
                .set(pool.queued as f64);
            self.gauge("tokio_php_queue_capacity")
                .set(pool.queue_capacity as f64);
            self.gauge("tokio_php_php_workers")
                .set(pool.live_workers as f64);
            self.gauge("tokio_php_php_workers_busy")
                .set(pool.busy_workers as f64);
            self.gauge("tokio_php_php_workers_idle")
                .set(pool.live_workers.saturating_sub(pool.busy_workers) as f64);
            self.gauge("tokio_php_output_spool_bytes")
                .set(pool.spooled_bytes as f64);
            self.gauge("tokio_php_output_spool_files")
                .set(pool.spool_files as f64);
            self.counter("tokio_php_php_fatal_errors_total")
                .absolute(pool.fatal_errors);
            self.counter("tokio_php_php_workers_replaced_total")
                .absolute(pool.replaced_workers);
            self.counter("tokio_php_abandoned_requests_total")
                .absolute(pool.abandoned);
        }
        if let Some(workers) = workers {
            self.render_worker_mode(workers);
        }
        self.sample_node();
        inner.handle.render()
    }

    fn render_worker_mode(&self, workers: &WorkerStats) {
        for (reason, count) in &workers.restarts {
            self.labelled_counter(WORKER_RESTARTS, "reason", reason.as_str().to_string())
                .absolute(*count);
        }
        for (worker, count) in workers.requests.iter().enumerate() {
            self.labelled_counter(WORKER_REQUESTS, "worker", worker.to_string())
                .absolute(*count);
        }
        for (worker, count) in workers.script_requests.iter().enumerate() {
            let key = Key::from_parts(
                WORKER_SCRIPT_REQUESTS,
                vec![Label::new("worker", worker.to_string())],
            );
            self.inner
                .recorder
                .register_gauge(&key, &METADATA)
                .set(*count as f64);
        }
    }

    fn labelled_counter(&self, name: &'static str, label: &'static str, value: String) -> Counter {
        let key = Key::from_parts(name, vec![Label::new(label, value)]);
        self.inner.recorder.register_counter(&key, &METADATA)
    }

    fn sample_node(&self) {
        if let Some([one, five, fifteen]) = load_average() {
            self.gauge("node_load1").set(one);
            self.gauge("node_load5").set(five);
            self.gauge("node_load15").set(fifteen);
        }
        if let Some((total, available)) = memory() {
            let used = total.saturating_sub(available);
            self.gauge("node_memory_MemTotal_bytes").set(total as f64);
            self.gauge("node_memory_MemAvailable_bytes")
                .set(available as f64);
            self.gauge("node_memory_MemUsed_bytes").set(used as f64);
            if total > 0 {
                self.gauge("tokio_php_memory_usage_percent")
                    .set(used as f64 * 100.0 / total as f64);
            }
        }
    }
}

/// A snapshot of the PHP pool's load, as [`PhpPool`](crate::php::PhpPool) reports it (or the
/// sum over several pools, as [`PoolMonitor`](crate::php::PoolMonitor) does).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Worker threads configured.
    pub workers: usize,
    /// Requests that may wait for a worker.
    pub queue_capacity: usize,
    /// PHP fatal errors (including uncaught exceptions, memory_limit and stack overflows) since
    /// start.
    pub fatal_errors: u64,
    /// Scripts stopped by a timeout that was not answered `504` (which the timeout layer
    /// counts): `REQUEST_TIMEOUT` passing after the response head was sent, and PHP's
    /// `max_execution_time`, since start.
    pub timeouts: u64,
    /// Bytes of output waiting for slow clients in temporary files now.
    pub spooled_bytes: u64,
    /// Temporary files holding such output now.
    pub spool_files: usize,
    /// Worker threads retired after an unrecoverable error and replaced by fresh ones, since
    /// start.
    pub replaced_workers: u64,
    /// Queued requests dropped unrun because nobody waited for them any more (the client left,
    /// or the request's deadline passed), since start.
    pub abandoned: u64,
    /// Workers running a script right now.
    pub busy_workers: usize,
    /// Worker threads alive.
    pub live_workers: usize,
    /// Requests waiting for a worker.
    pub queued: usize,
}

impl PoolStats {
    /// Both pools' numbers together.
    pub fn sum(self, other: PoolStats) -> PoolStats {
        PoolStats {
            workers: self.workers + other.workers,
            queue_capacity: self.queue_capacity + other.queue_capacity,
            fatal_errors: self.fatal_errors + other.fatal_errors,
            timeouts: self.timeouts + other.timeouts,
            spooled_bytes: self.spooled_bytes + other.spooled_bytes,
            spool_files: self.spool_files + other.spool_files,
            replaced_workers: self.replaced_workers + other.replaced_workers,
            abandoned: self.abandoned + other.abandoned,
            busy_workers: self.busy_workers + other.busy_workers,
            live_workers: self.live_workers + other.live_workers,
            queued: self.queued + other.queued,
        }
    }
}

/// Why a worker script was started again (worker mode, docs/worker-mode.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RestartReason {
    /// It served `WORKER_MAX_REQUESTS` requests.
    MaxRequests,
    /// A fatal error.
    FatalError,
    /// `memory_limit` was reached.
    MemoryLimit,
    /// A request handler threw an exception nothing caught.
    Exception,
    /// A request handler called `exit()`.
    Exit,
    /// A request timed out (`REQUEST_TIMEOUT`, `max_execution_time`).
    Timeout,
    /// PHP overflowed its C stack.
    StackOverflow,
    /// The script ended without `tokio_handle_request()` telling it to.
    ScriptEnded,
    /// A restarted script failed before it served a request.
    BootFailed,
}

impl RestartReason {
    /// Every reason, in a fixed order.
    pub const ALL: [RestartReason; 9] = [
        RestartReason::MaxRequests,
        RestartReason::FatalError,
        RestartReason::MemoryLimit,
        RestartReason::Exception,
        RestartReason::Exit,
        RestartReason::Timeout,
        RestartReason::StackOverflow,
        RestartReason::ScriptEnded,
        RestartReason::BootFailed,
    ];

    /// The `reason` label and log field.
    pub fn as_str(self) -> &'static str {
        match self {
            RestartReason::MaxRequests => "max_requests",
            RestartReason::FatalError => "fatal_error",
            RestartReason::MemoryLimit => "memory_limit",
            RestartReason::Exception => "exception",
            RestartReason::Exit => "exit",
            RestartReason::Timeout => "timeout",
            RestartReason::StackOverflow => "stack_overflow",
            RestartReason::ScriptEnded => "script_ended",
            RestartReason::BootFailed => "boot_failed",
        }
    }

    /// Whether the restart follows a failure (and so backs off when failures repeat).
    pub fn is_failure(self) -> bool {
        self != RestartReason::MaxRequests
    }
}

impl fmt::Display for RestartReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a worker-mode pool counts, by worker thread and restart reason.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkerStats {
    /// Worker script restarts since start, for each reason of [`RestartReason::ALL`].
    pub restarts: Vec<(RestartReason, u64)>,
    /// Requests each worker thread served since start (index = `tokio_worker_id()`).
    pub requests: Vec<u64>,
    /// Requests the script running now on each worker thread served: what
    /// `WORKER_MAX_REQUESTS` bounds.
    pub script_requests: Vec<u64>,
}

/// The method's place in [`METHOD_LABELS`]; anything unusual is `OTHER`, so clients cannot grow
/// the label set.
fn method_index(method: &Method) -> usize {
    match *method {
        Method::GET => 0,
        Method::POST => 1,
        Method::PUT => 2,
        Method::PATCH => 3,
        Method::DELETE => 4,
        Method::HEAD => 5,
        Method::OPTIONS => 6,
        _ => 7,
    }
}

fn load_average() -> Option<[f64; 3]> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let mut fields = text.split_whitespace().map(|f| f.parse::<f64>().ok());
    Some([fields.next()??, fields.next()??, fields.next()??])
}

/// (MemTotal, MemAvailable) in bytes.
fn memory() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .map(|kib| kib * 1024)
    };
    Some((field("MemTotal:")?, field("MemAvailable:")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_requests_appear_in_the_rendering() {
        let metrics = Metrics::new();
        metrics.record(
            &Method::GET,
            StatusCode::OK,
            Duration::from_millis(3),
            false,
        );
        metrics.record(
            &Method::POST,
            StatusCode::TOO_MANY_REQUESTS,
            Duration::from_micros(50),
            true,
        );
        metrics.record(
            &Method::from_bytes(b"BREW").unwrap(),
            StatusCode::SERVICE_UNAVAILABLE,
            Duration::ZERO,
            true,
        );
        let text = metrics.render(0, None, None);
        assert!(
            text.contains("tokio_php_requests_total{method=\"GET\"} 1"),
            "{text}"
        );
        assert!(text.contains("tokio_php_requests_total{method=\"OTHER\"} 1"));
        assert!(text.contains("tokio_php_responses_total{status=\"429\"} 1"));
        assert!(text.contains("tokio_php_rate_limited_requests_total 1"));
        assert!(text.contains("tokio_php_dropped_requests 1"));
        assert!(text.contains("tokio_php_request_duration_seconds_bucket{le=\"0.005\"} 3"));
        assert!(text.contains("# TYPE tokio_php_request_duration_seconds histogram"));
        assert!(text.contains("node_memory_MemTotal_bytes"));
        assert_eq!(metrics.total_requests(), 3);
    }

    #[test]
    fn timeouts_count_504s_and_scripts_stopped_without_one() {
        let metrics = Metrics::new();
        let answered_504 = |metrics: &Metrics| {
            metrics.record(
                &Method::GET,
                StatusCode::GATEWAY_TIMEOUT,
                Duration::from_secs(1),
                true,
            )
        };
        answered_504(&metrics);
        let pool = PoolStats {
            workers: 1,
            queue_capacity: 100,
            fatal_errors: 0,
            timeouts: 2,
            spooled_bytes: 0,
            spool_files: 0,
            replaced_workers: 0,
            abandoned: 0,
            busy_workers: 0,
            live_workers: 1,
            queued: 0,
        };
        let text = metrics.render(0, Some(pool), None);
        assert!(
            text.contains("tokio_php_timed_out_requests_total 3"),
            "{text}"
        );
        answered_504(&metrics);
        let text = metrics.render(0, Some(pool), None);
        assert!(text.contains("tokio_php_timed_out_requests_total 4"));
    }
}
