//! The PHP worker pool: `workers` OS threads, each with its own ZTS context, pulling jobs from one
//! bounded queue in which only requests whose client still waits count.

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
use crate::http::{Deadline, DiskBudget, RequestBody, SpoolLimits};
use crate::telemetry::PoolStats;

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
    fn is_abandoned(&self) -> bool {
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
struct JobQueue {
    state: Mutex<QueueState>,
    job_added: Condvar,
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

    fn count_abandoned(&self, jobs: usize) {
        if jobs > 0 {
            self.abandoned.fetch_add(jobs as u64, Ordering::Relaxed);
        }
    }

    /// The next job, waiting for one; `None` once the queue is closed and empty.
    fn pop(&self) -> Option<Job> {
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
    }

    fn is_closed(&self) -> bool {
        lock(&self.state).closed
    }

    fn len(&self) -> usize {
        lock(&self.state).jobs.len()
    }
}

struct Shared {
    queue: JobQueue,
    output: OutputSettings,
    busy: AtomicUsize,
    live: Mutex<usize>,
    all_stopped: Condvar,
    counters: Arc<ScriptCounters>,
    replaced_workers: AtomicU64,
    workers: usize,
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
}

/// A cloneable view of a pool's load, for health checks and metrics.
#[derive(Clone, Debug)]
pub struct PoolMonitor {
    submitter: Submitter,
}

impl PoolMonitor {
    /// Current load.
    pub fn stats(&self) -> PoolStats {
        self.submitter.stats()
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
        });
        for id in 0..workers {
            spawn_worker(id, shared.clone())?;
        }
        tracing::info!(workers, queue_capacity, "PHP worker pool started");
        Ok(PhpPool {
            submitter: Submitter { shared },
            workers,
            queue_capacity,
        })
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
            submitter: self.submitter.clone(),
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

fn spawn_worker(id: usize, shared: Arc<Shared>) -> io::Result<()> {
    *lock(&shared.live) += 1;
    let spawned = thread::Builder::new()
        .name(format!("php-worker-{id}"))
        .stack_size(WORKER_STACK_SIZE)
        .spawn({
            let shared = shared.clone();
            move || worker_main(id, shared)
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
enum ThreadState {
    Healthy,
    /// PHP's state on this thread is suspect (a bailout escaped request shutdown).
    Unusable,
}

fn worker_main(id: usize, shared: Arc<Shared>) {
    let Some(handle) = ThreadHandle::start(id, shared.workers, shared.queue.capacity) else {
        tracing::error!(worker = id, "out of memory starting a PHP worker");
        worker_exited(&shared);
        return;
    };
    let handle = Arc::new(handle);
    let mut state = ThreadState::Healthy;
    let mut request_seq = 0u64;
    while let Some(job) = shared.queue.pop() {
        if job.is_abandoned() {
            shared.queue.count_abandoned(1);
            continue;
        }
        request_seq += 1;
        shared.busy.fetch_add(1, Ordering::Relaxed);
        state = run_job(job, &shared, &handle, request_seq);
        shared.busy.fetch_sub(1, Ordering::Relaxed);
        if matches!(state, ThreadState::Unusable) {
            break;
        }
    }
    handle.stop();
    drop(handle);

    let stopping = shared.queue.is_closed();
    if matches!(state, ThreadState::Unusable) && !stopping {
        tracing::warn!(
            worker = id,
            "PHP worker thread retired after an unrecoverable error; starting a fresh one"
        );
        match spawn_worker(id, shared.clone()) {
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

fn run_job(job: Job, shared: &Shared, thread: &Arc<ThreadHandle>, request_seq: u64) -> ThreadState {
    let Job {
        mut request,
        reply,
        queued_at,
        span,
        deadline,
        parse_time,
        runtime,
    } = job;
    let _entered = span.enter();
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
    let mut exchange = Exchange::new(body, reply, shared.output.clone())
        .with_runtime(runtime)
        .with_counters(shared.counters.clone())
        .with_deadline(deadline.clone())
        .with_timings(parse_time, queue_time);
    let Executed {
        thread_usable,
        overflowed,
    } = execute(&mut request, &mut exchange, request_seq);
    if let Some(deadline) = &deadline {
        deadline.clear_on_expire();
    }
    if overflowed {
        tracing::warn!("PHP overflowed its C stack; answering 500");
        exchange.abandon();
    } else {
        exchange.finish();
    }
    // An overflow alone does not retire the thread, any more than another fatal error does: on
    // PHP 8.2 with the JIT, a thread that exits leaves the JIT code it compiled pointing at its
    // freed copies of PHP's internal functions (docs/php.md, "Stack overflow in PHP").
    if thread_usable {
        ThreadState::Healthy
    } else {
        ThreadState::Unusable
    }
}
