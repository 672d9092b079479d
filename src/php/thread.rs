//! A worker thread's PHP context, as the pool drives it: start, run one request (or a worker
//! script that serves many), interrupt, stop.
//! Together with [`runtime`](super::runtime) (the SAPI's callbacks) this is where Rust calls
//! into the C shim in `ext/`; the pool itself is safe code.

use std::ffi::c_void;
use std::ptr::NonNull;

use super::ffi;
use super::request::PhpRequest;
use super::response::Exchange;
use super::worker::WorkerRun;

/// A worker thread as other threads see it: what a timed-out request's deadline uses to stop the
/// script. Shared, because a deadline may fire (harmlessly) after the thread has exited.
pub(super) struct ThreadHandle(NonNull<ffi::tp_thread>);

// SAFETY: the C struct behind the pointer is only touched under its own mutex (tp_interrupt,
// tp_thread_stop) and freed once, when the last handle drops.
unsafe impl Send for ThreadHandle {}
// SAFETY: as above; every access is serialised by the C mutex.
unsafe impl Sync for ThreadHandle {}

impl ThreadHandle {
    /// Starts PHP on the calling thread (worker `id` of a pool of `workers` with
    /// `queue_capacity`, values scripts can read). `None` when the C side is out of memory.
    /// PHP must have been started first ([`PhpRuntime`](super::PhpRuntime)).
    pub(super) fn start(id: usize, workers: usize, queue_capacity: usize) -> Option<ThreadHandle> {
        let pool = ffi::tp_pool_info {
            workers: i64::try_from(workers).unwrap_or(i64::MAX),
            queue_capacity: i64::try_from(queue_capacity).unwrap_or(i64::MAX),
        };
        let c_id = i32::try_from(id).unwrap_or(i32::MAX);
        // SAFETY: the first PHP call on this thread; PHP was started before any pool, and the
        // pool starts each worker thread once.
        NonNull::new(unsafe { ffi::tp_thread_start(c_id, pool) }).map(ThreadHandle)
    }

    /// Stops request `request_seq` if it is still running on this thread.
    pub(super) fn interrupt(&self, request_seq: u64) -> bool {
        // SAFETY: the pointer is valid until Drop; tp_interrupt checks the thread and request.
        unsafe { ffi::tp_interrupt(self.0.as_ptr(), request_seq) }
    }

    /// Ends PHP on the calling thread, the one that started it, once its last request is done.
    pub(super) fn stop(&self) {
        // SAFETY: the last PHP call on this thread; no request is running (the pool calls it
        // after its job loop), and the handle stays allocated until the last clone drops.
        unsafe { ffi::tp_thread_stop(self.0.as_ptr()) };
    }
}

impl Drop for ThreadHandle {
    fn drop(&mut self) {
        // SAFETY: the last reference; the thread called tp_thread_stop before dropping its own.
        unsafe { ffi::tp_thread_free(self.0.as_ptr()) };
    }
}

/// How a request left the thread.
pub(super) struct Executed {
    /// False when PHP's state on this thread is suspect (a bailout escaped request shutdown).
    pub(super) thread_usable: bool,
    /// PHP overflowed its C stack during the request.
    pub(super) overflowed: bool,
}

/// Runs `request` on the calling worker thread's PHP context, talking to the client through
/// `exchange`.
pub(super) fn execute(
    request: &mut PhpRequest,
    exchange: &mut Exchange,
    request_seq: u64,
) -> Executed {
    let mut entries = Vec::new();
    let ctx: *mut Exchange = exchange;
    let c_request = request.as_ffi(&mut entries, request_seq, ctx.cast::<c_void>());
    // SAFETY: `c_request` points into `request` and `entries`, which outlive the call; `ctx`
    // points at `exchange`, which Rust does not touch until the call returns (the exclusive
    // borrows above make sure of it).
    let outcome = unsafe { ffi::tp_execute(&c_request) };
    // SAFETY: reads a flag tp_execute left on this thread.
    let overflowed = unsafe { ffi::tp_stack_overflowed() };
    Executed {
        thread_usable: matches!(outcome, ffi::tp_outcome::TP_OUTCOME_OK),
        overflowed,
    }
}

/// A request lent to a worker script's `tokio_handle_request()`: its C view, and the exchange the
/// callbacks reach through its `ctx`, at heap addresses that stay put until it is taken back.
pub(super) struct LentRequest {
    /// Owns the strings `c_request` points into.
    _request: PhpRequest,
    /// Owns the `$_SERVER` entries `c_request` points into.
    _entries: Vec<ffi::tp_server_var>,
    c_request: NonNull<ffi::tp_request>,
    exchange: Option<NonNull<Exchange>>,
}

impl LentRequest {
    pub(super) fn new(mut request: PhpRequest, exchange: Exchange, request_seq: u64) -> Self {
        let exchange = NonNull::from(Box::leak(Box::new(exchange)));
        let mut entries = Vec::new();
        let c_request = request.as_ffi(&mut entries, request_seq, exchange.as_ptr().cast());
        LentRequest {
            _request: request,
            _entries: entries,
            c_request: NonNull::from(Box::leak(Box::new(c_request))),
            exchange: Some(exchange),
        }
    }

    /// What `next_request` hands to PHP.
    pub(super) fn as_ptr(&self) -> *const ffi::tp_request {
        self.c_request.as_ptr()
    }

    /// The exchange back, once PHP no longer refers to the request: after `request_done`, or
    /// after the script that ran it ended.
    pub(super) fn take_back(mut self) -> Exchange {
        let exchange = self
            .exchange
            .take()
            .expect("an exchange is taken back once");
        // SAFETY: leaked from a Box in `new`; PHP is done with it (the caller's promise) and
        // `exchange` is None from here on, so Drop does not free it again.
        *unsafe { Box::from_raw(exchange.as_ptr()) }
    }
}

impl Drop for LentRequest {
    fn drop(&mut self) {
        // SAFETY: both were leaked from Boxes in `new` and PHP no longer refers to them (the
        // request was taken back, or never reached PHP).
        unsafe {
            drop(Box::from_raw(self.c_request.as_ptr()));
            if let Some(exchange) = self.exchange.take() {
                drop(Box::from_raw(exchange.as_ptr()));
            }
        }
    }
}

/// How a worker script left the thread.
pub(super) struct WorkerEnded {
    /// False when PHP's state on this thread is suspect (a bailout escaped request shutdown).
    pub(super) thread_usable: bool,
    /// PHP overflowed its C stack.
    pub(super) overflowed: bool,
    pub(super) report: ffi::tp_worker_report,
}

/// Runs the worker script `script` on the calling worker thread's PHP context until it ends;
/// its `tokio_handle_request()` calls take their requests from `run`.
pub(super) fn run_worker(script: &mut PhpRequest, run: &mut WorkerRun) -> WorkerEnded {
    let mut entries = Vec::new();
    let c_script = script.as_ffi(&mut entries, 0, std::ptr::null_mut());
    // SAFETY: all-zero is a valid tp_worker_report (plain integers, a bool and a byte array).
    let mut report: ffi::tp_worker_report = unsafe { std::mem::zeroed() };
    let host: *mut WorkerRun = run;
    // SAFETY: `c_script` points into `script` and `entries`, which outlive the call; `host`
    // points at `run`, which Rust does not touch until the call returns (the exclusive borrow
    // above makes sure of it); the callbacks reach it only on this thread, during the call.
    let outcome = unsafe { ffi::tp_run_worker(&c_script, host.cast::<c_void>(), &mut report) };
    // SAFETY: reads a flag tp_run_worker left on this thread.
    let overflowed = unsafe { ffi::tp_stack_overflowed() };
    WorkerEnded {
        thread_usable: matches!(outcome, ffi::tp_outcome::TP_OUTCOME_OK),
        overflowed,
        report,
    }
}
