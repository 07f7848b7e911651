//! `sgemm_gathered` against the f64 reference applied to the same rows copied into
//! a matrix, at every SIMD level this CPU supports.

use proptest::prelude::*;
use pyfuncnet_kernels::cpu;
use pyfuncnet_kernels::gemm::{
    sgemm_gathered, sgemm_reference, Epilogue, GatheredRows, MatMut, MatRef, PackedB, GATHER_ZEROS,
};
use pyfuncnet_kernels::KernelError;

/// Deterministic values in [-1, 1).
fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn relu(row: &mut [f32]) {
    row.iter_mut().for_each(|x| *x = x.max(0.0));
}

#[derive(Clone, Copy, Debug)]
struct Case {
    m: usize,
    n: usize,
    taps: usize,
    width: usize,
    /// One segment in `zero_every` is zeros (0: none).
    zero_every: usize,
    beta: f32,
    bias: bool,
    activation: bool,
    seed: u64,
}

/// Segment `t` of row `i`: an offset into a source of `len` floats, or zeros.
fn offset(case: &Case, len: usize, i: usize, t: usize) -> usize {
    let h = (i * 7919 + t * 104_729 + case.seed as usize * 31).wrapping_mul(2_654_435_761) >> 7;
    if case.zero_every > 0 && h.is_multiple_of(case.zero_every) {
        GATHER_ZEROS
    } else {
        h % (len - case.width + 1)
    }
}

fn check(case: Case) {
    let Case {
        m,
        n,
        taps,
        width,
        beta,
        ..
    } = case;
    let k = taps * width;
    let source = values(3 * width + 40, case.seed);
    let offsets = |first: usize, out: &mut [usize]| {
        assert_eq!(out.len() % taps, 0);
        for (i, row) in out.chunks_exact_mut(taps).enumerate() {
            for (t, o) in row.iter_mut().enumerate() {
                *o = offset(&case, source.len(), first + i, t);
            }
        }
    };
    // The same rows copied into a matrix, for the reference.
    let mut a = vec![0.0f32; m * k];
    for i in 0..m {
        for t in 0..taps {
            let o = offset(&case, source.len(), i, t);
            if o != GATHER_ZEROS {
                a[i * k + t * width..][..width].copy_from_slice(&source[o..o + width]);
            }
        }
    }
    let b_data = values(k * n, case.seed + 1);
    let b = MatRef::row_major(&b_data, k, n).unwrap();
    let c0 = values(m * n, case.seed + 2);
    let bias = values(n, case.seed + 3);
    let act: &(dyn Fn(&mut [f32]) + Sync) = &relu;
    let ep = Epilogue {
        bias: case.bias.then_some(&bias[..]),
        activation: case.activation.then_some(act),
    };
    let mut want = c0.clone();
    let a_view = MatRef::row_major(&a, m, k).unwrap();
    let c = MatMut::row_major(&mut want, m, n).unwrap();
    sgemm_reference(1.0, a_view, b, beta, c, &ep).unwrap();
    for level in cpu::supported_levels() {
        let mut buf = vec![f32::NAN; PackedB::buffer_len(level, k, n)];
        let packed = PackedB::new(level, b, &mut buf).unwrap();
        // beta == 0 must not read C: fill it with NaN.
        let mut got = if beta == 0.0 {
            vec![f32::NAN; m * n]
        } else {
            c0.clone()
        };
        let rows = GatheredRows {
            source: &source,
            rows: m,
            taps,
            width,
            offsets,
        };
        let c = MatMut::row_major(&mut got, m, n).unwrap();
        sgemm_gathered(&rows, &packed, beta, c, &ep).unwrap();
        let tol = 2e-6 * (k as f32 + 2.0) + 1e-6;
        for (idx, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(
                (g - w).abs() <= tol,
                "{}: {case:?}: C[{idx}] = {g}, reference {w}",
                level.name()
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// Any shape, including 0 and sizes around the kernels' tiles and the SIMD
    /// widths, segments in the padding or not, C overwritten or accumulated.
    #[test]
    fn gathered_rows_match_the_copied_matrix(
        m in 0usize..40,
        n in 0usize..40,
        taps in 0usize..12,
        width in prop::sample::select(vec![0usize, 1, 3, 4, 7, 8, 9, 15, 16, 17, 33]),
        zero_every in prop::sample::select(vec![0usize, 2, 5]),
        beta in prop::sample::select(vec![0.0f32, 1.0, 0.5]),
        bias in any::<bool>(),
        activation in any::<bool>(),
        seed in 0u64..1000,
    ) {
        check(Case { m, n, taps, width, zero_every, beta, bias, activation, seed });
    }
}

/// Many taps of short segments and few taps of long ones; segments all in the
/// padding (every tap of every strip skipped), half of them, or none.
#[test]
fn gathered_rows_with_many_or_long_taps_match() {
    for (m, n, taps, width) in [
        (50, 64, 49, 2),
        (13, 20, 3, 300),
        (6, 16, 64, 5),
        (7, 1, 9, 64),
    ] {
        for zero_every in [0, 1, 2] {
            check(Case {
                m,
                n,
                taps,
                width,
                zero_every,
                beta: 0.0,
                bias: true,
                activation: false,
                seed: 11,
            });
        }
    }
}

#[test]
fn gathered_rows_errors_instead_of_panicking() {
    let level = cpu::active();
    let source = values(20, 1);
    let b_data = values(6 * 5, 2);
    let b = MatRef::row_major(&b_data, 6, 5).unwrap();
    let mut buf = vec![0.0; PackedB::buffer_len(level, 6, 5)];
    let packed = PackedB::new(level, b, &mut buf).unwrap();
    let none = Epilogue::default();
    let mut c = vec![0.0; 4 * 5];
    let rows_at = |at: usize| GatheredRows {
        source: &source,
        rows: 4,
        taps: 2,
        width: 3,
        offsets: move |_: usize, out: &mut [usize]| out.fill(at),
    };
    // A segment past the end of the source (17 + 3 > 20 is fine, 18 is not).
    let c_view = MatMut::row_major(&mut c, 4, 5).unwrap();
    sgemm_gathered(&rows_at(17), &packed, 0.0, c_view, &none).unwrap();
    for at in [18, usize::MAX - 1] {
        let c_view = MatMut::row_major(&mut c, 4, 5).unwrap();
        let err = sgemm_gathered(&rows_at(at), &packed, 0.0, c_view, &none).unwrap_err();
        assert!(
            matches!(&err, KernelError::InvalidArgument { message, .. } if message.contains("past the source")),
            "{err:?}"
        );
    }
    // B's rows are not taps x width.
    let wrong_width = GatheredRows {
        source: &source,
        rows: 4,
        taps: 2,
        width: 2,
        offsets: |_: usize, out: &mut [usize]| out.fill(0),
    };
    let c_view = MatMut::row_major(&mut c, 4, 5).unwrap();
    assert!(matches!(
        sgemm_gathered(&wrong_width, &packed, 0.0, c_view, &none),
        Err(KernelError::ShapeMismatch { .. })
    ));
    // C of the wrong shape, and a bias of the wrong length.
    let c_view = MatMut::row_major(&mut c, 5, 4).unwrap();
    assert!(matches!(
        sgemm_gathered(&rows_at(0), &packed, 0.0, c_view, &none),
        Err(KernelError::ShapeMismatch { .. })
    ));
    let bias = [0.0; 4];
    let ep = Epilogue {
        bias: Some(&bias),
        activation: None,
    };
    let c_view = MatMut::row_major(&mut c, 4, 5).unwrap();
    assert!(matches!(
        sgemm_gathered(&rows_at(0), &packed, 0.0, c_view, &ep),
        Err(KernelError::ShapeMismatch { .. })
    ));
}
