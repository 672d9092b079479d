//! A request's deadline, shared between [`TimeoutLayer`](crate::layer::TimeoutLayer), which
//! sets and watches it, and the code running the request, which registers how to stop its work
//! and extends it on `tokio_request_heartbeat()`.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

type Interrupt = Box<dyn FnOnce() + Send>;

/// A request's deadline, shared between the timeout layer and the code running the request.
#[derive(Clone)]
pub struct Deadline {
    shared: Arc<DeadlineShared>,
}

struct DeadlineShared {
    origin: Instant,
    /// Milliseconds after `origin`.
    deadline_ms: AtomicU64,
    max_extension: Duration,
    interrupt: Mutex<InterruptState>,
    /// Signalled when the work behind the request finishes.
    work_finished: Notify,
    /// The work is still waiting for the request body from the client.
    receiving_body: AtomicBool,
}

#[derive(Default)]
struct InterruptState {
    expired: bool,
    on_expire: Option<Interrupt>,
}

impl fmt::Debug for Deadline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Deadline")
            .field("remaining", &self.remaining())
            .field("max_extension", &self.shared.max_extension)
            .finish()
    }
}

impl Deadline {
    /// A deadline `timeout` from now, which [`extend`](Self::extend) may move at most `timeout`
    /// ahead of the moment it is called.
    pub fn new(timeout: Duration) -> Deadline {
        Deadline {
            shared: Arc::new(DeadlineShared {
                origin: Instant::now(),
                deadline_ms: AtomicU64::new(millis(timeout)),
                max_extension: timeout,
                interrupt: Mutex::new(InterruptState::default()),
                work_finished: Notify::new(),
                receiving_body: AtomicBool::new(false),
            }),
        }
    }

    /// When the request times out (unless extended).
    pub fn instant(&self) -> Instant {
        self.shared.origin + Duration::from_millis(self.shared.deadline_ms.load(Ordering::Acquire))
    }

    /// Time left.
    pub fn remaining(&self) -> Duration {
        self.instant().saturating_duration_since(Instant::now())
    }

    /// The heartbeat: moves the deadline to `seconds` from now. False (and no change) when
    /// `seconds` is not in `1..=timeout` or the request already timed out.
    pub fn extend(&self, seconds: i64) -> bool {
        let Ok(seconds) = u64::try_from(seconds) else {
            return false;
        };
        let by = Duration::from_secs(seconds);
        if seconds == 0 || by > self.shared.max_extension || self.lock().expired {
            return false;
        }
        let target = millis(self.shared.origin.elapsed() + by);
        self.shared.deadline_ms.fetch_max(target, Ordering::AcqRel);
        true
    }

    /// Says whether the work is waiting for the request body: a deadline that passes meanwhile
    /// is the client's slowness, answered `408 Request Timeout` (and the connection closed)
    /// rather than `504`.
    pub fn receiving_body(&self, receiving: bool) {
        self.shared
            .receiving_body
            .store(receiving, Ordering::Release);
    }

    pub(crate) fn is_receiving_body(&self) -> bool {
        self.shared.receiving_body.load(Ordering::Acquire)
    }

    /// Registers how to stop the work behind this request when it times out. Runs `interrupt`
    /// at once if that already happened. Replaces an earlier registration.
    pub fn on_expire(&self, interrupt: impl FnOnce() + Send + 'static) {
        let mut state = self.lock();
        if state.expired {
            drop(state);
            interrupt();
        } else {
            state.on_expire = Some(Box::new(interrupt));
        }
    }

    /// Forgets the registered interrupt: the work finished, and the deadline no longer needs
    /// watching.
    pub fn clear_on_expire(&self) {
        self.lock().on_expire = None;
        self.shared.work_finished.notify_one();
    }

    /// Whether work registered with [`on_expire`](Self::on_expire) is still running.
    pub(crate) fn has_running_work(&self) -> bool {
        self.lock().on_expire.is_some()
    }

    /// Expires at the deadline (moved by heartbeats meanwhile) unless the work finishes first.
    pub(crate) async fn expire_unless_finished(self) {
        let finished = self.shared.work_finished.notified();
        let mut finished = std::pin::pin!(finished);
        loop {
            tokio::select! {
                () = &mut finished => return,
                () = tokio::time::sleep_until(self.instant()) => {
                    if self.instant() <= Instant::now() {
                        tracing::warn!(
                            "request timed out after its response head was sent; stopping it"
                        );
                        self.expire();
                        return;
                    }
                }
            }
        }
    }

    /// Whether the request timed out.
    pub fn is_expired(&self) -> bool {
        self.lock().expired
    }

    /// Marks the request timed out and runs the registered interrupt.
    pub(crate) fn expire(&self) {
        let interrupt = {
            let mut state = self.lock();
            state.expired = true;
            state.on_expire.take()
        };
        if let Some(interrupt) = interrupt {
            interrupt();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, InterruptState> {
        self.shared
            .interrupt
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn heartbeats_are_bounded_and_never_move_the_deadline_back() {
        let deadline = Deadline::new(Duration::from_secs(30));
        assert!(!deadline.extend(0));
        assert!(!deadline.extend(-5));
        assert!(!deadline.extend(31));
        assert!(deadline.extend(30));
        let far = deadline.instant();
        assert!(deadline.extend(1), "a shorter heartbeat is accepted");
        assert_eq!(deadline.instant(), far, "but never moves the deadline back");
        deadline.expire();
        assert!(!deadline.extend(10), "too late once expired");
        let ran = Arc::new(AtomicBool::new(false));
        let flag = ran.clone();
        deadline.on_expire(move || flag.store(true, Ordering::SeqCst));
        assert!(
            ran.load(Ordering::SeqCst),
            "registering after expiry interrupts at once"
        );
    }
}
