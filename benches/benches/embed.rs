//! Lookup-and-project (`take` feeding `dense`, as an Embedding feeding an LSTM's
//! input projection), forward and backward, on the encoders of the text
//! benchmarks, tokens drawn uniformly from 10,000 rows: the question-answering
//! model's (batch 128 of 100 tokens, about 7,200 distinct per batch; widths 64 ->
//! 128 and 32 -> 64) and the ticket model's (batch 32: titles of 10 tokens, 64 ->
//! 512; bodies of 100, 64 -> 128). Against the unfused pair: the gather and one
//! product per index forward, two products per index and the bias's column sums
//! backward.
//!
//! Throughput is declared in flops of the unfused products, so criterion's
//! `Gelem/s` reads as the GFLOP/s the fused kernel stands in for. Run one thread
//! count at a time, e.g. `PYFUNCNET_NUM_THREADS=1 cargo bench -p pyfuncnet-benches
//! --bench embed`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use pyfuncnet_benches::values;
use pyfuncnet_kernels::embed::{self, TakeDenseGrads, TakeDenseOutputs, TakeDenseShape};
use pyfuncnet_kernels::gemm::{self, Epilogue, MatMut, MatRef};
use pyfuncnet_kernels::layout;
use pyfuncnet_kernels::reduce::{self, Reduce};

const TABLE_ROWS: usize = 10_000;
/// (name, tokens, width, units).
const CASES: [(&str, usize, usize, usize); 4] = [
    ("qa_text_64x128", 128 * 100, 64, 128),
    ("qa_question_32x64", 128 * 100, 32, 64),
    ("ticket_title_64x512", 32 * 10, 64, 512),
    ("ticket_body_64x128", 32 * 100, 64, 128),
];

/// `count` indices uniform over the table, from a fixed linear congruential sequence.
fn indices(count: usize) -> Vec<i32> {
    let mut state = 12_345u64;
    (0..count)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            ((state >> 33) % TABLE_ROWS as u64) as i32
        })
        .collect()
}

fn lookup_and_project(c: &mut Criterion) {
    for (name, tokens, width, units) in CASES {
        let idx = indices(tokens);
        let shape = TakeDenseShape {
            table_rows: TABLE_ROWS,
            width,
            units,
        };
        let table = values(TABLE_ROWS * width, 1);
        let kernel = values(width * units, 2);
        let bias = values(units, 3);
        let dz = values(tokens * units, 4);
        let epilogue = Epilogue {
            bias: Some(&bias),
            activation: None,
        };
        let (mut rows, mut positions) = (vec![0i32; tokens], vec![0i32; tokens]);
        let mut gathered = vec![0.0f32; tokens * width];
        let mut out = vec![0.0f32; tokens * units];
        let mut d_gathered = vec![0.0f32; tokens * width];
        let mut d_kernel = vec![0.0f32; width * units];
        let mut d_bias = vec![0.0f32; units];
        let flops = (2 * tokens * width * units) as u64;
        let mut group = c.benchmark_group("embed");
        group
            .sample_size(20)
            .measurement_time(Duration::from_secs(3));

        group.throughput(Throughput::Elements(flops));
        group.bench_function(format!("forward/{name}"), |bench| {
            bench.iter(|| {
                let outputs = TakeDenseOutputs {
                    rows: &mut rows,
                    positions: &mut positions,
                    gathered: &mut gathered,
                    out: &mut out,
                };
                embed::take_dense(shape, &table, black_box(&idx), &kernel, &epilogue, outputs)
                    .unwrap();
            })
        });
        group.bench_function(format!("forward_unfused/{name}"), |bench| {
            bench.iter(|| {
                layout::gather(
                    "take",
                    &table,
                    &[TABLE_ROWS, width],
                    0,
                    black_box(&idx),
                    &mut gathered,
                )
                .unwrap();
                gemm::sgemm(
                    1.0,
                    MatRef::row_major(&gathered, tokens, width).unwrap(),
                    MatRef::row_major(&kernel, width, units).unwrap(),
                    0.0,
                    MatMut::row_major(&mut out, tokens, units).unwrap(),
                    &epilogue,
                )
                .unwrap();
            })
        });

        // The backward reads what a forward pass left.
        let outputs = TakeDenseOutputs {
            rows: &mut rows,
            positions: &mut positions,
            gathered: &mut gathered,
            out: &mut out,
        };
        embed::take_dense(shape, &table, &idx, &kernel, &epilogue, outputs).unwrap();
        group.throughput(Throughput::Elements(2 * flops));
        group.bench_function(format!("backward/{name}"), |bench| {
            bench.iter(|| {
                embed::take_dense_grad(
                    shape,
                    black_box(&dz),
                    &positions,
                    &gathered,
                    &kernel,
                    TakeDenseGrads {
                        d_gathered: &mut d_gathered,
                        d_kernel: &mut d_kernel,
                        d_bias: Some(&mut d_bias),
                    },
                )
                .unwrap();
            })
        });
        let mut x = vec![0.0f32; tokens * width];
        layout::gather("take", &table, &[TABLE_ROWS, width], 0, &idx, &mut x).unwrap();
        let mut dx = vec![0.0f32; tokens * width];
        group.bench_function(format!("backward_unfused/{name}"), |bench| {
            bench.iter(|| {
                let dz = MatRef::row_major(black_box(&dz), tokens, units).unwrap();
                let none = Epilogue::default();
                let k = MatRef::row_major(&kernel, width, units).unwrap();
                gemm::sgemm(
                    1.0,
                    dz,
                    k.t(),
                    0.0,
                    MatMut::row_major(&mut dx, tokens, width).unwrap(),
                    &none,
                )
                .unwrap();
                let xm = MatRef::row_major(&x, tokens, width).unwrap();
                gemm::sgemm(
                    1.0,
                    xm.t(),
                    dz,
                    0.0,
                    MatMut::row_major(&mut d_kernel, width, units).unwrap(),
                    &none,
                )
                .unwrap();
                reduce::reduce(Reduce::Sum, dz.data, &[tokens, units], &[0], &mut d_bias).unwrap();
            })
        });
        group.finish();
    }
}

criterion_group!(benches, lookup_and_project);
criterion_main!(benches);
