//! The pool runs sections on the calling thread while other threads keep every
//! core busy, and in parallel again once they stop (Linux, where the load can be
//! read). Its own process: the pool's state is process-wide.

#![cfg(target_os = "linux")]

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use pyfuncnet_kernels::par;

/// Polls `par::threads_in_use` (which looks at the load now and then) until it
/// returns `want`, for up to `limit`.
fn reaches(want: usize, limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if par::threads_in_use() == want {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    false
}

/// Stops the spinners when dropped, also when an assertion fails first (the scope
/// would otherwise wait for them forever).
struct Stop<'a>(&'a AtomicBool);

impl Drop for Stop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

#[test]
fn sections_leave_busy_cores_alone_and_come_back_when_they_are_free() {
    par::set_num_threads(2).unwrap();
    let cpus = par::load::online_cpus();
    let usable = std::thread::available_parallelism().map_or(1, |n| n.get());
    // Pinned to some CPUs, or with a single one, the pool does not look at the load
    // (or has no core to give its helper); otherwise it must give the helper up.
    let watched = usable >= cpus && cpus >= 2;
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let _stop = Stop(&stop);
        // Threads outside the pool, one more than there are CPUs, always runnable.
        for _ in 0..=cpus {
            scope.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    std::hint::spin_loop();
                }
            });
        }
        if !watched {
            std::thread::sleep(Duration::from_millis(50));
            assert_eq!(par::threads_in_use(), if cpus >= 2 { 2 } else { 1 });
            return;
        }
        assert!(
            reaches(1, Duration::from_secs(5)),
            "the pool kept its helper while every core was busy"
        );
        // Sections now run on this thread alone, every task once.
        let me = std::thread::current().id();
        let mut seen = vec![false; 64];
        par::for_each_chunk_mut(&mut seen, 1, |_, s| {
            assert_eq!(std::thread::current().id(), me);
            s[0] = true;
        });
        assert!(seen.iter().all(|&s| s));
    });
    if watched {
        assert!(
            reaches(2, Duration::from_secs(10)),
            "the pool did not take its helper back once the cores were free"
        );
        // Switched off, the pool keeps its helper whatever the load.
        par::watch_machine_load(false);
        assert_eq!(par::threads_in_use(), 2);
    }
}
