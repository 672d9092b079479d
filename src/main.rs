//! The tokio_php server binary: configuration from the environment, PHP started before the tokio
//! runtime, then the service served until SIGINT/SIGTERM.

use std::process::ExitCode;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use tokio_php::admin::{self, InternalState};
use tokio_php::http::HttpService;
use tokio_php::php::{
    PhpPool, PhpRuntime, PhpRuntimeConfig, PhpService, PhpServiceConfig, PhpStartError,
    PoolMonitor, WorkerConfig, WorkerMatch, WorkerStartError,
};
use tokio_php::server::TlsError;
use tokio_php::server::{self, ServeConfig};
use tokio_php::stack::StackError;
use tokio_php::stack::{self, StackConfig, StackService};
use tokio_php::telemetry::{OtelError, OtelExport};
use tokio_php::{Config, StubService};

// The server's own allocations (requests, responses, buffers): under load glibc's malloc
// (`_int_malloc`, `malloc_consolidate`) took a visible share of the HTTP threads' time, and
// mimalloc serves hello.php 11 % faster with a lower p99 (docs/benchmarks.md). PHP's C code
// keeps the C library's malloc; nothing allocated on one side is freed on the other.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let config = Config::load();
    init_logging(&config);
    match run(&config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error}");
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(config: &Config) {
    // Log lines name the same service as exported spans (OTEL_SERVICE_NAME, `tokio_php` by default).
    if let Err(message) =
        tokio_php::telemetry::log::init(&config.rust_log, &config.otel_service_name)
    {
        eprintln!("error: {message}");
        std::process::exit(2);
    }
}

fn run(config: &Config) -> Result<(), StartError> {
    // Everything that can be checked is checked before PHP starts.
    let serve_config = config.serve()?;
    let stack_config = StackConfig::from_config(config)?;
    if config.use_stub {
        tracing::info!("USE_STUB=1: answering every request with an empty 200, PHP not started");
        let internal = internal_state(config, &stack_config, &serve_config, None);
        let drain_started = Arc::default();
        return serve(
            config,
            serve_config,
            stack_config,
            StubService,
            internal,
            drain_started,
        );
    }
    if !config.use_ext {
        tracing::info!(
            "USE_EXT=0 accepted: tokio_php has one native executor and uses it either way"
        );
    }
    let document_root = stack_config
        .document_root
        .clone()
        .ok_or(StartError::NoDocumentRoot)?;
    let pool_config = config.pool();
    let worker_pool_config = config.worker_pool();
    // Worker mode for every request leaves no request for a classic pool.
    let classic = worker_pool_config.is_none() || config.worker_match != WorkerMatch::All;
    // The stack resolved (and checked) the worker script already, for its routing.
    let worker = stack_config.worker.as_ref().map(|(_, script)| {
        WorkerConfig::for_script(&document_root, script.clone())
            .with_max_requests(config.worker_max_requests)
    });
    let classic_threads = if classic {
        pool_config.effective_workers()
    } else {
        0
    };
    let threads = classic_threads + worker_pool_config.map_or(0, |c| c.effective_workers());

    // PHP first, while this is the only thread: module startup (OPcache preload) may fork.
    let runtime = PhpRuntime::start(PhpRuntimeConfig {
        thread_hint: threads,
        ini: Config::php_ini_overrides(),
        php_ini_path: Some(config.php_ini.clone())
            .filter(|p| !p.is_empty())
            .map(Into::into),
        ignore_php_ini: false,
    })
    .map_err(StartError::Php)?;
    let classic_pool = classic
        .then(|| PhpPool::start(pool_config))
        .transpose()
        .map_err(StartError::Workers)?;
    let worker_pool = match (worker_pool_config, worker) {
        (Some(pool_config), Some(worker)) => {
            Some(PhpPool::start_workers(pool_config, worker).map_err(StartError::WorkerMode)?)
        }
        _ => None,
    };
    let pools: Vec<&PhpPool> = classic_pool.iter().chain(&worker_pool).collect();

    let service_config = PhpServiceConfig {
        body_limits: config.body_limits(),
        ..PhpServiceConfig::new(document_root)
    };
    let php = match (&classic_pool, &worker_pool) {
        (Some(classic), Some(workers)) => PhpService::new(classic, service_config)
            .route_to_workers(config.worker_match.clone(), workers),
        (Some(pool), None) | (None, Some(pool)) => PhpService::new(pool, service_config),
        (None, None) => unreachable!("a classic pool runs unless worker mode takes every request"),
    };
    let monitor = pools
        .iter()
        .map(|pool| pool.monitor())
        .reduce(PoolMonitor::and);
    let internal = internal_state(config, &stack_config, &serve_config, monitor);
    let drain_started = Arc::new(OnceLock::new());
    let served = serve(
        config,
        serve_config,
        stack_config,
        php,
        internal,
        drain_started.clone(),
    );

    // One DRAIN_TIMEOUT_SECS budget for the whole shutdown: the PHP workers get what the
    // connections' drain left of it (a Kubernetes grace period is sized on that one value).
    let drain = Duration::from_secs(config.drain_timeout_secs);
    let remaining = drain_started.get().map_or(drain, |started: &Instant| {
        drain.saturating_sub(started.elapsed())
    });
    if !shutdown_pools(&pools, remaining) {
        tracing::warn!(
            "PHP workers still busy after the drain timeout; exiting without PHP shutdown"
        );
        return served;
    }
    runtime.shutdown();
    served
}

/// Stops every pool within one `budget`; returns whether all their threads stopped.
fn shutdown_pools(pools: &[&PhpPool], budget: Duration) -> bool {
    let deadline = Instant::now() + budget;
    // Every pool is asked, even after one did not stop in time.
    let stopped: Vec<bool> = pools
        .iter()
        .map(|pool| pool.shutdown(deadline.saturating_duration_since(Instant::now())))
        .collect();
    stopped.into_iter().all(|stopped| stopped)
}

fn internal_state(
    config: &Config,
    stack_config: &StackConfig,
    serve_config: &ServeConfig,
    pool: Option<PoolMonitor>,
) -> InternalState {
    InternalState {
        metrics: stack_config.metrics.clone(),
        connections: serve_config.stats.clone(),
        pool,
        config: serde_json::to_value(config).unwrap_or_default(),
    }
}

/// Serves `inner` in the stack (and the internal server, when configured) until SIGTERM/SIGINT
/// and the drain that follows. The internal server keeps answering during the drain (`/health`
/// says `draining`) and stops last; the last spans are flushed before returning. The signal's
/// arrival is recorded in `drain_started`.
fn serve<S, B>(
    config: &Config,
    serve_config: ServeConfig,
    mut stack_config: StackConfig,
    inner: S,
    internal: InternalState,
    drain_started: Arc<OnceLock<Instant>>,
) -> Result<(), StartError>
where
    S: HttpService<Incoming, B>,
    B: http_body::Body<Data = bytes::Bytes> + Default + Send + 'static,
    B::Error: Into<tokio_php::BoxError> + Send + Sync,
{
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(StartError::AsyncRuntime)?;
    // The OTLP exporter's batch task lives on this runtime.
    let otel = {
        let _entered = tokio.enter();
        OtelExport::from_config(
            &config.otel_exporter_otlp_endpoint,
            &config.otel_service_name,
        )?
    };
    stack_config.otel = otel.as_ref().map(OtelExport::tracer);
    let service = stack::build(&stack_config, inner)?;
    let served = tokio.block_on(serve_until_signal(
        config,
        serve_config,
        service,
        internal,
        drain_started,
    ));
    if let Some(otel) = otel {
        otel.shutdown();
    }
    served
}

async fn serve_until_signal(
    config: &Config,
    serve_config: ServeConfig,
    service: StackService<Incoming>,
    internal: InternalState,
    drain_started: Arc<OnceLock<Instant>>,
) -> Result<(), StartError> {
    // Before anything listens: from the first "listening" line on, SIGTERM means drain.
    let shutdown = server::shutdown_signal();
    let listener = server::bind(config.listen_addr)
        .await
        .map_err(|source| StartError::Bind {
            variable: "LISTEN_ADDR",
            addr: config.listen_addr,
            source,
        })?;
    let (stop_internal, internal_stopped) = tokio::sync::oneshot::channel::<()>();
    let internal_task = match config.internal_addr {
        None => None,
        Some(addr) => {
            let listener = server::bind(addr)
                .await
                .map_err(|source| StartError::Bind {
                    variable: "INTERNAL_ADDR",
                    addr,
                    source,
                })?;
            let stopped = async move {
                let _ = internal_stopped.await;
            };
            Some(tokio::spawn(admin::serve_internal(
                listener, internal, stopped,
            )))
        }
    };
    let signal = async move {
        shutdown.await;
        let _ = drain_started.set(Instant::now());
    };
    let served = server::serve(listener, service, serve_config, signal)
        .await
        .map_err(StartError::Serve);
    let _ = stop_internal.send(());
    if let Some(task) = internal_task {
        let _ = task.await;
    }
    served
}

/// Why the server could not start or stopped serving; printed as `error: …` on exit.
#[derive(Debug, thiserror::Error)]
enum StartError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Stack(#[from] StackError),
    #[error("DOCUMENT_ROOT is required")]
    NoDocumentRoot,
    #[error("starting PHP: {0}")]
    Php(PhpStartError),
    #[error("starting PHP workers: {0}")]
    Workers(std::io::Error),
    #[error("{0}")]
    WorkerMode(WorkerStartError),
    #[error("starting the async runtime: {0}")]
    AsyncRuntime(std::io::Error),
    #[error(transparent)]
    Otel(#[from] OtelError),
    #[error("{variable}={addr}: {source}")]
    Bind {
        variable: &'static str,
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("serving: {0}")]
    Serve(std::io::Error),
}
