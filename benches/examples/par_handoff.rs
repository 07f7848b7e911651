//! What a parallel section costs: `par::for_each_task(2, ...)` with two tasks that
//! each spin for `work` microseconds, started `gap` microseconds after the previous
//! section ended (the gap lets idle threads go to sleep, as between two steps).
//! Prints the median and 90th percentile wall time of a section; the ideal is
//! `work` (both tasks at once).
//!
//! ```text
//! PYFUNCNET_NUM_THREADS=2 cargo run --release -p pyfuncnet-benches --example par_handoff
//! ```

use std::time::{Duration, Instant};

use pyfuncnet_kernels::par;

fn spin(micros: u64) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_micros(micros) {
        std::hint::spin_loop();
    }
}

fn main() {
    println!("threads = {}", par::num_threads());
    for gap in [0u64, 50, 200, 1000] {
        for work in [0u64, 20, 100] {
            let mut times: Vec<f64> = (0..300)
                .map(|_| {
                    spin(gap);
                    let start = Instant::now();
                    par::for_each_task(2, |_| spin(work));
                    start.elapsed().as_secs_f64() * 1e6
                })
                .collect();
            times.sort_by(f64::total_cmp);
            println!(
                "gap {gap:4} us, 2 tasks of {work:3} us: median {:6.1} us, p90 {:6.1} us",
                times[times.len() / 2],
                times[times.len() * 9 / 10]
            );
        }
    }
}
