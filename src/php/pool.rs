//! The PHP worker pool: `workers` OS threads, each with its own ZTS context, pulling jobs from one
//! bounded queue in which only requests whose client still waits count. A classic pool runs each
//! job's script; a worker-mode pool runs one worker script per thread, which takes the jobs
//! itself ([`worker`](super::worker)).

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::request::PhpRequest;
use super::response::{Exchange, OutputSettings, ResponseStart, ScriptCounters};
use super::thread::{execute, Executed, ThreadHandle};
use super::worker::{self, BootReporter, WorkerConfig, WorkerCounters, WorkerStartError};
use crate::http::{Deadline, DiskBudget, RequestBody, Script, SpoolLimits};
use crate::telemetry::{PoolStats, WorkerStats};

/// PHP threads need far more stack than Rust's 2 MiB default (deep recursion, the compiler).
const WORKER_STACK_SIZE: usize = 16 * 1024 * 1024;

/// Sizing of a [`PhpPool`].
#[derive(Debug, Clone, Copy)]
pub struct PoolConfig {
    /// Worker threads; 0 = available parallelism.
    pub workers: usize,
    /// Requests that may wait for a worker; 0 = workers × 100. Beyond it requests get 503.
    pub queue_capacity: usize,
    /// Output is sent to the client in chunks of about this size.
    pub chunk_size: usize,
    /// Output a response holds in memory for a client that reads slower than the script writes;
    /// past it, output goes to a temporary file.
    pub output_buffer_limit: usize,
    /// Temporary-file bytes all responses together may hold for their clients (0: none; a
    /// script whose client is `output_buffer_limit` behind then waits for it).
    pub output_spool_limit: u64,
    /// A client that accepts no output for this long while output waits for it is given up.
    pub write_timeout: Duration,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            workers: 0,
            queue_capacity: 0,
            chunk_size: 16 * 1024,
            output_buffer_limit: 256 * 1024,
            output_spool_limit: 1 << 30,
            write_timeout: Duration::from_secs(60),
        }
    }
}

impl PoolConfig {
    /// The number of workers after resolving 0.
    pub fn effective_workers(&self) -> usize {
        if self.workers > 0 {
            self.workers
        } else {
            thread::available_parallelism().map_or(1, |n| n.get())
        }
    }

    /// The queue capacity after resolving 0.
    pub fn effective_queue_capacity(&self) -> usize {
        if self.queue_capacity > 0 {
            self.queue_capacity
        } else {
            self.effective_workers() * 100
        }
    }
}

/// One request waiting for, or running on, a worker.
pub(crate) struct Job {
    pub(crate) request: PhpRequest,
    pub(crate) reply: oneshot::Sender<ResponseStart>,
    pub(crate) queued_at: Instant,
    /// The request's tracing span: the worker runs inside it, so PHP's log lines carry its ids.
    pub(crate) span: tracing::Span,
    /// The request's timeout, if any: interrupts the script when it passes.
    pub(crate) deadline: Option<Deadline>,
    /// Time spent preparing the request before it was queued.
    pub(crate) parse_time: Duration,
    /// The tokio runtime serving the request, for tasks its response needs.
    pub(crate) runtime: Option<tokio::runtime::Handle>,
}

impl Job {
    /// The client left, or the request timed out, while it waited: nobody wants the answer.
    pub(super) fn is_abandoned(&self) -> bool {
        self.reply.is_closed() || self.deadline.as_ref().is_some_and(Deadline::is_expired)
    }
}

/// Why a job was not queued.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Rejected {
    /// Every worker is busy and the queue is full.
    QueueFull,
    /// The pool is shut down.
    Closed,
}

/// The jobs waiting for a worker. A job whose client gave up keeps no slot: when the queue looks
/// full, abandoned jobs are dropped before a new one is refused.
pub(super) struct JobQueue {
    state: Mutex<QueueState>,
    job_added: Condvar,
    /// Wakes threads waiting for the queue to close (not for jobs: see `wait_closed`).
    closing: Condvar,
    capacity: usize,
    /// Jobs dropped unrun because nobody waited for them any more, since start.
    abandoned: AtomicU64,
}

struct QueueState {
    jobs: VecDeque<Job>,
    /// No new jobs; workers finish what is queued, then exit.
    closed: bool,
}

impl JobQueue {
    fn new(capacity: usize) -> Self {
        JobQueue {
            state: Mutex::new(QueueState {
                jobs: VecDeque::with_capacity(capacity),
                closed: false,
            }),
            job_added: Condvar::new(),
            closing: Condvar::new(),
            capacity,
            abandoned: AtomicU64::new(0),
        }
    }

    fn push(&self, job: Job) -> Result<(), Rejected> {
        let mut state = lock(&self.state);
        if state.closed {
            return Err(Rejected::Closed);
        }
        let mut abandoned = VecDeque::new();
        if state.jobs.len() >= self.capacity {
            let (live, gone) = std::mem::take(&mut state.jobs)
                .into_iter()
                .partition(|job| !job.is_abandoned());
            state.jobs = live;
            abandoned = gone;
        }
        let queued = state.jobs.len() < self.capacity;
        if queued {
            state.jobs.push_back(job);
        }
        drop(state);
        self.count_abandoned(abandoned.len());
        drop(abandoned); // their request bodies are freed outside the lock
        if !queued {
            return Err(Rejected::QueueFull);
        }
        self.job_added.notify_one();
        Ok(())
    }

    pub(super) fn count_abandoned(&self, jobs: usize) {
        if jobs > 0 {
            self.abandoned.fetch_add(jobs as u64, Ordering::Relaxed);
        }
    }

    /// The next job, waiting for one; `None` once the queue is closed and empty.
    pub(super) fn pop(&self) -> Option<Job> {
        let mut state = lock(&self.state);
        loop {
            if let Some(job) = state.jobs.pop_front() {
                return Some(job);
            }
            if state.closed {
                return None;
            }
            state = self
                .job_added
                .wait(state)
                .unwrap_or_else(|e| e.into_inner());
        }
    }

    fn close(&self) {
        lock(&self.state).closed = true;
        self.job_added.notify_all();
        self.closing.notify_all();
    }

    pub(super) fn is_closed(&self) -> bool {
        lock(&self.state).closed
    }

    /// Waits up to `timeout` for the queue to close; returns whether it did.
    pub(super) fn wait_closed(&self, timeout: Duration) -> bool {
        let state = lock(&self.state);
        let (state, _) = self
            .closing
            .wait_timeout_while(state, timeout, |state| !state.closed)
            .unwrap_or_else(|e| e.into_inner());
        state.closed
    }

    fn len(&self) -> usize {
        lock(&self.state).jobs.len()
    }
}

pub(super) struct Shared {
    pub(super) queue: JobQueue,
    pub(super) output: OutputSettings,
    pub(super) busy: AtomicUsize,
    live: Mutex<usize>,
    all_stopped: Condvar,
    pub(super) counters: Arc<ScriptCounters>,
    replaced_workers: AtomicU64,
    workers: usize,
    /// Worker mode: the script each thread runs, and what its runs count.
    pub(super) worker: Option<(WorkerConfig, WorkerCounters)>,
}

/// The submitting side, shared by every clone of the service.
#[derive(Clone)]
pub(crate) struct Submitter {
    shared: Arc<Shared>,
}

impl fmt::Debug for Submitter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Submitter")
            .field("queued", &self.shared.queue.len())
            .finish()
    }
}

impl Submitter {
    pub(crate) fn try_submit(&self, job: Job) -> Result<(), Rejected> {
        self.shared.queue.push(job)
    }

    pub(crate) fn stats(&self) -> PoolStats {
        PoolStats {
            workers: self.shared.workers,
            busy_workers: self.shared.busy.load(Ordering::Relaxed),
            live_workers: *lock(&self.shared.live),
            queued: self.shared.queue.len(),
            queue_capacity: self.shared.queue.capacity,
            fatal_errors: self.shared.counters.fatal_errors.load(Ordering::Relaxed),
            timeouts: self.shared.counters.timeouts.load(Ordering::Relaxed),
            spooled_bytes: self.shared.output.spool.disk.used(),
            spool_files: self.shared.output.spool.disk.files(),
            replaced_workers: self.shared.replaced_workers.load(Ordering::Relaxed),
            abandoned: self.shared.queue.abandoned.load(Ordering::Relaxed),
        }
    }

    fn worker_stats(&self) -> Option<WorkerStats> {
        self.shared
            .worker
            .as_ref()
            .map(|(_, counters)| counters.stats())
    }

    /// In worker mode, the script every request submitted here runs.
    pub(crate) fn worker_script(&self) -> Option<&Script> {
        self.shared
            .worker
            .as_ref()
            .map(|(config, _)| &config.script)
    }
}

/// A cloneable view of the load of one pool or several (a classic pool and a worker pool), for
/// health checks and metrics.
#[derive(Clone, Debug)]
pub struct PoolMonitor {
    pools: Vec<Submitter>,
}

impl PoolMonitor {
    /// Current load, summed over the pools.
    pub fn stats(&self) -> PoolStats {
        self.pools
            .iter()
            .map(Submitter::stats)
            .reduce(PoolStats::sum)
            .unwrap_or_default()
    }

    /// What the worker-mode pool among them counts, if there is one.
    pub fn worker_stats(&self) -> Option<WorkerStats> {
        self.pools.iter().find_map(Submitter::worker_stats)
    }

    /// One view of both pools.
    pub fn and(mut self, other: PoolMonitor) -> PoolMonitor {
        self.pools.extend(other.pools);
        self
    }
}

/// The pool of PHP worker threads. Dropping it (or [`PhpPool::shutdown`]) stops the workers once
/// the queued requests are done.
pub struct PhpPool {
    submitter: Submitter,
    workers: usize,
    queue_capacity: usize,
}

impl fmt::Debug for PhpPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PhpPool")
            .field("workers", &self.workers)
            .field("queue_capacity", &self.queue_capacity)
            .finish()
    }
}

impl PhpPool {
    /// Starts the worker threads. PHP must be started ([`PhpRuntime::start`](super::PhpRuntime)).
    pub fn start(config: PoolConfig) -> io::Result<PhpPool> {
        let pool = PhpPool::new(config, None);
        for id in 0..pool.workers {
            spawn_worker(id, pool.submitter.shared.clone(), None)?;
        }
        tracing::info!(
            workers = pool.workers,
            queue_capacity = pool.queue_capacity,
            "PHP worker pool started"
        );
        Ok(pool)
    }

    /// Starts the worker threads in worker mode: each runs `worker`'s script, which boots the
    /// application once and serves requests through `tokio_handle_request()`
    /// (docs/worker-mode.md). Returns once every thread's script booted; if one fails to, the
    /// pool stops and the error says why. PHP must be started first.
    ///
    /// ```no_run
    /// use tokio_php::http::{DocumentRoot, WorkerMatch};
    /// use tokio_php::php::{PhpPool, PhpRuntime, PhpRuntimeConfig, PhpService, PhpServiceConfig, PoolConfig, WorkerConfig};
    ///
    /// let runtime = PhpRuntime::start(PhpRuntimeConfig::default())?;
    /// let root = DocumentRoot::new("public")?;
    /// let worker = WorkerConfig::new(&root, "worker.php")?.with_max_requests(1000);
    /// let workers = PhpPool::start_workers(PoolConfig::default(), worker)?;
    /// let classic = PhpPool::start(PoolConfig::default())?;
    /// // `/api/…` runs the worker script; everything else runs as classic scripts.
    /// let service = PhpService::new(&classic, PhpServiceConfig::new(root))
    ///     .route_to_workers(WorkerMatch::Prefix("/api".into()), &workers);
    /// # drop(service);
    /// # workers.shutdown(std::time::Duration::from_secs(5));
    /// # classic.shutdown(std::time::Duration::from_secs(5));
    /// # runtime.shutdown();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn start_workers(
        config: PoolConfig,
        worker: WorkerConfig,
    ) -> Result<PhpPool, WorkerStartError> {
        let script = worker.script.filename.clone();
        let pool = PhpPool::new(config, Some(worker));
        let (reporter, boots) = BootReporter::channel(&script);
        for id in 0..pool.workers {
            spawn_worker(id, pool.submitter.shared.clone(), Some(reporter.clone()))?;
        }
        drop(reporter);
        if let Err(error) = boots.wait(pool.workers) {
            pool.shutdown(Duration::from_secs(30));
            return Err(error);
        }
        tracing::info!(
            workers = pool.workers,
            queue_capacity = pool.queue_capacity,
            script = %script.display(),
            max_requests = pool.submitter.shared.worker.as_ref().map_or(0, |(w, _)| w.max_requests),
            "PHP worker pool started in worker mode"
        );
        Ok(pool)
    }

    fn new(config: PoolConfig, worker: Option<WorkerConfig>) -> PhpPool {
        let workers = config.effective_workers();
        let queue_capacity = config.effective_queue_capacity();
        let shared = Arc::new(Shared {
            queue: JobQueue::new(queue_capacity),
            output: OutputSettings {
                chunk_size: config.chunk_size.max(1),
                spool: SpoolLimits {
                    memory: config.output_buffer_limit.max(1),
                    disk: Arc::new(DiskBudget::new(config.output_spool_limit)),
                    write_timeout: config.write_timeout,
                },
            },
            busy: AtomicUsize::new(0),
            live: Mutex::new(0),
            all_stopped: Condvar::new(),
            counters: Arc::default(),
            replaced_workers: AtomicU64::new(0),
            workers,
            worker: worker.map(|worker| (worker, WorkerCounters::new(workers))),
        });
        PhpPool {
            submitter: Submitter { shared },
            workers,
            queue_capacity,
        }
    }

    /// The number of worker threads.
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// The queue capacity.
    pub fn queue_capacity(&self) -> usize {
        self.queue_capacity
    }

    /// Current load.
    pub fn stats(&self) -> PoolStats {
        self.submitter.stats()
    }

    /// A handle that reports this pool's load (for health checks and metrics).
    pub fn monitor(&self) -> PoolMonitor {
        PoolMonitor {
            pools: vec![self.submitter.clone()],
        }
    }

    pub(crate) fn submitter(&self) -> Submitter {
        self.submitter.clone()
    }

    /// Lets the workers finish the queued requests, then stops them and waits (up to `timeout`)
    /// for every thread to exit. Returns whether all did. Requests submitted afterwards are
    /// refused.
    pub fn shutdown(&self, timeout: Duration) -> bool {
        self.submitter.shared.queue.close();
        let live = lock(&self.submitter.shared.live);
        let (live, result) = self
            .submitter
            .shared
            .all_stopped
            .wait_timeout_while(live, timeout, |live| *live > 0)
            .unwrap_or_else(|e| e.into_inner());
        drop(live);
        !result.timed_out()
    }
}

impl Drop for PhpPool {
    fn drop(&mut self) {
        self.submitter.shared.queue.close();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Starts worker thread `id`; in worker mode, `boot` learns whether its script booted.
fn spawn_worker(id: usize, shared: Arc<Shared>, boot: Option<BootReporter>) -> io::Result<()> {
    *lock(&shared.live) += 1;
    let spawned = thread::Builder::new()
        .name(format!("php-worker-{id}"))
        .stack_size(WORKER_STACK_SIZE)
        .spawn({
            let shared = shared.clone();
            move || worker_main(id, shared, boot)
        });
    if spawned.is_err() {
        worker_exited(&shared);
    }
    spawned.map(drop)
}

fn worker_exited(shared: &Shared) {
    let mut live = lock(&shared.live);
    *live -= 1;
    if *live == 0 {
        shared.all_stopped.notify_all();
    }
}

/// Whether the worker thread may take another job.
pub(super) enum ThreadState {
    Healthy,
    /// PHP's state on this thread is suspect (a bailout escaped request shutdown).
    Unusable,
}

fn worker_main(id: usize, shared: Arc<Shared>, boot: Option<BootReporter>) {
    let Some(handle) = ThreadHandle::start(id, shared.workers, shared.queue.capacity) else {
        tracing::error!(worker = id, "out of memory starting a PHP worker");
        if let Some(boot) = boot {
            boot.failed(id, "out of memory starting a PHP worker".into());
        }
        worker_exited(&shared);
        return;
    };
    let handle = Arc::new(handle);
    let state = match &shared.worker {
        Some((config, _)) => worker::serve(id, &shared, &handle, config, boot),
        None => serve_jobs(&shared, &handle),
    };
    handle.stop();
    drop(handle);

    let stopping = shared.queue.is_closed();
    if matches!(state, ThreadState::Unusable) && !stopping {
        tracing::warn!(
            worker = id,
            "PHP worker thread retired after an unrecoverable error; starting a fresh one"
        );
        match spawn_worker(id, shared.clone(), None) {
            Ok(()) => {
                shared.replaced_workers.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                tracing::error!(worker = id, error = %e, "could not start a replacement PHP worker");
            }
        }
    }
    worker_exited(&shared);
}

/// Classic mode: one script run per request, until the pool stops or PHP's state on this thread
/// is suspect.
fn serve_jobs(shared: &Shared, handle: &Arc<ThreadHandle>) -> ThreadState {
    let mut state = ThreadState::Healthy;
    let mut request_seq = 0u64;
    while let Some(job) = shared.queue.pop() {
        if job.is_abandoned() {
            shared.queue.count_abandoned(1);
            continue;
        }
        request_seq += 1;
        shared.busy.fetch_add(1, Ordering::Relaxed);
        state = run_job(job, shared, handle, request_seq);
        shared.busy.fetch_sub(1, Ordering::Relaxed);
        if matches!(state, ThreadState::Unusable) {
            break;
        }
    }
    state
}

/// A job taken by a worker thread: its request, and the exchange PHP's callbacks talk to.
pub(super) struct Started {
    pub(super) request: PhpRequest,
    pub(super) exchange: Exchange,
    pub(super) deadline: Option<Deadline>,
    /// The request's span, entered on the worker thread until the request is done.
    pub(super) span: tracing::span::EnteredSpan,
}

impl Job {
    /// Takes the job up on this worker thread as request `request_seq`: enters its span, lets its
    /// deadline interrupt the script, and builds the exchange.
    pub(super) fn start(
        self,
        shared: &Shared,
        thread: &Arc<ThreadHandle>,
        request_seq: u64,
    ) -> Started {
        let Job {
            mut request,
            reply,
            queued_at,
            span,
            deadline,
            parse_time,
            runtime,
        } = self;
        let span = span.entered();
        let queue_time = queued_at.elapsed();
        if let Some(deadline) = &deadline {
            let thread = thread.clone();
            deadline.on_expire(move || {
                if thread.interrupt(request_seq) {
                    tracing::warn!("interrupted a PHP script that outlived its request timeout");
                }
            });
        }
        let body = std::mem::replace(&mut request.body, RequestBody::empty());
        let exchange = Exchange::new(body, reply, shared.output.clone())
            .with_runtime(runtime)
            .with_counters(shared.counters.clone())
            .with_deadline(deadline.clone())
            .with_timings(parse_time, queue_time);
        Started {
            request,
            exchange,
            deadline,
            span,
        }
    }
}

impl Started {
    /// Ends the exchange once PHP is done with the request: the response as PHP left it, or
    /// (after a C stack overflow, when what PHP left is not trustworthy) a `500` unless output
    /// already left.
    pub(super) fn complete(exchange: Exchange, deadline: Option<&Deadline>, overflowed: bool) {
        if let Some(deadline) = deadline {
            deadline.clear_on_expire();
        }
        if overflowed {
            tracing::warn!("PHP overflowed its C stack; answering 500");
            exchange.abandon();
        } else {
            exchange.finish();
        }
    }
}

fn run_job(job: Job, shared: &Shared, thread: &Arc<ThreadHandle>, request_seq: u64) -> ThreadState {
    let Started {
        mut request,
        mut exchange,
        deadline,
        span,
    } = job.start(shared, thread, request_seq);
    let Executed {
        thread_usable,
        overflowed,
    } = execute(&mut request, &mut exchange, request_seq);
    Started::complete(exchange, deadline.as_ref(), overflowed);
    drop(span);
    // An overflow alone does not retire the thread, any more than another fatal error does: on
    // PHP 8.2 with the JIT, a thread that exits leaves the JIT code it compiled pointing at its
    // freed copies of PHP's internal functions (docs/php.md, "Stack overflow in PHP").
    if thread_usable {
        ThreadState::Healthy
    } else {
        ThreadState::Unusable
    }
}
