//! The lookup-and-project (`embed::take_dense`) and its gradient are bitwise
//! identical for 1, 2 and 3 threads on batches that split into many tasks, on the
//! distinct-row path and on the plain one; the forward output is bitwise a `take`
//! followed by a product. In its own test binary because it replaces the global
//! thread pool.

mod common;

use pyfuncnet_kernels::embed::{self, TakeDenseGrads, TakeDenseOutputs, TakeDenseShape};
use pyfuncnet_kernels::gemm::{self, Epilogue, MatMut, MatRef};
use pyfuncnet_kernels::{layout, par};

/// The shared values, halved: in [-0.5, 0.5).
fn values(len: usize, seed: u64) -> Vec<f32> {
    common::values(len, seed)
        .into_iter()
        .map(|v| v / 2.0)
        .collect()
}

/// Forward output, then the gradients of the gathered rows, the kernel and the bias.
fn run(threads: usize, shape: TakeDenseShape, indices: &[i32]) -> [Vec<f32>; 4] {
    par::set_num_threads(threads).unwrap();
    par::watch_machine_load(false);
    let n = indices.len();
    let (table, kernel, bias) = (
        values(shape.table_rows * shape.width, 1),
        values(shape.width * shape.units, 2),
        values(shape.units, 3),
    );
    let (mut rows, mut positions) = (vec![0; n], vec![0; n]);
    let (mut gathered, mut out) = (vec![0.0; n * shape.width], vec![0.0; n * shape.units]);
    let epilogue = Epilogue {
        bias: Some(&bias),
        activation: None,
    };
    embed::take_dense(
        shape,
        &table,
        indices,
        &kernel,
        &epilogue,
        TakeDenseOutputs {
            rows: &mut rows,
            positions: &mut positions,
            gathered: &mut gathered,
            out: &mut out,
        },
    )
    .unwrap();

    let mut x = vec![0.0; n * shape.width];
    layout::gather(
        "t",
        &table,
        &[shape.table_rows, shape.width],
        0,
        indices,
        &mut x,
    )
    .unwrap();
    let mut plain = vec![0.0; n * shape.units];
    gemm::sgemm(
        1.0,
        MatRef::row_major(&x, n, shape.width).unwrap(),
        MatRef::row_major(&kernel, shape.width, shape.units).unwrap(),
        0.0,
        MatMut::row_major(&mut plain, n, shape.units).unwrap(),
        &epilogue,
    )
    .unwrap();
    assert!(
        out.iter()
            .zip(&plain)
            .all(|(a, b)| a.to_bits() == b.to_bits()),
        "take_dense differs from take + dense ({shape:?}, {threads} threads)"
    );

    let dz = values(n * shape.units, 4);
    let mut d_gathered = vec![0.0; n * shape.width];
    let mut d_kernel = vec![0.0; shape.width * shape.units];
    let mut d_bias = vec![0.0; shape.units];
    embed::take_dense_grad(
        shape,
        &dz,
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
    [out, d_gathered, d_kernel, d_bias]
}

#[test]
fn lookup_and_project_is_bitwise_identical_for_1_2_and_3_threads() {
    let shape = TakeDenseShape {
        table_rows: 500,
        width: 64,
        units: 128,
    };
    // 3000 indices over 500 rows repeat enough for the distinct-row path; a
    // permutation of 3000 rows of a larger table takes the plain one.
    let repeated: Vec<i32> = values(3000, 5)
        .iter()
        .map(|v| ((v + 0.5) * 500.0) as i32 % 500)
        .collect();
    let distinct: Vec<i32> = (0..3000).map(|i| (i * 7 + 3) % 3001).collect();
    assert!(embed::worth_deduplicating(3000, 500, 64));
    for (indices, rows) in [(repeated, 500), (distinct, 3001)] {
        let shape = TakeDenseShape {
            table_rows: rows,
            ..shape
        };
        let one = run(1, shape, &indices);
        for threads in [2, 3] {
            let many = run(threads, shape, &indices);
            for (i, (a, b)) in one.iter().zip(&many).enumerate() {
                assert!(
                    a.iter().zip(b).all(|(p, q)| p.to_bits() == q.to_bits()),
                    "result {i} ({rows} rows) differs with {threads} threads"
                );
            }
        }
    }
}
