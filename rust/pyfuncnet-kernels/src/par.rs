//! The project's thread pool: the only module that names rayon.
//!
//! Kernels call [`for_each_task`] with a task count that depends on the problem size
//! only, never on the thread count, so the partition of work (and therefore every
//! floating-point result) is the same for 1 or 64 threads. Work is handed out
//! dynamically by rayon's work stealing, so a busy core slows a run down gracefully
//! instead of stalling a static split at a barrier.

use std::sync::{Arc, OnceLock, RwLock};

use crate::error::{KernelError, Result};

/// Environment variable read once for the default thread count.
pub const NUM_THREADS_ENV: &str = "PYFUNCNET_NUM_THREADS";

static POOL: OnceLock<RwLock<Arc<rayon::ThreadPool>>> = OnceLock::new();

fn build_pool(threads: usize) -> Arc<rayon::ThreadPool> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("pyfuncnet-{i}"))
        .start_handler(|_| crate::gemm::reserve_thread_buffers())
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
pub fn install<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if rayon::current_thread_index().is_some() {
        // Already on a pool worker: installing again would only add a hop.
        return f();
    }
    current_pool().install(f)
}

/// Whether the helpers below should run their tasks in order on this thread: with a
/// single worker nothing runs in parallel anyway, and handing the work to it from
/// another thread (an eager op runs on the caller's) would add a wake-up and a
/// hand-back, ~10 us each when it sleeps. Tasks are independent and the partition
/// is the caller's, so the results are the same either way.
fn serial() -> bool {
    num_threads() == 1
}

/// Runs `task(i)` for every `i` in `0..tasks`, in parallel when `tasks > 1` and the
/// pool has more than one worker.
///
/// Tasks are independent; callers size them to tens of microseconds of work or more,
/// because handing a task to another thread costs microseconds.
pub fn for_each_task(tasks: usize, task: impl Fn(usize) + Sync + Send) {
    use rayon::prelude::*;
    match tasks {
        0 => {}
        1 => task(0),
        _ if serial() => (0..tasks).for_each(task),
        _ => install(|| (0..tasks).into_par_iter().for_each(task)),
    }
}

/// Splits `data` into consecutive chunks of `chunk` elements (the last may be shorter)
/// and runs `task(chunk_index, chunk)` on each, in parallel.
pub fn for_each_chunk_mut<T: Send>(
    data: &mut [T],
    chunk: usize,
    task: impl Fn(usize, &mut [T]) + Sync + Send,
) {
    use rayon::prelude::*;
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
    install(|| {
        data.par_chunks_mut(chunk)
            .enumerate()
            .for_each(|(i, c)| task(i, c))
    });
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
    use std::sync::atomic::{AtomicUsize, Ordering};

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
    fn zero_threads_is_refused() {
        assert!(set_num_threads(0).is_err());
    }
}
