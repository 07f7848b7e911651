//! SGEMM throughput: square products and the shapes of an MLP training step and
//! of an LSTM's.
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
use pyfuncnet_benches::{mlp_shapes, Operands, Shape};
use pyfuncnet_kernels::gemm::{sgemm, Epilogue, MatMut};

fn bench_shape(c: &mut Criterion, group: &str, s: &Shape, samples: usize) {
    let (m, n) = (s.m, s.n);
    let operands = Operands::new(s);
    let (a, b) = (operands.a(s), operands.b(s));
    let mut c_data = vec![0.0f32; m * n];
    let ep = Epilogue::default();
    let mut g = c.benchmark_group(group);
    g.sample_size(samples)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        // Elements are flops: criterion's Gelem/s is GFLOP/s.
        .throughput(Throughput::Elements(s.flops() as u64));
    g.bench_with_input(BenchmarkId::from_parameter(&s.name), &(), |bench, _| {
        bench.iter(|| {
            let out = MatMut::row_major(&mut c_data, m, n).unwrap();
            sgemm(1.0, black_box(a), black_box(b), 0.0, out, &ep).unwrap();
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
        let s = Shape::square(n.to_string(), n);
        bench_shape(c, "gemm_square", &s, if n >= 1024 { 10 } else { 20 });
    }
}

fn gemm_mlp(c: &mut Criterion) {
    for s in &mlp_shapes() {
        bench_shape(c, "gemm_mlp", s, 20);
    }
}

/// The GEMMs of the question-answering model's text LSTM (batch 128 x 100 steps,
/// embedding 64, 32 units, gates 4 x 32): the input projection, its input
/// gradient, and the two weight gradients over all steps (K = 12,800).
fn gemm_rnn(c: &mut Criterion) {
    let shape = |name: &str, m, n, k, ta, tb| Shape {
        name: name.into(),
        m,
        n,
        k,
        ta,
        tb,
    };
    for s in [
        shape("projection_12800x128x64", 12_800, 128, 64, false, false),
        shape("input_grad_12800x64x128", 12_800, 64, 128, false, true),
        shape("kernel_grad_64x128x12800", 64, 128, 12_800, true, false),
        shape("recurrent_grad_32x128x12800", 32, 128, 12_800, true, false),
    ] {
        bench_shape(c, "gemm_rnn", &s, 20);
    }
}

criterion_group!(benches, gemm_square, gemm_mlp, gemm_rnn);
criterion_main!(benches);
