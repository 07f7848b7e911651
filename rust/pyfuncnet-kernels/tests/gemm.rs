//! `sgemm` and `sgemm_gathered` against the f64 reference, at every SIMD level
//! this CPU supports.

mod common;

use std::collections::BTreeSet;
use std::sync::Mutex;

use proptest::prelude::*;
use pyfuncnet_kernels::cpu::{self, SimdLevel};
use pyfuncnet_kernels::gemm::{
    sgemm, sgemm_gathered, sgemm_packed, sgemm_reference, sgemm_with_level, Epilogue, GatheredRows,
    MatMut, MatRef, PackedB, GATHER_ZEROS,
};
use pyfuncnet_kernels::KernelError;

use common::values;

/// Levels that ran at least one product, to prove the SIMD kernels were exercised.
static LEVELS_RUN: Mutex<BTreeSet<&'static str>> = Mutex::new(BTreeSet::new());

/// How an operand is stored.
#[derive(Clone, Copy, Debug)]
struct Layout {
    /// Stored as the transpose and viewed through `.t()`.
    transposed: bool,
    /// Extra elements between stored rows (a non-contiguous view).
    pad: usize,
}

/// Storage for a `rows x cols` operand in `layout`, and a view of it.
fn operand(rows: usize, cols: usize, layout: Layout, seed: u64) -> (Vec<f32>, usize, usize, usize) {
    let (srows, scols) = if layout.transposed {
        (cols, rows)
    } else {
        (rows, cols)
    };
    let ld = scols + layout.pad;
    let data = values(srows * ld + 3, seed);
    let (rs, cs) = if layout.transposed { (1, ld) } else { (ld, 1) };
    (data, ld, rs, cs)
}

fn relu(row: &mut [f32]) {
    row.iter_mut().for_each(|x| *x = x.max(0.0));
}

#[derive(Clone, Copy, Debug)]
struct Case {
    m: usize,
    n: usize,
    k: usize,
    la: Layout,
    lb: Layout,
    ldc_pad: usize,
    alpha: f32,
    beta: f32,
    bias: bool,
    activation: bool,
    /// B goes through [`PackedB`] and [`sgemm_packed`].
    packed_b: bool,
}

impl Case {
    fn plain(m: usize, n: usize, k: usize) -> Case {
        let l = Layout {
            transposed: false,
            pad: 0,
        };
        Case {
            m,
            n,
            k,
            la: l,
            lb: l,
            ldc_pad: 0,
            alpha: 1.0,
            beta: 0.0,
            bias: false,
            activation: false,
            packed_b: false,
        }
    }
}

/// Runs `case` at `level` (None: `sgemm`, the active level) and compares with the
/// reference; returns a description of the first mismatch.
fn run_case(level: Option<SimdLevel>, case: Case) -> Result<(), String> {
    let Case {
        m,
        n,
        k,
        la,
        lb,
        ldc_pad,
        alpha,
        beta,
        bias,
        activation,
        packed_b,
    } = case;
    let (a_data, _, ars, acs) = operand(m, k, la, 1 + m as u64);
    let (b_data, _, brs, bcs) = operand(k, n, lb, 2 + n as u64);
    let a = MatRef::new(&a_data, m, k, ars, acs).unwrap();
    let b = MatRef::new(&b_data, k, n, brs, bcs).unwrap();
    let ldc = n + ldc_pad;
    let c_len = if m == 0 { 0 } else { (m - 1) * ldc + n };
    let c0 = values(c_len, 3 + k as u64);
    let bias_v = values(n, 4);
    let act: &(dyn Fn(&mut [f32]) + Sync) = &relu;
    let ep = Epilogue {
        bias: bias.then_some(&bias_v[..]),
        activation: activation.then_some(act),
    };

    let mut want = c0.clone();
    sgemm_reference(
        alpha,
        a,
        b,
        beta,
        MatMut::new(&mut want, m, n, ldc).unwrap(),
        &ep,
    )
    .unwrap();
    // beta == 0 must not read C: fill it with NaN.
    let mut got = if beta == 0.0 {
        vec![f32::NAN; c_len]
    } else {
        c0.clone()
    };
    let out = MatMut::new(&mut got, m, n, ldc).unwrap();
    match level {
        Some(level) if packed_b => {
            let mut buf = vec![f32::NAN; PackedB::buffer_len(level, k, n)];
            let packed = PackedB::new(level, b, &mut buf).unwrap();
            sgemm_packed(alpha, a, &packed, beta, out, &ep).unwrap();
        }
        Some(level) => sgemm_with_level(level, alpha, a, b, beta, out, &ep).unwrap(),
        None => sgemm(alpha, a, b, beta, out, &ep).unwrap(),
    }
    let name = level.unwrap_or_else(cpu::active).name();
    LEVELS_RUN.lock().unwrap().insert(name);

    let scale = alpha.abs() * k as f32 + beta.abs() + 1.0;
    let tol = 2e-6 * scale + 1e-6;
    for i in 0..m {
        for j in 0..ldc {
            let idx = i * ldc + j;
            if idx >= c_len {
                continue;
            }
            if j >= n {
                // Padding between rows is never written.
                let untouched = if beta == 0.0 {
                    got[idx].is_nan()
                } else {
                    got[idx] == c0[idx]
                };
                if !untouched {
                    return Err(format!("{name}: {case:?}: padding ({i}, {j}) was written"));
                }
                continue;
            }
            let (g, w) = (got[idx], want[idx]);
            let close = (g - w).abs() <= tol; // false for NaN
            if !close {
                return Err(format!(
                    "{name}: {case:?}: C({i}, {j}) = {g}, reference {w}, tolerance {tol}"
                ));
            }
        }
    }
    Ok(())
}

fn all_layouts() -> [Layout; 4] {
    [
        Layout {
            transposed: false,
            pad: 0,
        },
        Layout {
            transposed: true,
            pad: 0,
        },
        Layout {
            transposed: false,
            pad: 5,
        },
        Layout {
            transposed: true,
            pad: 3,
        },
    ]
}

/// Every combination of A and B layouts (plain, transposed, padded rows).
fn check_every_layout_pair(m: usize, n: usize, k: usize) {
    for la in all_layouts() {
        for lb in all_layouts() {
            check_every_level(Case {
                la,
                lb,
                ..Case::plain(m, n, k)
            });
        }
    }
}

fn check_every_level(case: Case) {
    for level in cpu::supported_levels() {
        if let Err(e) = run_case(Some(level), case) {
            panic!("{e}");
        }
    }
}

#[test]
fn gemm_forward_matches_reference_on_edge_shapes() {
    // Sizes around the tile sizes (scalar 4x8, AVX2 6x16, AVX-512 12x32), the K
    // blocks (256) and
    // the switch between the small and the blocked paths.
    let dims = [0, 1, 2, 5, 6, 7, 15, 16, 17, 31, 33, 65];
    for &m in &dims {
        for &n in &dims {
            for &k in &[0, 1, 3, 16, 37] {
                check_every_level(Case::plain(m, n, k));
            }
        }
    }
    for (m, n, k) in [
        (1, 1, 257),
        (7, 17, 513),
        (6, 16, 256),
        (12, 32, 255),
        (65, 65, 129),
        (130, 100, 300),
        (193, 130, 257),
        (200, 97, 520),
        (385, 170, 64),
        (70, 4100, 20),
        (100, 100, 1000),
        (80, 1000, 2100),
        // K so long that B is packed in K super-blocks.
        (8, 300, 20000),
    ] {
        check_every_level(Case::plain(m, n, k));
    }
    let seen = LEVELS_RUN.lock().unwrap().clone();
    eprintln!("gemm levels run: {seen:?}");
    assert_every_supported_level_ran(&seen);
}

/// Fails unless every level this CPU supports ran a product: proves the SIMD
/// kernels were exercised, not silently replaced by the portable one.
fn assert_every_supported_level_ran(seen: &BTreeSet<&'static str>) {
    for level in cpu::supported_levels() {
        assert!(
            seen.contains(level.name()),
            "the {} kernel did not run",
            level.name()
        );
    }
    if SimdLevel::Avx2Fma.is_supported() {
        assert!(seen.contains("avx2"), "the AVX2 kernel did not run");
    }
    if SimdLevel::Avx512.is_supported() {
        assert!(seen.contains("avx512"), "the AVX-512 kernel did not run");
    }
    assert!(seen.contains("scalar"));
}

#[test]
fn gemm_shapes_around_the_avx512_tile_match_reference() {
    // The AVX-512 tile is 12 x 32, its edge tiles use 1..12 rows and one or two
    // 16-lane vectors (the last one masked); 14, 48 and their neighbours cover
    // the other tile shapes worth trying.
    let ms = [1, 4, 11, 12, 13, 14, 15, 24, 25, 36];
    let ns = [1, 10, 15, 16, 17, 31, 32, 33, 47, 48, 49, 64, 65];
    for &m in &ms {
        for &n in &ns {
            for &k in &[1, 2, 17] {
                check_every_level(Case::plain(m, n, k));
            }
        }
    }
    // beta != 0, alpha != 1 and the epilogue on edge tiles, with strided C.
    for &m in &[11, 12, 13, 25] {
        for &n in &[15, 17, 32, 33, 48] {
            for (alpha, beta) in [(0.5, 0.0), (1.0, 1.0), (-2.0, 0.25)] {
                check_every_level(Case {
                    alpha,
                    beta,
                    ldc_pad: 3,
                    bias: true,
                    activation: true,
                    ..Case::plain(m, n, 19)
                });
            }
        }
    }
    // Transposed and strided operands at those sizes; sizes that reach the
    // blocked path (and its edge tiles) too.
    for (m, n, k) in [
        (12, 32, 1),
        (13, 33, 7),
        (14, 48, 40),
        (25, 47, 64),
        (37, 95, 129),
        (121, 161, 300),
        (140, 250, 260),
    ] {
        for la in all_layouts() {
            for lb in all_layouts() {
                check_every_level(Case {
                    la,
                    lb,
                    beta: 0.5,
                    ldc_pad: 1,
                    ..Case::plain(m, n, k)
                });
            }
        }
    }
    let seen = LEVELS_RUN.lock().unwrap().clone();
    eprintln!("gemm levels run: {seen:?}");
    assert_every_supported_level_ran(&seen);
}

#[test]
fn gemm_transposed_and_strided_operands_match_reference() {
    for (m, n, k) in [
        (5, 7, 3),
        (13, 17, 29),
        (64, 70, 100),
        (97, 130, 300),
        (200, 150, 140),
    ] {
        for la in all_layouts() {
            for lb in all_layouts() {
                for ldc_pad in [0, 3] {
                    check_every_level(Case {
                        la,
                        lb,
                        ldc_pad,
                        ..Case::plain(m, n, k)
                    });
                }
            }
        }
    }
}

#[test]
fn gemm_alpha_beta_and_epilogue_match_reference() {
    for (m, n, k) in [
        (1, 1, 1),
        (7, 9, 0),
        (6, 16, 5),
        (33, 21, 70),
        (150, 140, 300),
        (64, 10, 64),
    ] {
        for (alpha, beta) in [(1.0, 0.0), (0.5, 0.0), (1.0, 1.0), (-2.0, 0.25), (0.0, 3.0)] {
            for (bias, activation) in [(false, false), (true, false), (false, true), (true, true)] {
                check_every_level(Case {
                    alpha,
                    beta,
                    bias,
                    activation,
                    ..Case::plain(m, n, k)
                });
            }
        }
    }
}

#[test]
fn gemm_mlp_training_shapes_match_reference() {
    let t = Layout {
        transposed: true,
        pad: 0,
    };
    for batch in [64, 256] {
        for (fan_in, fan_out) in [(784, 64), (64, 64), (64, 10)] {
            // X·W, dY·Wᵀ, Xᵀ·dY.
            check_every_level(Case {
                bias: true,
                activation: true,
                ..Case::plain(batch, fan_out, fan_in)
            });
            check_every_level(Case {
                lb: t,
                ..Case::plain(batch, fan_in, fan_out)
            });
            check_every_level(Case {
                la: t,
                ..Case::plain(fan_in, fan_out, batch)
            });
        }
    }
}

#[test]
fn gemm_skinny_products_match_reference() {
    // Fewer columns than the kernel is wide: with A's columns contiguous this runs
    // as Cᵀ = Bᵀ Aᵀ, with the epilogue applied afterwards.
    for (m, n, k) in [
        (64, 10, 256),
        (200, 7, 40),
        (33, 1, 64),
        (100, 15, 33),
        (250, 3, 300),
    ] {
        check_every_layout_pair(m, n, k);
        for la in all_layouts() {
            for (alpha, beta) in [(0.5, 0.0), (1.0, 1.0), (-2.0, 0.25)] {
                for ldc_pad in [0, 2] {
                    check_every_level(Case {
                        la,
                        ldc_pad,
                        alpha,
                        beta,
                        bias: true,
                        activation: true,
                        ..Case::plain(m, n, k)
                    });
                }
            }
        }
    }
}

#[test]
fn gemm_small_path_packing_choices_match_reference() {
    // Either side of each threshold of the small path: B packed although its rows
    // are contiguous (48 rows of A or more, B over 4096 floats; 16 rows or more
    // when B's rows are 128 floats or longer), and then packed whole for tasks of
    // row strips (A over 64K floats) or per task of column panels.
    for (m, n, k) in [
        (47, 64, 100),
        (48, 64, 100),
        (15, 128, 40),
        (16, 128, 40),
        (32, 127, 100),
        (32, 512, 128),
        (48, 64, 64),
        (48, 64, 65),
        (256, 64, 256),
        (256, 64, 257),
        (100, 40, 700),
        (300, 17, 784),
    ] {
        check_every_layout_pair(m, n, k);
        check_every_level(Case {
            ldc_pad: 1,
            beta: 0.5,
            bias: true,
            activation: true,
            ..Case::plain(m, n, k)
        });
    }
}

#[test]
fn gemm_long_k_products_match_reference() {
    // K many times the kernel's K block next to a small C (weight gradients over
    // batch * steps rows): each task walks K packing one block at a time, or
    // reading A and B in place when A is transposed (then, at the AVX-512 level,
    // also for a K of one or two blocks: the last two shapes).
    for (m, n, k) in [
        (64, 128, 4100),
        (13, 33, 2048),
        (192, 256, 2049),
        (1, 1, 3000),
        (25, 70, 2100),
        (70, 300, 300),
        (13, 40, 256),
    ] {
        check_every_layout_pair(m, n, k);
        for (alpha, beta) in [(0.5, 0.0), (-2.0, 0.25)] {
            check_every_level(Case {
                la: all_layouts()[1],
                ldc_pad: 3,
                alpha,
                beta,
                bias: true,
                activation: true,
                ..Case::plain(m, n, k)
            });
        }
    }
}

#[test]
fn gemm_blocked_products_over_several_k_blocks_match_reference() {
    // Too tall for the K-streamed path (M > 192): the blocked path with K in
    // more than one of its blocks (the longest are 1024); beta and the epilogue
    // apply once.
    for (m, n, k) in [(200, 150, 2100), (200, 97, 1100)] {
        check_every_layout_pair(m, n, k);
        check_every_level(Case {
            la: all_layouts()[1],
            ldc_pad: 3,
            alpha: -2.0,
            beta: 0.25,
            bias: true,
            activation: true,
            ..Case::plain(m, n, k)
        });
    }
}

#[test]
fn gemm_active_level_runs() {
    eprintln!("gemm level (active): {}", cpu::active().name());
    // Without an override the best supported level is the active one.
    if std::env::var(cpu::SIMD_ENV).is_err() {
        assert_eq!(cpu::active(), cpu::detected());
        if SimdLevel::Avx512.is_supported() {
            assert_eq!(cpu::active(), SimdLevel::Avx512);
        }
    }
    run_case(None, Case::plain(37, 45, 53)).unwrap();
}

#[test]
fn gemm_k_zero_writes_epilogue_of_beta_c() {
    let bias = [1.0, -2.0, 3.0];
    let act: &(dyn Fn(&mut [f32]) + Sync) = &relu;
    for level in cpu::supported_levels() {
        let mut c = vec![f32::NAN; 6];
        let a = MatRef::new(&[], 2, 0, 0, 1).unwrap();
        let b = MatRef::new(&[], 0, 3, 3, 1).unwrap();
        let ep = Epilogue {
            bias: Some(&bias),
            activation: Some(act),
        };
        sgemm_with_level(
            level,
            1.0,
            a,
            b,
            0.0,
            MatMut::row_major(&mut c, 2, 3).unwrap(),
            &ep,
        )
        .unwrap();
        assert_eq!(c, [1.0, 0.0, 3.0, 1.0, 0.0, 3.0]);
    }
}

#[test]
fn gemm_errors_instead_of_panicking() {
    let data = vec![1.0f32; 64];
    let a = MatRef::row_major(&data, 4, 5).unwrap();
    let b = MatRef::row_major(&data, 6, 3).unwrap();
    let mut c = vec![0.0f32; 64];
    let ep = Epilogue::default();
    let r = sgemm(
        1.0,
        a,
        b,
        0.0,
        MatMut::row_major(&mut c, 4, 3).unwrap(),
        &ep,
    );
    assert!(matches!(r, Err(KernelError::ShapeMismatch { .. })));
    let b = MatRef::row_major(&data, 5, 3).unwrap();
    let r = sgemm(
        1.0,
        a,
        b,
        0.0,
        MatMut::row_major(&mut c, 3, 3).unwrap(),
        &ep,
    );
    assert!(matches!(r, Err(KernelError::ShapeMismatch { .. })));
    let r = sgemm(
        1.0,
        a,
        b,
        0.0,
        MatMut::row_major(&mut c, 4, 4).unwrap(),
        &ep,
    );
    assert!(matches!(r, Err(KernelError::ShapeMismatch { .. })));
    let bias = [0.0f32; 2];
    let bad_bias = Epilogue {
        bias: Some(&bias),
        activation: None,
    };
    let r = sgemm(
        1.0,
        a,
        b,
        0.0,
        MatMut::row_major(&mut c, 4, 3).unwrap(),
        &bad_bias,
    );
    assert!(matches!(r, Err(KernelError::ShapeMismatch { .. })));

    // Constructors refuse views that do not fit.
    assert!(matches!(
        MatRef::row_major(&data, 9, 8),
        Err(KernelError::BufferTooSmall { .. })
    ));
    assert!(matches!(
        MatRef::new(&data, 2, 2, 63, 1),
        Err(KernelError::BufferTooSmall { .. })
    ));
    assert!(MatRef::new(&data, 2, 2, usize::MAX, 1).is_err());
    assert!(MatRef::new(&[], 0, 5, 5, 1).is_ok());
    assert!(MatMut::new(&mut c, 2, 5, 4).is_err());
    assert!(MatMut::row_major(&mut c, 9, 8).is_err());

    // Hand-built views with public fields are checked again by sgemm.
    let forged = MatRef {
        data: &data[..10],
        rows: 4,
        cols: 5,
        rs: 5,
        cs: 1,
    };
    let r = sgemm(
        1.0,
        forged,
        b,
        0.0,
        MatMut::row_major(&mut c, 4, 3).unwrap(),
        &ep,
    );
    assert!(matches!(r, Err(KernelError::BufferTooSmall { .. })));
    let forged_c = MatMut {
        data: &mut c[..5],
        rows: 4,
        cols: 3,
        ldc: 3,
    };
    assert!(sgemm(1.0, a, b, 0.0, forged_c, &ep).is_err());
    let overlapping_c = MatMut {
        data: &mut c[..],
        rows: 4,
        cols: 3,
        ldc: 2,
    };
    assert!(sgemm(1.0, a, b, 0.0, overlapping_c, &ep).is_err());
    assert!(sgemm_reference(
        1.0,
        forged,
        b,
        0.0,
        MatMut::row_major(&mut c, 4, 3).unwrap(),
        &ep
    )
    .is_err());
}

#[test]
fn gemm_broadcast_strides_match_reference() {
    // rs = 0: every row of A is the same stored row.
    let a_data = values(20, 7);
    let b_data = values(20 * 33, 8);
    let a = MatRef::new(&a_data, 13, 20, 0, 1).unwrap();
    let b = MatRef::row_major(&b_data, 20, 33).unwrap();
    for level in cpu::supported_levels() {
        let mut want = vec![0.0; 13 * 33];
        let mut got = vec![0.0; 13 * 33];
        let ep = Epilogue::default();
        sgemm_reference(
            1.0,
            a,
            b,
            0.0,
            MatMut::row_major(&mut want, 13, 33).unwrap(),
            &ep,
        )
        .unwrap();
        sgemm_with_level(
            level,
            1.0,
            a,
            b,
            0.0,
            MatMut::row_major(&mut got, 13, 33).unwrap(),
            &ep,
        )
        .unwrap();
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() < 1e-4);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn gemm_random_shapes_match_reference(
        m in 0usize..80,
        n in 0usize..80,
        k in 0usize..300,
        ta in any::<bool>(),
        tb in any::<bool>(),
        pad_a in 0usize..3,
        pad_b in 0usize..3,
        ldc_pad in 0usize..3,
        ab in prop::sample::select(vec![(1.0f32, 0.0f32), (0.5, 1.0), (-1.5, 0.0), (1.0, -0.5)]),
        bias in any::<bool>(),
        activation in any::<bool>(),
    ) {
        let case = Case {
            m, n, k,
            la: Layout { transposed: ta, pad: pad_a },
            lb: Layout { transposed: tb, pad: pad_b },
            ldc_pad, alpha: ab.0, beta: ab.1, bias, activation, packed_b: false,
        };
        for level in cpu::supported_levels() {
            if let Err(e) = run_case(Some(level), case) {
                prop_assert!(false, "{}", e);
            }
        }
    }

}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    #[test]
    fn gemm_random_large_shapes_match_reference(
        m in 60usize..400,
        n in 60usize..300,
        k in 1usize..600,
        ta in any::<bool>(),
        tb in any::<bool>(),
    ) {
        let case = Case {
            la: Layout { transposed: ta, pad: 1 },
            lb: Layout { transposed: tb, pad: 0 },
            beta: 0.5,
            bias: true,
            ..Case::plain(m, n, k)
        };
        for level in cpu::supported_levels() {
            if let Err(e) = run_case(Some(level), case) {
                prop_assert!(false, "{}", e);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// B packed once ([`PackedB`]) then multiplied: any shape, including 0 and sizes
    /// around the panel widths, any B layout.
    #[test]
    fn gemm_packed_b_matches_reference(
        m in 0usize..70,
        n in 0usize..70,
        k in 0usize..300,
        ta in any::<bool>(),
        tb in any::<bool>(),
        pad_b in 0usize..3,
        ab in prop::sample::select(vec![(1.0f32, 0.0f32), (0.5, 1.0), (-1.5, 0.0)]),
        bias in any::<bool>(),
    ) {
        let case = Case {
            la: Layout { transposed: ta, pad: 1 },
            lb: Layout { transposed: tb, pad: pad_b },
            alpha: ab.0,
            beta: ab.1,
            bias,
            packed_b: true,
            ..Case::plain(m, n, k)
        };
        for level in cpu::supported_levels() {
            if let Err(e) = run_case(Some(level), case) {
                prop_assert!(false, "{}", e);
            }
        }
    }
}

/// One packed B serves many products (as a recurrent kernel serves every time
/// step). These products take the small path in `sgemm_with_level`, which packs
/// B itself (wholly, or per task of column panels) or reads it in place (B
/// stored contiguous and small), with the same K blocks: the bits must agree;
/// products also match the reference. The 256-row products run as several row
/// tasks.
#[test]
fn gemm_packed_b_is_reused_across_products() {
    for level in cpu::supported_levels() {
        for ((k, n), transposed) in [(128, 64), (784, 64), (512, 48), (40, 64)]
            .into_iter()
            .flat_map(|kn| [(kn, true), (kn, false)])
        {
            let b_data = values(n * k, 7);
            let b = if transposed {
                MatRef::row_major(&b_data, n, k).unwrap().t()
            } else {
                MatRef::row_major(&b_data, k, n).unwrap()
            };
            let mut buf = vec![f32::NAN; PackedB::buffer_len(level, k, n)];
            let packed = PackedB::new(level, b, &mut buf).unwrap();
            assert_eq!(packed.level(), level);
            for (step, m) in [n, n + 6, 256].into_iter().enumerate() {
                let a_data = values(m * k, 10 + step as u64);
                let a = MatRef::row_major(&a_data, m, k).unwrap();
                let none = Epilogue::default();
                let mut got = vec![0.0; m * n];
                let c = MatMut::row_major(&mut got, m, n).unwrap();
                sgemm_packed(1.0, a, &packed, 0.0, c, &none).unwrap();
                let mut plain = vec![0.0; m * n];
                let c = MatMut::row_major(&mut plain, m, n).unwrap();
                sgemm_with_level(level, 1.0, a, b, 0.0, c, &none).unwrap();
                let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                assert_eq!(
                    bits(&got),
                    bits(&plain),
                    "{}: {m} x {n} x {k}, B transposed {transposed}",
                    level.name()
                );
                let mut want = vec![0.0; m * n];
                let c = MatMut::row_major(&mut want, m, n).unwrap();
                sgemm_reference(1.0, a, b, 0.0, c, &none).unwrap();
                for (g, w) in got.iter().zip(&want) {
                    let tol = 2e-6 * k as f32 + 1e-6;
                    assert!((g - w).abs() <= tol, "{}: {g} vs {w}", level.name());
                }
            }
        }
    }
}

#[test]
fn gemm_packed_b_errors_instead_of_panicking() {
    let level = cpu::active();
    let b_data = values(6 * 20, 1);
    let b = MatRef::row_major(&b_data, 6, 20).unwrap();
    let mut short = vec![0.0; PackedB::buffer_len(level, 6, 20) - 1];
    assert!(matches!(
        PackedB::new(level, b, &mut short),
        Err(KernelError::BufferTooSmall { .. })
    ));
    let mut buf = vec![0.0; PackedB::buffer_len(level, 6, 20)];
    let packed = PackedB::new(level, b, &mut buf).unwrap();
    let a_data = values(3 * 5, 2);
    let a = MatRef::row_major(&a_data, 3, 5).unwrap();
    let mut c = vec![0.0; 3 * 20];
    let err = sgemm_packed(
        1.0,
        a,
        &packed,
        0.0,
        MatMut::row_major(&mut c, 3, 20).unwrap(),
        &Epilogue::default(),
    );
    assert!(
        matches!(err, Err(KernelError::ShapeMismatch { .. })),
        "{err:?}"
    );
    // A broadcast view far larger than its one element: refused, not wrapped around.
    let huge = MatRef::new(&b_data, usize::MAX / 8, 64, 0, 0).unwrap();
    assert_eq!(PackedB::buffer_len(level, huge.rows, huge.cols), usize::MAX);
    assert!(matches!(
        PackedB::new(level, huge, &mut buf),
        Err(KernelError::InvalidArgument { .. })
    ));
    for unsupported in [SimdLevel::Avx2Fma, SimdLevel::Avx512] {
        if !unsupported.is_supported() {
            let mut buf = vec![0.0; 4096];
            assert!(matches!(
                PackedB::new(unsupported, b, &mut buf),
                Err(KernelError::InvalidArgument { .. })
            ));
        }
    }
}

/// Rows of strips shorter than the kernel's tile (a product of 32 or 31 rows with
/// 6-row tiles, cut into strips of 5 and 6 rows or one of 2 or 1) come out with
/// the bits the same rows get inside full tiles (a product of 36): A row-major on
/// the small path, and A read through its columns, as a weight gradient's `Xᵀ`,
/// over a K long enough to stream it.
#[test]
fn gemm_partial_strips_give_the_bits_of_full_tiles() {
    for level in cpu::supported_levels() {
        for (k, n, transposed) in [
            (32, 128, false),
            (128, 512, false),
            (7, 16, false),
            (3200, 128, true),
            (300, 96, true),
        ] {
            let a_data = values(36 * k, 1);
            let b_data = values(k * n, 2);
            let b = MatRef::row_major(&b_data, k, n).unwrap();
            let none = Epilogue::default();
            let product = |m: usize| {
                let a = if transposed {
                    // The first m columns of a k x 36 matrix, transposed.
                    MatRef::new(&a_data, k, m, 36, 1).unwrap().t()
                } else {
                    MatRef::row_major(&a_data[..m * k], m, k).unwrap()
                };
                let mut c = vec![0.0f32; m * n];
                let out = MatMut::row_major(&mut c, m, n).unwrap();
                sgemm_with_level(level, 1.0, a, b, 0.0, out, &none).unwrap();
                c.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
            };
            for m in [32, 31, 1] {
                assert_eq!(
                    product(m)[..],
                    product(36)[..m * n],
                    "{}: {m} x {n} x {k}, A transposed: {transposed}",
                    level.name()
                );
            }
        }
    }
}

// `sgemm_gathered`: A's rows gathered from offsets, against the reference on the
// same rows copied into a matrix.

#[derive(Clone, Copy, Debug)]
struct GatheredCase {
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
fn gathered_offset(case: &GatheredCase, len: usize, i: usize, t: usize) -> usize {
    let h = (i * 7919 + t * 104_729 + case.seed as usize * 31).wrapping_mul(2_654_435_761) >> 7;
    if case.zero_every > 0 && h.is_multiple_of(case.zero_every) {
        GATHER_ZEROS
    } else {
        h % (len - case.width + 1)
    }
}

fn check_gathered(case: GatheredCase) {
    let GatheredCase {
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
                *o = gathered_offset(&case, source.len(), first + i, t);
            }
        }
    };
    // The same rows copied into a matrix, for the reference.
    let mut a = vec![0.0f32; m * k];
    for i in 0..m {
        for t in 0..taps {
            let o = gathered_offset(&case, source.len(), i, t);
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
        check_gathered(GatheredCase { m, n, taps, width, zero_every, beta, bias, activation, seed });
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
            check_gathered(GatheredCase {
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

/// Both orders of the tiles, each with bias and activation (applied per strip or
/// once at the end) on an accumulated C: a B of two panels of 64 rows fits in L1
/// and is met strip by strip; one of three panels of 96 rows does not, and each
/// panel meets every strip in turn (at 32- and 16-column panels alike).
#[test]
fn gathered_rows_in_either_order_of_tiles_match() {
    for (n, taps, width) in [(64, 2, 32), (96, 3, 32), (40, 8, 300)] {
        for activation in [false, true] {
            check_gathered(GatheredCase {
                m: 50,
                n,
                taps,
                width,
                zero_every: 0,
                beta: 0.5,
                bias: true,
                activation,
                seed: 12,
            });
        }
    }
}

/// The bias the kernels add in their stores gives the bits of the product
/// followed by `x += bias[j]`, as a separate pass over C adds it: at every level,
/// C overwritten or accumulated, full and partial panels, both orders of tiles.
#[test]
fn gathered_rows_add_the_bias_as_a_separate_pass_would() {
    for (m, n, taps, width) in [
        (23, 40, 2, 64),
        (13, 37, 3, 32),
        (20, 96, 3, 32),
        (7, 5, 1, 9),
    ] {
        let k = taps * width;
        let source = values(m * k + 7, 21);
        let offsets = |first: usize, out: &mut [usize]| {
            for (i, o) in out.iter_mut().enumerate() {
                *o = ((first * taps + i) * width * 7) % (source.len() - width);
            }
        };
        let rows = GatheredRows {
            source: &source,
            rows: m,
            taps,
            width,
            offsets,
        };
        let b_data = values(k * n, 22);
        let b = MatRef::row_major(&b_data, k, n).unwrap();
        let bias = values(n, 23);
        let c0 = values(m * n, 24);
        for level in cpu::supported_levels() {
            let mut buf = vec![0.0; PackedB::buffer_len(level, k, n)];
            let packed = PackedB::new(level, b, &mut buf).unwrap();
            for beta in [0.0f32, 0.75] {
                let (mut fused, mut separate) = (c0.clone(), c0.clone());
                let with_bias = Epilogue {
                    bias: Some(&bias),
                    activation: None,
                };
                let c = MatMut::row_major(&mut fused, m, n).unwrap();
                sgemm_gathered(&rows, &packed, beta, c, &with_bias).unwrap();
                let c = MatMut::row_major(&mut separate, m, n).unwrap();
                sgemm_gathered(&rows, &packed, beta, c, &Epilogue::default()).unwrap();
                for row in separate.chunks_exact_mut(n) {
                    for (x, b) in row.iter_mut().zip(&bias) {
                        *x += *b;
                    }
                }
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(
                    bits(&fused),
                    bits(&separate),
                    "{}: {m} x {n}, {taps} taps of {width}, beta {beta}",
                    level.name()
                );
            }
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
    // Only the last row's segments past the end, several strips after the first:
    // the error names the row, and C is as it was.
    let mut c13 = values(13 * 5, 3);
    let before = c13.clone();
    let last_bad = GatheredRows {
        source: &source,
        rows: 13,
        taps: 2,
        width: 3,
        offsets: |first: usize, out: &mut [usize]| {
            for (i, row) in out.chunks_exact_mut(2).enumerate() {
                row.fill(if first + i == 12 { 18 } else { 0 });
            }
        },
    };
    let c_view = MatMut::row_major(&mut c13, 13, 5).unwrap();
    let err = sgemm_gathered(&last_bad, &packed, 0.0, c_view, &none).unwrap_err();
    assert!(
        matches!(&err, KernelError::InvalidArgument { message, .. } if message.contains("row 12")),
        "{err:?}"
    );
    assert_eq!(c13, before);
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
