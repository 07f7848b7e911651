//! `sgemm` gives bitwise-identical results for any thread count.
//!
//! In its own test binary because it replaces the global thread pool.

mod common;

use pyfuncnet_kernels::cpu;
use pyfuncnet_kernels::gemm::{sgemm_with_level, Epilogue, MatMut, MatRef};
use pyfuncnet_kernels::par;

use common::values;

/// The tests of this file replace the global pool; they take turns.
static POOL_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// `C = 0.75 * op(A) op(B) + 0.5 * C + bias`, then tanh, at the given thread count.
fn product(threads: usize, m: usize, n: usize, k: usize, ta: bool, tb: bool) -> Vec<Vec<f32>> {
    par::set_num_threads(threads).unwrap();
    par::watch_machine_load(false);
    assert_eq!(par::num_threads(), threads);
    let a_data = values(m * k, 1);
    let b_data = values(k * n, 2);
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
    let bias = values(n, 3);
    let tanh = |row: &mut [f32]| row.iter_mut().for_each(|x| *x = x.tanh());
    let ep = Epilogue {
        bias: Some(&bias),
        activation: Some(&tanh),
    };
    cpu::supported_levels()
        .into_iter()
        .map(|level| {
            let mut c = values(m * n, 4);
            let out = MatMut::row_major(&mut c, m, n).unwrap();
            sgemm_with_level(level, 0.75, a, b, 0.5, out, &ep).unwrap();
            c
        })
        .collect()
}

#[test]
fn gemm_is_bitwise_identical_for_1_2_and_3_threads() {
    let _turn = POOL_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let shapes = [
        // Blocked path: several M blocks, K blocks and N chunks.
        (300, 500, 700, false, false),
        (517, 263, 1030, true, true),
        (70, 4100, 40, false, true),
        (30, 300, 20000, false, false),
        // Long K, small C: tasks over column panels, K streamed block by block.
        (32, 128, 12800, true, false),
        (64, 128, 4100, true, false),
        (25, 70, 2100, false, true),
        // Weight-gradient layout with a shorter K: K streamed, operands in place
        // (AVX-512; the narrower panels of the other levels keep them blocked).
        (128, 512, 320, true, false),
        (70, 300, 1000, true, false),
        // Small path: several row tasks, K blocks, packed B.
        (256, 64, 784, false, false),
        (64, 784, 64, false, true),
        (784, 64, 256, true, false),
        // Small path with all of B packed once (as `sgemm_packed` runs): row tasks.
        (256, 64, 784, false, true),
        // Short K, A the taller operand (input projections): small path.
        (3000, 128, 64, false, false),
        (1000, 1000, 100, false, true),
        // Worth one task, so cut in two on several threads only: row strips,
        // column panels with B packed, K streamed.
        (256, 64, 64, false, false),
        (64, 64, 300, false, false),
        (64, 64, 256, true, false),
    ];
    for (m, n, k, ta, tb) in shapes {
        let one = product(1, m, n, k, ta, tb);
        for threads in [2, 3] {
            let many = product(threads, m, n, k, ta, tb);
            for (x, y) in one.iter().zip(&many) {
                let same = x.iter().zip(y).all(|(p, q)| p.to_bits() == q.to_bits());
                assert!(
                    same,
                    "{m}x{n}x{k} (ta={ta}, tb={tb}) differs between 1 and {threads} threads"
                );
            }
        }
    }
}

#[test]
fn gemm_called_from_inside_the_pool_matches_outside() {
    // The graph executor calls sgemm from pool workers, possibly several at once.
    let _turn = POOL_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    par::set_num_threads(2).unwrap();
    par::watch_machine_load(false);
    let (m, n, k) = (200, 300, 400);
    let a_data = values(m * k, 5);
    let b_data = values(k * n, 6);
    let a = MatRef::row_major(&a_data, m, k).unwrap();
    let b = MatRef::row_major(&b_data, k, n).unwrap();
    let ep = Epilogue::default();
    let level = cpu::active();
    let mut outside = vec![0.0; m * n];
    sgemm_with_level(
        level,
        1.0,
        a,
        b,
        0.0,
        MatMut::row_major(&mut outside, m, n).unwrap(),
        &ep,
    )
    .unwrap();
    let results: Vec<std::sync::Mutex<Vec<f32>>> = (0..4)
        .map(|_| std::sync::Mutex::new(vec![0.0; m * n]))
        .collect();
    par::for_each_task(results.len(), |i| {
        let mut c = results[i].lock().unwrap();
        sgemm_with_level(
            level,
            1.0,
            a,
            b,
            0.0,
            MatMut::row_major(&mut c, m, n).unwrap(),
            &ep,
        )
        .unwrap();
    });
    for r in results {
        let r = r.into_inner().unwrap();
        assert!(r
            .iter()
            .zip(&outside)
            .all(|(p, q)| p.to_bits() == q.to_bits()));
    }
}
