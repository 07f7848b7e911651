//! With one worker, the parallel helpers run their tasks in order on the calling
//! thread (no hand-off to the worker); with more, they still cover every task.
//! Own test binary: it changes the global thread count.

use std::sync::Mutex;
use std::thread::{self, ThreadId};

use pyfuncnet_kernels::par;

/// Runs every helper once; returns the threads their tasks ran on, in run order.
fn run_helpers() -> (Vec<usize>, Vec<usize>, Vec<ThreadId>) {
    let threads = Mutex::new(Vec::new());
    let order = Mutex::new(Vec::new());
    par::for_each_task(5, |i| {
        threads.lock().unwrap().push(thread::current().id());
        order.lock().unwrap().push(i);
    });
    let mut data = vec![0usize; 25];
    par::for_each_chunk_mut(&mut data, 10, |ci, c| {
        threads.lock().unwrap().push(thread::current().id());
        c.fill(ci + 1);
    });
    let here = || thread::current().id();
    let (a, b) = par::join(here, here);
    let mut threads = threads.into_inner().unwrap();
    threads.extend([a, b]);
    (order.into_inner().unwrap(), data, threads)
}

#[test]
fn helpers_run_in_order_on_the_caller_with_one_worker_and_cover_all_tasks_otherwise() {
    par::set_num_threads(1).unwrap();
    par::watch_machine_load(false);
    let (order, data, threads) = run_helpers();
    assert_eq!(order, [0, 1, 2, 3, 4]);
    assert_eq!(data[..10], [1; 10]);
    assert_eq!(data[20..], [3; 5]);
    assert!(threads.iter().all(|&t| t == thread::current().id()));

    par::set_num_threads(3).unwrap();
    par::watch_machine_load(false);
    let (mut order, data2, _) = run_helpers();
    order.sort_unstable();
    assert_eq!(order, [0, 1, 2, 3, 4]);
    assert_eq!(data2, data);
}
