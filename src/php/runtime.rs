//! The process-wide PHP runtime: TSRM, SAPI and module startup, once, before any worker thread.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, ThreadId};

use super::ffi;
use super::response::{Exchange, Head};
use super::worker::WorkerRun;

static STARTED: AtomicBool = AtomicBool::new(false);

/// How PHP is started.
#[derive(Debug, Clone, Default)]
pub struct PhpRuntimeConfig {
    /// `php.ini` directives applied after any php.ini file (they win), in order.
    pub ini: Vec<(String, String)>,
    /// Load this php.ini instead of PHP's compiled-in search path.
    pub php_ini_path: Option<PathBuf>,
    /// Load no php.ini (nor conf.d) at all.
    pub ignore_php_ini: bool,
    /// Expected number of worker threads (a sizing hint).
    pub thread_hint: usize,
}

/// Why PHP could not start.
#[derive(Debug, thiserror::Error)]
pub enum PhpStartError {
    /// PHP can start only once per process.
    #[error("PHP is already started in this process")]
    AlreadyStarted,
    /// An ini name or value contains a NUL byte or a newline.
    #[error("invalid php.ini directive {0:?}")]
    InvalidIni(String),
    /// PHP's module startup failed (its log says why).
    #[error("PHP module startup failed")]
    StartupFailed,
}

/// The started PHP runtime. Start it before the tokio runtime or any other thread (OPcache
/// preload may fork); stop it with [`PhpRuntime::shutdown`] on the same thread, after every
/// [`PhpPool`](super::PhpPool) is shut down.
#[derive(Debug)]
pub struct PhpRuntime {
    started_on: ThreadId,
}

impl PhpRuntime {
    /// Starts PHP. Fails if it was started before in this process.
    pub fn start(config: PhpRuntimeConfig) -> Result<PhpRuntime, PhpStartError> {
        let ini = ini_entries(&config)?;
        let ini_path = config
            .php_ini_path
            .as_ref()
            .map(|p| CString::new(p.as_os_str().as_encoded_bytes()))
            .transpose()
            .map_err(|_| PhpStartError::InvalidIni("php.ini path".into()))?;
        if STARTED.swap(true, Ordering::SeqCst) {
            return Err(PhpStartError::AlreadyStarted);
        }
        let server_version = CString::new(env!("CARGO_PKG_VERSION")).unwrap_or_default();
        let server_build = CString::new(crate::http::BUILD).unwrap_or_default();
        let options = ffi::tp_startup_options {
            callbacks: HOST_CALLBACKS,
            ini_entries: ini.as_ptr(),
            php_ini_path: ini_path.as_ref().map_or(std::ptr::null(), |p| p.as_ptr()),
            php_ini_ignore: config.ignore_php_ini,
            thread_hint: c_int::try_from(config.thread_hint).unwrap_or(c_int::MAX),
            server_version: server_version.as_ptr(),
            server_build: server_build.as_ptr(),
        };
        // SAFETY: called once per process (guarded by STARTED); the shim copies every string it
        // keeps, so `ini`, `ini_path`, `server_version` and `server_build` may be freed after the call.
        let status = unsafe { ffi::tp_startup(&options) };
        if status != 0 {
            return Err(PhpStartError::StartupFailed);
        }
        tracing::info!(php = version(), "PHP started");
        Ok(PhpRuntime {
            started_on: thread::current().id(),
        })
    }

    /// Shuts PHP down. Must run on the thread that started it, after all pools stopped;
    /// otherwise PHP is left running until the process exits.
    pub fn shutdown(self) {
        if thread::current().id() != self.started_on {
            tracing::warn!(
                "PHP runtime dropped on another thread than it started on; not shutting it down"
            );
            return;
        }
        // SAFETY: on the startup thread, and the caller has stopped every worker thread.
        unsafe { ffi::tp_shutdown() };
    }
}

/// The PHP version this binary runs.
pub fn version() -> &'static str {
    // SAFETY: returns a pointer to PHP's static version string.
    unsafe { CStr::from_ptr(ffi::tp_php_version()) }
        .to_str()
        .unwrap_or("unknown")
}

/// Whether PHP has per-thread execution timers (`max_execution_time` is safe on worker threads).
pub fn has_thread_timers() -> bool {
    // SAFETY: reads a compile-time constant.
    unsafe { ffi::tp_has_thread_timers() }
}

fn ini_entries(config: &PhpRuntimeConfig) -> Result<CString, PhpStartError> {
    let mut text = String::new();
    if !has_thread_timers() {
        // Without per-thread timers PHP's timeout is a process-wide signal that can land on any
        // thread; the server's own request timeout takes over instead.
        text.push_str("max_execution_time=0\nmax_input_time=-1\n");
    }
    for (name, value) in &config.ini {
        if name.contains(['\n', '=']) || value.contains('\n') {
            return Err(PhpStartError::InvalidIni(format!("{name}={value}")));
        }
        text.push_str(&format!("{name}={value}\n"));
    }
    CString::new(text).map_err(|e| PhpStartError::InvalidIni(e.to_string()))
}

const HOST_CALLBACKS: ffi::tp_host_callbacks = ffi::tp_host_callbacks {
    write: Some(host_write),
    flush: Some(host_flush),
    send_headers: Some(host_send_headers),
    read_body: Some(host_read_body),
    log: Some(host_log),
    heartbeat: Some(host_heartbeat),
    phase: Some(host_phase),
    finish: Some(host_finish),
    script_failed: Some(host_script_failed),
    next_request: Some(host_next_request),
    request_done: Some(host_request_done),
};

/// Runs a host callback's body, turning a panic into `fallback` and an error log line: a panic
/// must not unwind into PHP's C frames (that aborts the whole process), and the request it hit
/// is better failed alone.
fn guarded<T>(callback: &'static str, fallback: T, body: impl FnOnce() -> T) -> T {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)).unwrap_or_else(|panic| {
        let reason = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        tracing::error!(
            callback,
            reason,
            "panic in a PHP host callback; failing that call"
        );
        fallback
    })
}

/// # Safety
/// `ctx` is the `Exchange` the worker passed to `tp_execute` for the request running on this
/// thread; nothing else touches it while PHP runs.
unsafe fn exchange<'a>(ctx: *mut c_void) -> &'a mut Exchange {
    // SAFETY: guaranteed by the caller (see above).
    unsafe { &mut *ctx.cast::<Exchange>() }
}

/// # Safety
/// `ptr` is valid for `len` bytes (or `len` is 0).
unsafe fn bytes<'a>(ptr: *const c_char, len: usize) -> &'a [u8] {
    if len == 0 {
        return &[];
    }
    // SAFETY: guaranteed by the caller.
    unsafe { std::slice::from_raw_parts(ptr.cast::<u8>(), len) }
}

unsafe extern "C" fn host_write(ctx: *mut c_void, buf: *const c_char, len: usize) -> bool {
    // SAFETY: the shim passes the running request's ctx and PHP's output buffer of `len` bytes.
    guarded("write", false, || unsafe {
        exchange(ctx).write(bytes(buf, len))
    })
}

unsafe extern "C" fn host_flush(ctx: *mut c_void) -> bool {
    // SAFETY: the shim passes the running request's ctx.
    guarded("flush", false, || unsafe { exchange(ctx).flush() })
}

unsafe extern "C" fn host_send_headers(
    ctx: *mut c_void,
    status: c_int,
    lines: *const ffi::tp_str,
    count: usize,
) {
    guarded("send_headers", (), || {
        let lines: &[ffi::tp_str] = if count == 0 {
            &[]
        } else {
            // SAFETY: the shim passes `count` header lines that live until it returns.
            unsafe { std::slice::from_raw_parts(lines, count) }
        };
        // SAFETY: each line points at PHP's header buffer of `len` bytes.
        let lines: Vec<&[u8]> = lines
            .iter()
            .map(|l| unsafe { bytes(l.ptr, l.len) })
            .collect();
        // SAFETY: the shim passes the running request's ctx.
        unsafe { exchange(ctx).set_head(Head::from_php(status, &lines)) }
    })
}

unsafe extern "C" fn host_read_body(ctx: *mut c_void, buf: *mut c_char, len: usize) -> usize {
    if len == 0 {
        return 0;
    }
    // SAFETY: PHP's read buffer is writable for `len` bytes.
    let buf = unsafe { std::slice::from_raw_parts_mut(buf.cast::<u8>(), len) };
    // SAFETY: the shim passes the running request's ctx.
    guarded("read_body", 0, || unsafe { exchange(ctx).read_body(buf) })
}

unsafe extern "C" fn host_heartbeat(ctx: *mut c_void, seconds: i64) -> bool {
    // SAFETY: the shim passes the running request's ctx.
    guarded("heartbeat", false, || unsafe {
        exchange(ctx).heartbeat(seconds)
    })
}

unsafe extern "C" fn host_phase(ctx: *mut c_void, phase: c_int) {
    // SAFETY: the shim passes the running request's ctx.
    guarded("phase", (), || unsafe { exchange(ctx).phase(phase) })
}

unsafe extern "C" fn host_finish(ctx: *mut c_void) {
    // SAFETY: the shim passes the running request's ctx.
    guarded("finish", (), || unsafe { exchange(ctx).finish_early() })
}

unsafe extern "C" fn host_script_failed(ctx: *mut c_void, failure: c_int) {
    // SAFETY: the shim passes the running request's ctx.
    guarded("script_failed", (), || unsafe {
        exchange(ctx).script_failed(failure)
    })
}

/// # Safety
/// `worker` is the `WorkerRun` the worker thread passed to `tp_run_worker`, which is still
/// running on this thread; nothing else touches it while PHP runs.
unsafe fn worker_run<'a>(worker: *mut c_void) -> &'a mut WorkerRun {
    // SAFETY: guaranteed by the caller (see above).
    unsafe { &mut *worker.cast::<WorkerRun>() }
}

unsafe extern "C" fn host_next_request(worker: *mut c_void) -> *const ffi::tp_request {
    // SAFETY: the shim passes tp_run_worker's `worker` argument.
    guarded("next_request", std::ptr::null(), || unsafe {
        worker_run(worker).next_request()
    })
}

unsafe extern "C" fn host_request_done(worker: *mut c_void) {
    // SAFETY: the shim passes tp_run_worker's `worker` argument.
    guarded("request_done", (), || unsafe {
        worker_run(worker).request_done()
    })
}

unsafe extern "C" fn host_log(ctx: *mut c_void, msg: *const c_char, len: usize, level: c_int) {
    // SAFETY: PHP's message buffer is valid for `len` bytes during the call.
    let message = unsafe { bytes(msg, len) };
    guarded("log", (), || {
        log_php_message(!ctx.is_null(), message, level)
    })
}

fn log_php_message(in_request: bool, message: &[u8], level: c_int) {
    let message = String::from_utf8_lossy(message);
    // syslog numbering: 0-3 are errors, 4 warnings, 5-7 notices and below.
    match level {
        0..=3 => tracing::error!(target: "php", log_type = "error", in_request, "{message}"),
        4 => tracing::warn!(target: "php", log_type = "error", in_request, "{message}"),
        _ => tracing::info!(target: "php", log_type = "error", in_request, "{message}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panicking_callback_returns_its_fallback_instead_of_unwinding_into_php() {
        assert_eq!(guarded("test", 7, || panic!("boom")), 7);
        assert!(!guarded("test", false, || -> bool {
            panic!("{}", "owned")
        }));
        assert_eq!(guarded("test", 0, || 42), 42);
    }
}
