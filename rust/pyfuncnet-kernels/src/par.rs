//! The project's thread pool: the only module that names rayon.
//!
//! Kernels call [`for_each_task`] with a task count that depends on the problem size
//! only, never on the thread count, so the partition of work (and therefore every
//! floating-point result) is the same for 1 or 64 threads. Work is handed out
//! dynamically (tasks are claimed one at a time by whichever thread is free), so a
//! busy core slows a run down gracefully instead of stalling a static split at a
//! barrier.
//!
//! One stall remains when another process competes for the cores: a worker that the
//! operating system deschedules while it holds a task makes the caller wait for it
//! at the end of the section, for up to a scheduler time slice (milliseconds), far
//! longer than the section. [`for_each_task`] watches for such stalls and, after
//! one, runs the sections of the next [`BACKOFF`] on the calling thread alone (a
//! probe in parallel follows). Which thread runs a task never changes its result.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use crate::error::{KernelError, Result};

/// Environment variable read once for the default thread count.
pub const NUM_THREADS_ENV: &str = "PYFUNCNET_NUM_THREADS";

static POOL: OnceLock<RwLock<Arc<rayon::ThreadPool>>> = OnceLock::new();

fn build_pool(threads: usize) -> Arc<rayon::ThreadPool> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("pyfuncnet-{i}"))
        .start_handler(|_| {
            crate::scratch::reserve_thread_buffers();
            crate::fpenv::flush_subnormals_on_this_thread();
        })
        .build()
        .expect("the operating system refused to start pyfuncnet worker threads");
    Arc::new(pool)
}

/// The default thread count: `PYFUNCNET_NUM_THREADS` if set to a positive integer,
/// otherwise the cores available to this process.
pub fn default_num_threads() -> usize {
    std::env::var(NUM_THREADS_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

fn pool_cell() -> &'static RwLock<Arc<rayon::ThreadPool>> {
    POOL.get_or_init(|| RwLock::new(build_pool(default_num_threads())))
}

fn current_pool() -> Arc<rayon::ThreadPool> {
    // A poisoned lock only means another thread panicked while swapping pools;
    // the Arc inside is still a valid pool.
    pool_cell()
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
}

/// Replaces the pool with one of `threads` workers.
///
/// # Errors
/// `InvalidArgument` when `threads` is zero.
pub fn set_num_threads(threads: usize) -> Result<()> {
    if threads == 0 {
        return Err(KernelError::InvalidArgument {
            what: "set_num_threads".into(),
            message: "the thread count must be at least 1, got 0".into(),
        });
    }
    let pool = build_pool(threads);
    *pool_cell().write().unwrap_or_else(|e| e.into_inner()) = pool;
    Ok(())
}

/// The number of worker threads of the current pool.
pub fn num_threads() -> usize {
    current_pool().current_num_threads()
}

/// Runs `f` on the project's pool, so nested [`for_each_task`] calls use its workers.
///
/// Already on a pool worker, or with a single worker (whose sections all run
/// serially on the caller), `f` runs right here: the hop to a worker and back
/// would only add two thread wake-ups.
pub fn install<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if rayon::current_thread_index().is_some() || serial() {
        return f();
    }
    current_pool().install(f)
}

thread_local! {
    /// Set while [`serially`] runs on this thread.
    static SERIAL_SCOPE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with every parallel helper of this module running its work in order on
/// this thread: for a whole step too small to gain from other threads, where a
/// single hand-off to the pool would cost more than its parallel parts save. The
/// partitions are the same, so the results are too.
pub fn serially<R>(f: impl FnOnce() -> R) -> R {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            SERIAL_SCOPE.with(|s| s.set(self.0));
        }
    }
    let _reset = Reset(SERIAL_SCOPE.with(|s| s.replace(true)));
    f()
}

/// Whether the helpers below should run their tasks in order on this thread: with a
/// single worker nothing runs in parallel anyway, and handing the work to it from
/// another thread (an eager op runs on the caller's) would add a wake-up and a
/// hand-back, ~10 us each when it sleeps; and while backing off after a stall (see
/// the module docs). Tasks are independent and the partition is the caller's, so
/// the results are the same either way.
fn serial() -> bool {
    num_threads() == 1 || SERIAL_SCOPE.with(|s| s.get()) || backing_off()
}

/// How long sections run on the calling thread alone after a stall.
pub const BACKOFF: Duration = Duration::from_millis(100);
/// A wait for helpers longer than this (and than [`STALL_TASKS`] average tasks)
/// counts as a stall: wake-up latency and uneven task ends stay well below it, a
/// descheduled worker well above.
const MIN_STALL: Duration = Duration::from_micros(200);
const STALL_TASKS: u32 = 4;

/// Nanoseconds since the first call, as a lock-free timestamp.
fn now_ns() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// End of the current back-off, in [`now_ns`] time (0: none).
static SERIAL_UNTIL_NS: AtomicU64 = AtomicU64::new(0);

fn backing_off() -> bool {
    let until = SERIAL_UNTIL_NS.load(Ordering::Relaxed);
    until != 0 && now_ns() < until
}

/// Records how a parallel section ended on the calling thread: it ran `ran` tasks in
/// `busy`, then waited `wait` for the helpers. Starts a back-off after a stall.
/// Returns whether it did.
fn note_section_end(ran: u32, busy: Duration, wait: Duration) -> bool {
    let typical_task = if ran == 0 { Duration::ZERO } else { busy / ran };
    let stalled = wait > MIN_STALL.max(typical_task * STALL_TASKS);
    if stalled {
        let until = now_ns() + BACKOFF.as_nanos() as u64;
        SERIAL_UNTIL_NS.store(until.max(1), Ordering::Relaxed);
    }
    stalled
}

/// Runs `task(i)` for every `i` in `0..tasks`, in parallel when `tasks > 1` and the
/// pool has more than one worker.
///
/// Tasks are independent; callers size them to tens of microseconds of work or more,
/// because handing a task to another thread costs microseconds.
pub fn for_each_task(tasks: usize, task: impl Fn(usize) + Sync + Send) {
    match tasks {
        0 => {}
        1 => task(0),
        _ if serial() => (0..tasks).for_each(task),
        _ => install(|| claim_in_parallel(tasks, &task)),
    }
}

/// The parallel section of [`for_each_task`]: the calling thread and up to
/// `threads - 1` helpers claim task indices from one counter until none are left.
fn claim_in_parallel(tasks: usize, task: &(impl Fn(usize) + Sync)) {
    let next = AtomicUsize::new(0);
    let claim_all = || {
        let mut ran = 0u32;
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= tasks {
                return ran;
            }
            task(i);
            ran += 1;
        }
    };
    run_section(tasks - 1, &claim_all);
}

/// Runs `claim_all` (which claims and runs work items until none are left and
/// returns how many it ran) on the calling thread and on up to `max_helpers`
/// helpers, then checks the end of the section for a stall.
fn run_section(max_helpers: usize, claim_all: &(impl Fn() -> u32 + Sync)) {
    let helpers = (num_threads() - 1).min(max_helpers);
    let start = Instant::now();
    // When the last helper ran out of items (ns after `start`). The wait is
    // measured to it rather than to the join's return: while it waits, the
    // calling thread may run unrelated stolen work (another node of the step),
    // which is no stall.
    let helpers_done = AtomicU64::new(0);
    let ((ran, busy), ()) = rayon::join(
        || {
            let ran = claim_all();
            (ran, start.elapsed())
        },
        || {
            offer_helpers(helpers, &|| {
                claim_all();
                helpers_done.fetch_max(nanos(start.elapsed()), Ordering::Relaxed);
            })
        },
    );
    let wait = helpers_done
        .load(Ordering::Relaxed)
        .saturating_sub(nanos(busy));
    note_section_end(ran, busy, Duration::from_nanos(wait));
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Whether work handed to [`for_each_task`] and the other helpers may now run on
/// several threads (more than one worker, and no back-off after a stall).
pub fn runs_in_parallel() -> bool {
    !serial()
}

/// Offers `help` to `n` more threads (nested joins: no allocation). A half nobody
/// steals is run by the thread that offered it, finding no task left.
fn offer_helpers(n: usize, help: &(impl Fn() + Sync)) {
    match n {
        0 => {}
        1 => help(),
        _ => {
            rayon::join(help, || offer_helpers(n - 1, help));
        }
    }
}

/// Splits `data` into consecutive chunks of `chunk` elements (the last may be shorter)
/// and runs `task(chunk_index, chunk)` on each, in parallel.
pub fn for_each_chunk_mut<T: Send>(
    data: &mut [T],
    chunk: usize,
    task: impl Fn(usize, &mut [T]) + Sync + Send,
) {
    let chunk = chunk.max(1);
    if data.len() <= chunk {
        if !data.is_empty() {
            task(0, data);
        }
        return;
    }
    if serial() {
        data.chunks_mut(chunk)
            .enumerate()
            .for_each(|(i, c)| task(i, c));
        return;
    }
    let n_chunks = data.len().div_ceil(chunk);
    // Chunks are claimed one at a time, as tasks are in `for_each_task`.
    let chunks = Mutex::new(data.chunks_mut(chunk).enumerate());
    let claim_all = || {
        let mut ran = 0u32;
        loop {
            // A poisoned lock only means a task panicked; the iterator is intact.
            let next = chunks.lock().unwrap_or_else(|e| e.into_inner()).next();
            let Some((i, c)) = next else {
                return ran;
            };
            task(i, c);
            ran += 1;
        }
    };
    install(|| run_section(n_chunks - 1, &claim_all));
}

/// Runs `a` and `b`, potentially in parallel, and returns both results.
pub fn join<A: Send, B: Send>(
    a: impl FnOnce() -> A + Send,
    b: impl FnOnce() -> B + Send,
) -> (A, B) {
    if serial() {
        return (a(), b());
    }
    install(|| rayon::join(a, b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serially_runs_every_task_on_the_calling_thread_then_resets() {
        let me = std::thread::current().id();
        let seen = Mutex::new(Vec::new());
        serially(|| {
            for_each_task(64, |i| {
                seen.lock().unwrap().push((i, std::thread::current().id()))
            });
            assert!(!runs_in_parallel());
        });
        let mut seen = seen.into_inner().unwrap();
        seen.sort_by_key(|&(i, _)| i);
        assert_eq!(
            seen.iter().map(|&(i, _)| i).collect::<Vec<_>>(),
            (0..64).collect::<Vec<_>>()
        );
        assert!(seen.iter().all(|&(_, t)| t == me));
        assert_eq!(
            runs_in_parallel(),
            num_threads() > 1 && !backing_off(),
            "the scope ends with the call"
        );
    }

    #[test]
    fn for_each_task_runs_every_index_once() {
        let hits: Vec<AtomicUsize> = (0..37).map(|_| AtomicUsize::new(0)).collect();
        for_each_task(hits.len(), |i| {
            hits[i].fetch_add(1, Ordering::Relaxed);
        });
        assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
    }

    #[test]
    fn for_each_chunk_mut_covers_the_slice_in_fixed_chunks() {
        let mut data = vec![0usize; 103];
        for_each_chunk_mut(&mut data, 10, |ci, c| {
            for x in c.iter_mut() {
                *x = ci;
            }
        });
        for (i, x) in data.iter().enumerate() {
            assert_eq!(*x, i / 10);
        }
    }

    #[test]
    fn a_long_wait_for_helpers_starts_a_back_off() {
        // (The back-off is process-wide and other tests run alongside, so this
        // test checks only what its own calls decide.)
        // Ordinary ends of sections: short waits, or waits of a few tasks' length.
        let short = note_section_end(10, Duration::from_micros(500), Duration::from_micros(100));
        let uneven = note_section_end(2, Duration::from_millis(4), Duration::from_millis(3));
        assert!(!short && !uneven);
        // A worker descheduled for a time slice while it held a task.
        assert!(note_section_end(
            8,
            Duration::from_micros(400),
            Duration::from_millis(3)
        ));
        assert!(backing_off() && !runs_in_parallel());
        // Meanwhile sections run on the calling thread, every task exactly once.
        let me = std::thread::current().id();
        let hits: Vec<AtomicUsize> = (0..16).map(|_| AtomicUsize::new(0)).collect();
        for_each_task(hits.len(), |i| {
            assert_eq!(std::thread::current().id(), me);
            hits[i].fetch_add(1, Ordering::Relaxed);
        });
        assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
        let mut data = [0u32; 64];
        for_each_chunk_mut(&mut data, 8, |i, c| {
            assert_eq!(std::thread::current().id(), me);
            c.fill(i as u32);
        });
        assert!(data.iter().enumerate().all(|(i, &x)| x as usize == i / 8));
    }

    #[test]
    fn zero_threads_is_refused() {
        assert!(set_num_threads(0).is_err());
    }
}
