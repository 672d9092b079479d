//! PHP may start while other threads of the process create threads. With the JIT on, OPcache
//! looks for a free hole near PHP's code in /proc/self/maps and maps its shared memory there;
//! a thread stack mapped into that hole in the meantime was silently replaced (MAP_FIXED), and
//! later made read-only and executable by the JIT. Our PHP build maps the hole only if it is
//! still free (scripts/php-patches/0005).
//!
//! This test starts PHP (with the JIT) while threads are being spawned as fast as possible. Each
//! spawned thread writes a pattern on its own stack and checks it after PHP has started: a
//! replaced stack shows as a changed pattern, or as the process dying. PHP starts once per
//! process, and the race is won only now and then (about one start in ten hit it before the
//! fix), so the test runs itself as a child process many times.

mod common;

use std::hint::black_box;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{Proto, TestServer};
use http::StatusCode;

/// Bounds the churn: PHP's startup takes well under a second here.
const MAX_THREADS: usize = 2000;
const CHURN_LIMIT: Duration = Duration::from_secs(20);
/// Larger than glibc's cached stacks, so every spawn maps a new one.
const STACK_SIZE: usize = 1 << 20;
const PATTERN_LEN: usize = 16 * 1024;

/// Set once PHP has started: the spawned threads check their stacks then.
#[derive(Default)]
struct Started {
    done: Mutex<bool>,
    signal: Condvar,
}

impl Started {
    fn set(&self) {
        *self.done.lock().unwrap() = true;
        self.signal.notify_all();
    }

    fn wait(&self) {
        let mut done = self.done.lock().unwrap();
        while !*done {
            done = self.signal.wait(done).unwrap();
        }
    }
}

/// Writes a pattern on this thread's stack, waits for PHP's startup, and says whether the pattern
/// is intact.
fn stack_survives(started: &Started, seed: u8) -> bool {
    let mut pattern = [0u8; PATTERN_LEN];
    for (i, byte) in pattern.iter_mut().enumerate() {
        *byte = seed.wrapping_add(i as u8) | 1;
    }
    black_box(&mut pattern);
    started.wait();
    let pattern = black_box(&pattern);
    pattern
        .iter()
        .enumerate()
        .all(|(i, byte)| *byte == seed.wrapping_add(i as u8) | 1)
}

/// Tells a child process to start PHP instead of spawning children.
const CHILD_ENV: &str = "TOKIO_PHP_TEST_JIT_STARTUP_CHILD";
const STARTS: usize = 25;
/// Threads spawned before PHP starts, so that PHP starts in the middle of the churn.
const CHURNING: usize = 8;

#[test]
fn php_starting_with_the_jit_leaves_other_threads_memory_alone() {
    if std::env::var_os(CHILD_ENV).is_some() {
        start_php_while_threads_are_spawned();
        return;
    }
    let this_test = "php_starting_with_the_jit_leaves_other_threads_memory_alone";
    for start in 0..STARTS {
        let output = Command::new(std::env::current_exe().unwrap())
            .args([this_test, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, "1")
            .output()
            .expect("the test binary runs again");
        assert!(
            output.status.success(),
            "start {start} of {STARTS}: {}\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn start_php_while_threads_are_spawned() {
    let started = Arc::new(Started::default());
    let stop = Arc::new(AtomicBool::new(false));
    let damaged = Arc::new(AtomicUsize::new(0));
    let churning = Arc::new(AtomicUsize::new(0));

    let spawner = {
        let (started, stop, damaged) = (started.clone(), stop.clone(), damaged.clone());
        let churning = churning.clone();
        thread::spawn(move || {
            let begin = Instant::now();
            let mut threads = Vec::new();
            while !stop.load(Ordering::Relaxed)
                && threads.len() < MAX_THREADS
                && begin.elapsed() < CHURN_LIMIT
            {
                let (started, damaged) = (started.clone(), damaged.clone());
                let seed = threads.len() as u8;
                let thread = thread::Builder::new()
                    .stack_size(STACK_SIZE)
                    .spawn(move || {
                        if !stack_survives(&started, seed) {
                            damaged.fetch_add(1, Ordering::Relaxed);
                        }
                    })
                    .expect("a thread starts");
                threads.push(thread);
                churning.fetch_add(1, Ordering::Relaxed);
            }
            threads
        })
    };

    // PHP starts on this thread while the spawner maps stack after stack: once it is under way.
    let deadline = Instant::now() + CHURN_LIMIT;
    while churning.load(Ordering::Relaxed) < CHURNING {
        assert!(Instant::now() < deadline, "the spawner spawns threads");
        thread::yield_now();
    }
    common::php_runtime_with(&[
        ("opcache.jit", "tracing"),
        ("opcache.jit_buffer_size", "64M"),
    ]);
    stop.store(true, Ordering::Relaxed);
    let threads = spawner.join().expect("the spawner finishes");
    started.set();
    let spawned = threads.len();
    for thread in threads {
        thread.join().expect("a spawned thread finishes");
    }
    assert!(spawned > 0, "threads were spawned while PHP started");
    assert_eq!(
        damaged.load(Ordering::Relaxed),
        0,
        "of {spawned} threads spawned while PHP started, some found their stack overwritten"
    );

    // And PHP with its JIT serves.
    let server = TestServer::with_workers(2).await;
    for _ in 0..20 {
        let response = server.get(Proto::Http1, "/hot_notices.php").await;
        assert_eq!(response.status(), StatusCode::OK);
    }
}
