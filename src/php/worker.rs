//! Worker mode: each thread of a pool runs one long-lived worker script, which boots the
//! application once and serves request after request through `tokio_handle_request()`
//! (docs/worker-mode.md).
//!
//! [`serve`] runs the script on its thread again and again: after `WORKER_MAX_REQUESTS`
//! requests, and after a fault (a fatal error, an uncaught exception, `exit()`, `memory_limit`,
//! a timeout) ended it. Faults that repeat without a request served in between back off. A
//! script that fails before its first `tokio_handle_request()` while the pool starts stops the
//! start with its error.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use super::ffi;
use super::pool::{Job, Shared, Started, ThreadState};
use super::request::{PhpRequest, ServerIdentity};
use super::thread::{run_worker, LentRequest, ThreadHandle, WorkerEnded};
use crate::http::{Deadline, DocumentRoot, Script, SERVER_SOFTWARE};
use crate::telemetry::{RestartReason, WorkerStats};

/// The first restart after a failure is immediate; each further failure without a request
/// served in between doubles the wait, from this …
const BACKOFF_START: Duration = Duration::from_millis(100);
/// … up to this.
const BACKOFF_LIMIT: Duration = Duration::from_secs(5);

/// The script a worker-mode [`PhpPool`](super::PhpPool) runs on each of its threads
/// ([`PhpPool::start_workers`](super::PhpPool::start_workers)).
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// The worker script: `SCRIPT_FILENAME` and `SCRIPT_NAME` of every request it serves.
    pub script: Script,
    /// `DOCUMENT_ROOT` in the script's own `$_SERVER` while it boots.
    pub document_root: PathBuf,
    /// `SERVER_SOFTWARE` in the script's own `$_SERVER` while it boots.
    pub server_software: String,
    /// Requests one run of the script serves before it is started afresh (0: no limit). Bounds
    /// what an application leaks from request to request.
    pub max_requests: u64,
}

impl WorkerConfig {
    /// The worker script at `path`, absolute or relative to `document_root`
    /// ([`DocumentRoot::worker_script`]).
    pub fn new(document_root: &DocumentRoot, path: impl AsRef<Path>) -> io::Result<WorkerConfig> {
        Ok(WorkerConfig::for_script(
            document_root,
            document_root.worker_script(path)?,
        ))
    }

    /// A worker script already resolved under `document_root`.
    pub fn for_script(document_root: &DocumentRoot, script: Script) -> WorkerConfig {
        WorkerConfig {
            script,
            document_root: document_root.path().to_path_buf(),
            server_software: SERVER_SOFTWARE.to_string(),
            max_requests: 0,
        }
    }

    /// The same, with a request limit per run of the script (0: none).
    pub fn with_max_requests(mut self, max_requests: u64) -> Self {
        self.max_requests = max_requests;
        self
    }
}

/// Why a worker pool did not start.
#[derive(Debug, thiserror::Error)]
pub enum WorkerStartError {
    /// A worker thread could not be started.
    #[error("starting PHP worker threads: {0}")]
    Spawn(#[from] io::Error),
    /// A worker script failed before its first `tokio_handle_request()`.
    #[error("the worker script {script} failed while booting (worker {worker}): {message}")]
    Boot {
        /// The worker script.
        script: PathBuf,
        /// The worker thread it ran on.
        worker: usize,
        /// PHP's error, or what went wrong.
        message: String,
    },
}

/// Tells the starting pool whether each thread's first run of the script booted.
#[derive(Clone)]
pub(super) struct BootReporter {
    sender: mpsc::Sender<Result<(), (usize, String)>>,
}

/// The starting pool's end of the [`BootReporter`]s.
pub(super) struct BootResults {
    receiver: mpsc::Receiver<Result<(), (usize, String)>>,
    script: PathBuf,
}

impl BootReporter {
    pub(super) fn channel(script: &Path) -> (BootReporter, BootResults) {
        let (sender, receiver) = mpsc::channel();
        let results = BootResults {
            receiver,
            script: script.to_path_buf(),
        };
        (BootReporter { sender }, results)
    }

    fn booted(self) {
        let _ = self.sender.send(Ok(()));
    }

    pub(super) fn failed(self, worker: usize, message: String) {
        let _ = self.sender.send(Err((worker, message)));
    }
}

impl BootResults {
    /// Waits until `workers` threads booted, or one failed.
    pub(super) fn wait(self, workers: usize) -> Result<(), WorkerStartError> {
        for _ in 0..workers {
            match self.receiver.recv() {
                Ok(Ok(())) => {}
                Ok(Err((worker, message))) => {
                    return Err(WorkerStartError::Boot {
                        script: self.script,
                        worker,
                        message,
                    })
                }
                Err(mpsc::RecvError) => {
                    return Err(WorkerStartError::Boot {
                        script: self.script,
                        worker: 0,
                        message: "a worker thread stopped without booting".into(),
                    })
                }
            }
        }
        Ok(())
    }
}

/// What a worker pool counts, shared by its threads.
pub(super) struct WorkerCounters {
    restarts: [AtomicU64; RestartReason::ALL.len()],
    requests: Vec<AtomicU64>,
    script_requests: Vec<AtomicU64>,
}

impl WorkerCounters {
    pub(super) fn new(workers: usize) -> Self {
        WorkerCounters {
            restarts: Default::default(),
            requests: (0..workers).map(|_| AtomicU64::new(0)).collect(),
            script_requests: (0..workers).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    pub(super) fn stats(&self) -> WorkerStats {
        let load =
            |counters: &[AtomicU64]| counters.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        WorkerStats {
            restarts: RestartReason::ALL
                .iter()
                .zip(&self.restarts)
                .map(|(reason, count)| (*reason, count.load(Ordering::Relaxed)))
                .collect(),
            requests: load(&self.requests),
            script_requests: load(&self.script_requests),
        }
    }

    fn restarted(&self, reason: RestartReason) {
        if let Some(i) = RestartReason::ALL.iter().position(|r| *r == reason) {
            self.restarts[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    fn served(&self, worker: usize, by_this_run: u64) {
        if let Some(count) = self.requests.get(worker) {
            count.fetch_add(1, Ordering::Relaxed);
        }
        self.set_script_requests(worker, by_this_run);
    }

    fn set_script_requests(&self, worker: usize, count: u64) {
        if let Some(counter) = self.script_requests.get(worker) {
            counter.store(count, Ordering::Relaxed);
        }
    }
}

/// Runs `config`'s script on worker thread `id` until the pool stops (or PHP's state on the
/// thread is suspect). `boot`, while the pool starts, learns whether the first run booted.
pub(super) fn serve(
    id: usize,
    shared: &Arc<Shared>,
    thread: &Arc<ThreadHandle>,
    config: &WorkerConfig,
    mut boot: Option<BootReporter>,
) -> ThreadState {
    let identity = ServerIdentity {
        software: config.server_software.clone(),
        document_root: config.document_root.to_string_lossy().into_owned(),
    };
    let Ok(mut script) = PhpRequest::for_worker_script(&config.script, &identity) else {
        let message = "the worker script's path contains a NUL byte".to_string();
        tracing::error!(worker = id, "{message}");
        if let Some(boot) = boot {
            boot.failed(id, message);
        }
        return ThreadState::Healthy;
    };
    let mut request_seq = 0;
    let mut failures = 0u32;
    loop {
        let mut run = WorkerRun::new(id, shared.clone(), thread.clone(), config, request_seq);
        run.boot = boot.take();
        let ended = run_worker(&mut script, &mut run);
        run.fail_request_in_flight(ended.overflowed);
        request_seq = run.request_seq;
        boot = run.boot.take();
        if !ended.thread_usable {
            if let Some(boot) = boot.take() {
                let message = report_message(&ended.report, RestartReason::BootFailed);
                boot.failed(id, format!("PHP's state on the thread broke: {message}"));
            }
            return ThreadState::Unusable;
        }
        let Some(reason) = restart_reason(&ended, &run) else {
            return ThreadState::Healthy; // the pool stops
        };
        let message = report_message(&ended.report, reason);
        if let Some(boot) = boot.take() {
            tracing::error!(worker = id, reason = %reason, "worker script failed while booting: {message}");
            boot.failed(id, message);
            return ThreadState::Healthy;
        }
        if shared.queue.is_closed() {
            return ThreadState::Healthy;
        }
        if run.completed > 0 {
            failures = 0;
        }
        if reason.is_failure() {
            failures += 1;
        }
        let wait = backoff(failures);
        log_restart(id, reason, &message, run.handed_out, wait);
        if let Some((_, counters)) = &shared.worker {
            counters.restarted(reason);
            counters.set_script_requests(id, 0);
        }
        if !wait.is_zero() && shared.queue.wait_closed(wait) {
            return ThreadState::Healthy;
        }
    }
}

/// How long to wait before the next run after `failures` failures in a row.
fn backoff(failures: u32) -> Duration {
    match failures {
        0 | 1 => Duration::ZERO,
        n => BACKOFF_START
            .saturating_mul(1 << (n - 2).min(16))
            .min(BACKOFF_LIMIT),
    }
}

fn log_restart(worker: usize, reason: RestartReason, message: &str, requests: u64, wait: Duration) {
    let wait_ms = wait.as_millis() as u64;
    if reason.is_failure() {
        tracing::error!(worker, reason = %reason, requests, wait_ms, "restarting the worker script: {message}");
    } else {
        tracing::info!(worker, reason = %reason, requests, "restarting the worker script: {message}");
    }
}

/// Why the script that just ended is started again; `None` when it ended because the pool stops.
fn restart_reason(ended: &WorkerEnded, run: &WorkerRun) -> Option<RestartReason> {
    use ffi::tp_worker_end::*;
    let report = &ended.report;
    let reason = match report.end {
        TP_WORKER_END_STOPPED => match run.stop {
            Some(Stop::MaxRequests) => RestartReason::MaxRequests,
            Some(Stop::PoolClosed) => return None,
            // next_request failed (a panic, logged) and told the script to end.
            None => RestartReason::ScriptEnded,
        },
        TP_WORKER_END_RETURNED => RestartReason::ScriptEnded,
        TP_WORKER_END_FATAL_ERROR if ended.overflowed => RestartReason::StackOverflow,
        TP_WORKER_END_FATAL_ERROR => RestartReason::FatalError,
        TP_WORKER_END_MEMORY_LIMIT => RestartReason::MemoryLimit,
        TP_WORKER_END_EXCEPTION => RestartReason::Exception,
        TP_WORKER_END_EXIT => RestartReason::Exit,
        TP_WORKER_END_TIMED_OUT => RestartReason::Timeout,
    };
    if !report.booted {
        return Some(RestartReason::BootFailed);
    }
    Some(reason)
}

/// What the log line and a start error say about the script's end.
fn report_message(report: &ffi::tp_worker_report, reason: RestartReason) -> String {
    let message: Vec<u8> = report
        .message
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    if !message.is_empty() {
        return String::from_utf8_lossy(&message).into_owned();
    }
    match (reason, report.booted) {
        (RestartReason::MaxRequests, _) => "it served WORKER_MAX_REQUESTS requests".into(),
        (_, false) => "it ended before calling tokio_handle_request()".into(),
        _ => "it ended without tokio_handle_request() returning false".into(),
    }
}

/// Why `next_request` told the script to stop.
#[derive(Debug, Clone, Copy)]
enum Stop {
    MaxRequests,
    PoolClosed,
}

/// One run of the worker script, as its `tokio_handle_request()` calls see the host: the C
/// shim's `next_request` and `request_done` callbacks land here.
pub(super) struct WorkerRun {
    worker: usize,
    shared: Arc<Shared>,
    thread: Arc<ThreadHandle>,
    max_requests: u64,
    /// The thread's request counter, for interrupts: never reused on the thread.
    request_seq: u64,
    /// Requests handed to the script, and those it finished without ending.
    handed_out: u64,
    completed: u64,
    stop: Option<Stop>,
    boot: Option<BootReporter>,
    in_flight: Option<InFlight>,
}

/// The request the script is handling.
struct InFlight {
    lent: LentRequest,
    deadline: Option<Deadline>,
    _span: tracing::span::EnteredSpan,
}

impl WorkerRun {
    fn new(
        worker: usize,
        shared: Arc<Shared>,
        thread: Arc<ThreadHandle>,
        config: &WorkerConfig,
        request_seq: u64,
    ) -> Self {
        WorkerRun {
            worker,
            shared,
            thread,
            max_requests: config.max_requests,
            request_seq,
            handed_out: 0,
            completed: 0,
            stop: None,
            boot: None,
            in_flight: None,
        }
    }

    /// `tokio_handle_request()` wants a request: the script has booted. Blocks until a job
    /// comes; null when the script should end.
    pub(super) fn next_request(&mut self) -> *const ffi::tp_request {
        if let Some(boot) = self.boot.take() {
            boot.booted();
        }
        // The shim reports every request done before asking for the next one.
        self.request_done();
        if self.max_requests > 0 && self.handed_out >= self.max_requests {
            self.stop = Some(Stop::MaxRequests);
            return std::ptr::null();
        }
        loop {
            let Some(job) = self.shared.queue.pop() else {
                self.stop = Some(Stop::PoolClosed);
                return std::ptr::null();
            };
            if job.is_abandoned() {
                self.shared.queue.count_abandoned(1);
                continue;
            }
            return self.lend(job);
        }
    }

    /// The script finished the request `next_request` returned: its response is complete.
    pub(super) fn request_done(&mut self) {
        if let Some(in_flight) = self.in_flight.take() {
            self.complete(in_flight, false);
            self.completed += 1;
        }
    }

    fn lend(&mut self, job: Job) -> *const ffi::tp_request {
        self.request_seq += 1;
        self.handed_out += 1;
        self.shared.busy.fetch_add(1, Ordering::Relaxed);
        let Started {
            request,
            exchange,
            deadline,
            span,
        } = job.start(&self.shared, &self.thread, self.request_seq);
        let lent = LentRequest::new(request, exchange, self.request_seq);
        let request = lent.as_ptr();
        self.in_flight = Some(InFlight {
            lent,
            deadline,
            _span: span,
        });
        request
    }

    /// The script ended while handling a request: the response ends as PHP left it (a `500`
    /// unless its status or output says otherwise).
    fn fail_request_in_flight(&mut self, overflowed: bool) {
        if let Some(in_flight) = self.in_flight.take() {
            tracing::warn!(
                worker = self.worker,
                "the worker script ended while handling a request"
            );
            self.complete(in_flight, overflowed);
        }
    }

    fn complete(&mut self, in_flight: InFlight, overflowed: bool) {
        let InFlight {
            lent,
            deadline,
            _span,
        } = in_flight;
        Started::complete(lent.take_back(), deadline.as_ref(), overflowed);
        self.shared.busy.fetch_sub(1, Ordering::Relaxed);
        if let Some((_, counters)) = &self.shared.worker {
            counters.served(self.worker, self.handed_out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_in_a_row_back_off_up_to_a_limit() {
        assert_eq!(backoff(0), Duration::ZERO);
        assert_eq!(backoff(1), Duration::ZERO);
        assert_eq!(backoff(2), Duration::from_millis(100));
        assert_eq!(backoff(3), Duration::from_millis(200));
        assert_eq!(backoff(7), Duration::from_millis(3200));
        assert_eq!(backoff(8), BACKOFF_LIMIT);
        assert_eq!(backoff(u32::MAX), BACKOFF_LIMIT);
    }
}
