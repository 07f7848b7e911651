//! SGEMM throughput: square products and the shapes of an MLP training step.
//!
//! Throughput is declared as `Throughput::Elements(2*m*n*k)`: one "element" is one
//! floating-point operation, so criterion's `Gelem/s` reads as GFLOP/s.
//!
//! Environment: `PYFUNCNET_NUM_THREADS` (thread count), `PYFUNCNET_SIMD`
//! (`scalar` / `avx2` / `avx512`), `PYFUNCNET_BENCH_LARGE=1` adds the 2048 square product.
//! Run one thread count at a time, e.g.
//! `PYFUNCNET_NUM_THREADS=1 cargo bench -p pyfuncnet-benches --bench gemm`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use pyfuncnet_kernels::gemm::{sgemm, Epilogue, MatMut, MatRef};
use pyfuncnet_kernels::par;

/// Deterministic values in [-1, 1).
fn values(len: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2_654_435_761) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0
        })
        .collect()
}

/// One benchmarked product: `C (m x n) = op(A) · op(B)`, with A or B stored
/// transposed when `ta` / `tb` (read through a `.t()` view, as backward passes do).
struct Shape {
    name: String,
    m: usize,
    n: usize,
    k: usize,
    ta: bool,
    tb: bool,
}

fn bench_shape(c: &mut Criterion, group: &str, s: &Shape, samples: usize) {
    let Shape {
        m, n, k, ta, tb, ..
    } = *s;
    let a_data = values(m * k, 1);
    let b_data = values(k * n, 2);
    let mut c_data = vec![0.0f32; m * n];
    let a = if ta {
        MatRef::row_major(&a_data, k, m).unwrap().t()
    } else {
        MatRef::row_major(&a_data, m, k).unwrap()
    };
    let b = if tb {
        MatRef::row_major(&b_data, n, k).unwrap().t()
    } else {
        MatRef::row_major(&b_data, k, n).unwrap()
    };
    let ep = Epilogue::default();
    let mut g = c.benchmark_group(group);
    g.sample_size(samples)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        // Elements are flops: criterion's Gelem/s is GFLOP/s.
        .throughput(Throughput::Elements((2 * m * n * k) as u64));
    g.bench_with_input(BenchmarkId::from_parameter(&s.name), &(), |bench, _| {
        // Measured from inside the project's pool, as the bindings call kernels:
        // otherwise every call would also pay a hand-off to the pool and back.
        par::install(|| {
            bench.iter(|| {
                let out = MatMut::row_major(&mut c_data, m, n).unwrap();
                sgemm(1.0, black_box(a), black_box(b), 0.0, out, &ep).unwrap();
            })
        })
    });
    g.finish();
}

fn gemm_square(c: &mut Criterion) {
    let large = std::env::var("PYFUNCNET_BENCH_LARGE").is_ok_and(|v| v == "1");
    let mut sizes = vec![64, 128, 256, 384, 512, 1024];
    if large {
        sizes.push(2048);
    }
    for n in sizes {
        let s = Shape {
            name: n.to_string(),
            m: n,
            n,
            k: n,
            ta: false,
            tb: false,
        };
        bench_shape(c, "gemm_square", &s, if n >= 1024 { 10 } else { 20 });
    }
}

fn gemm_mlp(c: &mut Criterion) {
    for batch in [64, 256] {
        for (fan_in, fan_out) in [(784, 64), (64, 64), (64, 10)] {
            let layer = format!("b{batch}_{fan_in}x{fan_out}");
            let shapes = [
                // Forward: X (batch x in) · W (in x out).
                Shape {
                    name: format!("{layer}_x.w"),
                    m: batch,
                    n: fan_out,
                    k: fan_in,
                    ta: false,
                    tb: false,
                },
                // Input gradient: dY (batch x out) · Wᵀ.
                Shape {
                    name: format!("{layer}_dy.wt"),
                    m: batch,
                    n: fan_in,
                    k: fan_out,
                    ta: false,
                    tb: true,
                },
                // Weight gradient: Xᵀ · dY.
                Shape {
                    name: format!("{layer}_xt.dy"),
                    m: fan_in,
                    n: fan_out,
                    k: batch,
                    ta: true,
                    tb: false,
                },
            ];
            for s in &shapes {
                bench_shape(c, "gemm_mlp", s, 20);
            }
        }
    }
}

criterion_group!(benches, gemm_square, gemm_mlp);
criterion_main!(benches);
