//! Quick SGEMM throughput table: the shapes of `benches/gemm.rs` (square sizes up to
//! 2048 and the MLP training shapes), median GFLOP/s over repeated timings.
//!
//! Faster to run than the criterion bench and easy to compare with
//! `benches/python/np_gemm.py`, which times NumPy on the same shapes.
//!
//! ```text
//! PYFUNCNET_NUM_THREADS=1 cargo run --release -p pyfuncnet-benches --example gemm_gflops \
//!     [reps] [filter] [extra shapes, e.g. 1000,96x2048x256,64x128x3200:ta]
//! ```
//!
//! `PYFUNCNET_SIMD` picks the kernel family as usual; `filter` (comma-separated)
//! keeps the shapes whose name contains one of its parts.
//!
//! Besides wall-clock GFLOP/s, it prints GFLOP/s per second of CPU time of the
//! calling thread (Linux `/proc/thread-self/schedstat`), which on one thread
//! leaves out the time other processes held the core: on a busy machine that is
//! the steadier measure of the kernel itself.
//!
//! It first measures the peak the rates are compared with: independent FMA chains
//! held in registers (`pyfuncnet_kernels::peak`), on one thread and on all the
//! threads at once (vCPUs that share a physical core share its FMA units).

use std::hint::black_box;
use std::sync::Barrier;
use std::time::Instant;

use pyfuncnet_benches::{mlp_shapes, Operands, Shape};
use pyfuncnet_kernels::cpu;
use pyfuncnet_kernels::gemm::{sgemm, Epilogue, MatMut};
use pyfuncnet_kernels::{par, peak};

/// An extra product from the command line: `(m, n, k, transpose_a, transpose_b)`.
type Extra = (usize, usize, usize, bool, bool);

/// The square sizes up to 2048, the `extra` products, then the MLP's.
fn shapes(extra: &[Extra]) -> Vec<Shape> {
    let mut v: Vec<Shape> = [64, 128, 256, 384, 512, 1024, 2048]
        .into_iter()
        .map(|n| Shape::square(format!("sq{n}"), n))
        .collect();
    for &(m, n, k, ta, tb) in extra {
        let t = match (ta, tb) {
            (false, false) => "",
            (true, false) => ":ta",
            (false, true) => ":tb",
            (true, true) => ":tatb",
        };
        v.push(Shape {
            name: format!("{m}x{n}x{k}{t}"),
            m,
            n,
            k,
            ta,
            tb,
        });
    }
    v.extend(mlp_shapes());
    v
}

/// Nanoseconds this thread has run on a CPU, if the kernel reports it.
fn thread_cpu_ns() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_whitespace().next()?.parse().ok()
}

/// `(median, max)` of `v`.
fn median_max(v: &mut [f64]) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[v.len() - 1])
}

/// `(median, max)` GFLOP/s over `reps` timings of `threads` threads running FMA
/// chains at once (each thread times its own run after a common start; a timing
/// ends with the slowest); `None` when the active level has no probe.
fn fma_peak(threads: usize, reps: usize) -> Option<(f64, f64)> {
    let level = cpu::active();
    let per_round = peak::flops_per_round(level)? as f64;
    // About 20 ms per thread at 100 GFLOP/s.
    let rounds = (2e9 / per_round) as u64;
    let mut rates: Vec<f64> = (0..reps)
        .map(|_| {
            let start = Barrier::new(threads);
            let slowest = std::thread::scope(|s| {
                let runs: Vec<_> = (0..threads)
                    .map(|_| {
                        s.spawn(|| {
                            start.wait();
                            let t = Instant::now();
                            black_box(peak::fma_rounds(level, black_box(rounds)));
                            t.elapsed().as_secs_f64()
                        })
                    })
                    .collect();
                runs.into_iter()
                    .map(|r| r.join().expect("an FMA thread panicked"))
                    .fold(0.0, f64::max)
            });
            threads as f64 * per_round * rounds as f64 / slowest / 1e9
        })
        .collect();
    Some(median_max(&mut rates))
}

/// Exits with what an extra shape must look like (a typo must not time another shape).
fn usage(given: &str) -> ! {
    eprintln!(
        "extra shape {given:?}: expected N or MxNxK, optionally followed by :ta, :tb or :tatb"
    );
    std::process::exit(2);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let reps: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(15);
    let filter = args.get(2).cloned().unwrap_or_default();
    // `MxNxK` or a square size `N`, then `:ta`, `:tb` or `:tatb` to read A and / or
    // B transposed (as a backward pass does).
    let extra: Vec<Extra> = args
        .get(3)
        .map(|s| {
            s.split(',')
                .map(|x| {
                    let (dims, flags) = x.split_once(':').unwrap_or((x, ""));
                    let (ta, tb) = match flags {
                        "" => (false, false),
                        "ta" => (true, false),
                        "tb" => (false, true),
                        "tatb" => (true, true),
                        _ => usage(x),
                    };
                    let d: Option<Vec<usize>> = dims.split('x').map(|d| d.parse().ok()).collect();
                    match d.as_deref() {
                        Some(&[n]) => (n, n, n, ta, tb),
                        Some(&[m, n, k]) => (m, n, k, ta, tb),
                        _ => usage(x),
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    println!(
        "simd = {}, threads = {}, GFLOP/s, median of {reps}",
        cpu::active().name(),
        par::num_threads()
    );
    // The peak of as many threads as the products use, to compare them with.
    let threads = par::num_threads();
    let mut peak = None;
    for t in std::iter::once(1).chain((threads > 1).then_some(threads)) {
        let Some((median, max)) = fma_peak(t, reps) else {
            println!("FMA peak: no probe at this SIMD level");
            break;
        };
        let who = match t {
            1 => "1 thread".to_string(),
            _ => format!("{t} threads at once"),
        };
        println!("FMA peak, {who:18} {median:6.1} (max {max:6.1})");
        peak = Some(median);
    }
    for s in shapes(&extra) {
        if !filter.split(',').any(|f| s.name.contains(f)) {
            continue;
        }
        let (m, n, name) = (s.m, s.n, &s.name);
        let operands = Operands::new(&s);
        let (a, b) = (operands.a(&s), operands.b(&s));
        let mut c_data = vec![0.0f32; m * n];
        let ep = Epilogue::default();
        let flops = s.flops() as f64;
        // About 20 ms of work per timing at 100 GFLOP/s: short timings, many of them,
        // so that the best ones dodge the other processes of a shared machine.
        let inner = ((2e9 / flops) as usize).max(1);
        let res: Vec<(f64, f64)> = {
            let mut run = || {
                let out = MatMut::row_major(&mut c_data, m, n).unwrap();
                sgemm(1.0, black_box(a), black_box(b), 0.0, out, &ep).unwrap();
            };
            run();
            (0..reps)
                .map(|_| {
                    let cpu0 = thread_cpu_ns();
                    let t = Instant::now();
                    for _ in 0..inner {
                        run();
                    }
                    let wall = t.elapsed().as_secs_f64();
                    let cpu = match (cpu0, thread_cpu_ns()) {
                        (Some(a), Some(b)) if b > a => (b - a) as f64 * 1e-9,
                        _ => f64::NAN,
                    };
                    let total = flops * inner as f64 / 1e9;
                    (total / wall, total / cpu)
                })
                .collect()
        };
        let (wall_med, wall_max) = median_max(&mut res.iter().map(|r| r.0).collect::<Vec<_>>());
        // Over all timings together: the CPU-time counter is only exact to a tick.
        let cpu_all = res.len() as f64 / res.iter().map(|r| 1.0 / r.1).sum::<f64>();
        let share = peak.map_or(String::new(), |p| {
            format!("  {:3.0}% of peak", 100.0 * wall_med / p)
        });
        println!(
            "{name:24} wall {wall_med:7.1} (max {wall_max:6.1})  per-cpu-s {cpu_all:7.1}{share}"
        );
    }
}
