//! The recurrent kernels against a step-by-step float64 reference written from
//! Keras's cell equations, and their gradients against central differences of it.

use super::*;
use proptest::prelude::*;

fn f64_act(a: Unary, x: f64) -> f64 {
    match a {
        Unary::Sigmoid => 1.0 / (1.0 + (-x).exp()),
        Unary::Tanh => x.tanh(),
        Unary::Relu => x.max(0.0),
        Unary::HardSigmoid => (x / 6.0 + 0.5).clamp(0.0, 1.0),
        Unary::Linear => x,
        other => panic!("no reference for {other:?}"),
    }
}

/// Inputs as f64 vectors, in the kernels' layouts.
#[derive(Clone, Debug)]
struct Case {
    spec: RnnSpec,
    xp: Vec<f64>,
    r: Vec<f64>,
    rb: Option<Vec<f64>>,
    h0: Vec<f64>,
    c0: Option<Vec<f64>>,
    mask: Option<Vec<f64>>,
    /// Weights of the scalar loss: sequence, last state, last cell state.
    w_seq: Option<Vec<f64>>,
    w_h: Option<Vec<f64>>,
    w_c: Option<Vec<f64>>,
}

struct RefOut {
    seq: Vec<f64>,
    h: Vec<f64>,
    c: Vec<f64>,
}

/// Keras's equations, one row and one step at a time.
fn reference(c: &Case) -> RefOut {
    let s = &c.spec;
    let (b, t_len, u, g) = (s.batch, s.steps, s.units, s.gate_width());
    let (ra, a) = (s.recurrent_activation, s.activation);
    let mut seq = vec![0.0; b * t_len * u];
    let mut h = c.h0.clone();
    let mut cs = c.c0.clone().unwrap_or_default();
    for bi in 0..b {
        for step in 0..t_len {
            let t = if s.go_backwards {
                t_len - 1 - step
            } else {
                step
            };
            let active = c.mask.as_ref().is_none_or(|m| m[bi * t_len + t] != 0.0);
            let hp: Vec<f64> = h[bi * u..(bi + 1) * u].to_vec();
            let x = &c.xp[(bi * t_len + t) * g..][..g];
            // rec[k] = sum_i hp[i] R[i, k] (over columns `cols`), with `v` as the left operand.
            let mat = |v: &[f64], k: usize| (0..u).map(|i| v[i] * c.r[i * g + k]).sum::<f64>();
            let mut new_h = vec![0.0; u];
            match s.cell {
                Cell::Lstm => {
                    for j in 0..u {
                        let z = |q: usize| x[q * u + j] + mat(&hp, q * u + j);
                        let (i, f, gg, o) = (
                            f64_act(ra, z(0)),
                            f64_act(ra, z(1)),
                            f64_act(a, z(2)),
                            f64_act(ra, z(3)),
                        );
                        let cv = f * cs[bi * u + j] + i * gg;
                        if active {
                            cs[bi * u + j] = cv;
                        }
                        new_h[j] = o * f64_act(a, cv);
                    }
                }
                Cell::Gru { reset_after } => {
                    let rb = c.rb.clone().unwrap_or(vec![0.0; g]);
                    let rh: Vec<f64> = (0..u)
                        .map(|j| f64_act(ra, x[u + j] + mat(&hp, u + j) + rb[u + j]) * hp[j])
                        .collect();
                    for j in 0..u {
                        let z = f64_act(ra, x[j] + mat(&hp, j) + rb[j]);
                        let r = f64_act(ra, x[u + j] + mat(&hp, u + j) + rb[u + j]);
                        let hh = if reset_after {
                            f64_act(a, x[2 * u + j] + r * (mat(&hp, 2 * u + j) + rb[2 * u + j]))
                        } else {
                            f64_act(a, x[2 * u + j] + mat(&rh, 2 * u + j))
                        };
                        new_h[j] = z * hp[j] + (1.0 - z) * hh;
                    }
                }
                Cell::Simple => {
                    for j in 0..u {
                        new_h[j] = f64_act(a, x[j] + mat(&hp, j));
                    }
                }
            }
            if active {
                h[bi * u..(bi + 1) * u].copy_from_slice(&new_h);
            }
            if active || !s.zero_output_for_mask {
                seq[(bi * t_len + step) * u..][..u].copy_from_slice(&h[bi * u..(bi + 1) * u]);
            }
        }
    }
    RefOut { seq, h, c: cs }
}

fn loss(c: &Case) -> f64 {
    let o = reference(c);
    let dot = |w: &Option<Vec<f64>>, v: &[f64]| {
        w.as_ref()
            .map_or(0.0, |w| w.iter().zip(v).map(|(p, q)| p * q).sum())
    };
    dot(&c.w_seq, &o.seq) + dot(&c.w_h, &o.h) + dot(&c.w_c, &o.c)
}

fn f32s(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

struct KernelOut {
    seq: Vec<f32>,
    h: Vec<f32>,
    c: Vec<f32>,
    d_xp: Vec<f32>,
    d_r: Vec<f32>,
    d_rb: Vec<f32>,
    d_h0: Vec<f32>,
    d_c0: Vec<f32>,
}

fn run_kernels(level: SimdLevel, c: &Case) -> KernelOut {
    let s = &c.spec;
    let (b, t, u, g, w) = (
        s.batch,
        s.steps,
        s.units,
        s.gate_width(),
        s.workspace_width(),
    );
    let (xp, r, h0) = (f32s(&c.xp), f32s(&c.r), f32s(&c.h0));
    let rb = c.rb.as_deref().map(f32s);
    let c0 = c.c0.as_deref().map(f32s);
    let mask = c.mask.as_deref().map(f32s);
    let lstm = s.cell.has_cell_state();
    // Garbage in every output buffer: the kernels must write each element.
    let mut seq = vec![f32::NAN; b * t * u];
    let mut h = vec![f32::NAN; b * u];
    let mut cl = vec![f32::NAN; if lstm { b * u } else { 0 }];
    let mut ws = vec![f32::NAN; b * t * w];
    let mut hp = vec![f32::NAN; b * t * u];
    let inputs = RnnInputs {
        projection: Projection::Computed(&xp),
        recurrent_kernel: &r,
        recurrent_bias: rb.as_deref(),
        h0: Some(&h0),
        c0: c0.as_deref(),
        mask: mask.as_deref(),
    };
    let outputs = RnnOutputs {
        sequence: Some(&mut seq),
        h_last: &mut h,
        c_last: lstm.then_some(&mut cl[..]),
        workspace: &mut ws,
        h_prev: &mut hp,
    };
    rnn_forward_with_level(level, s, &inputs, outputs).unwrap();
    // Without the output sequence, every other output is bitwise the same.
    let (mut h2, mut cl2, mut ws2, mut hp2) = (
        vec![f32::NAN; h.len()],
        vec![f32::NAN; cl.len()],
        vec![f32::NAN; ws.len()],
        vec![f32::NAN; hp.len()],
    );
    let outputs = RnnOutputs {
        sequence: None,
        h_last: &mut h2,
        c_last: lstm.then_some(&mut cl2[..]),
        workspace: &mut ws2,
        h_prev: &mut hp2,
    };
    rnn_forward_with_level(level, s, &inputs, outputs).unwrap();
    let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&h2), bits(&h), "last state without the sequence");
    assert_eq!(
        bits(&cl2),
        bits(&cl),
        "last cell state without the sequence"
    );
    assert_eq!(bits(&ws2), bits(&ws), "workspace without the sequence");
    assert_eq!(
        bits(&hp2),
        bits(&hp),
        "previous states without the sequence"
    );
    let (ds, dh, dc) = (
        c.w_seq.as_deref().map(f32s),
        c.w_h.as_deref().map(f32s),
        c.w_c.as_deref().map(f32s),
    );
    let mut d_xp = vec![f32::NAN; b * t * g];
    let mut d_r = vec![f32::NAN; u * g];
    let mut d_rb = vec![f32::NAN; if s.cell.has_recurrent_bias() { g } else { 0 }];
    let mut d_h0 = vec![f32::NAN; b * u];
    let mut d_c0 = vec![f32::NAN; if lstm { b * u } else { 0 }];
    let grad_in = RnnGradInputs {
        recurrent_kernel: &r,
        mask: mask.as_deref(),
        workspace: &ws,
        h_prev: &hp,
        d_sequence: ds.as_deref(),
        d_h_last: dh.as_deref(),
        d_c_last: if lstm { dc.as_deref() } else { None },
        initial_state_gradient: true,
    };
    let grad_out = RnnGradOutputs {
        d_xp: &mut d_xp,
        d_recurrent_kernel: &mut d_r,
        d_recurrent_bias: s.cell.has_recurrent_bias().then_some(&mut d_rb[..]),
        d_h0: &mut d_h0,
        d_c0: lstm.then_some(&mut d_c0[..]),
    };
    rnn_backward_with_level(level, s, &grad_in, grad_out).unwrap();
    KernelOut {
        seq,
        h,
        c: cl,
        d_xp,
        d_r,
        d_rb,
        d_h0,
        d_c0,
    }
}

fn close(what: &str, got: &[f32], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g as f64 - w).abs() <= tol * (1.0 + w.abs()),
            "{what}[{i}]: got {g}, want {w}"
        );
    }
}

/// Central differences of the reference loss with respect to one input vector.
fn numeric_grad(c: &Case, pick: fn(&mut Case) -> &mut Vec<f64>) -> Vec<f64> {
    let n = pick(&mut c.clone()).len();
    (0..n)
        .map(|i| {
            let eps = 1e-6;
            let mut hi = c.clone();
            pick(&mut hi)[i] += eps;
            let mut lo = c.clone();
            pick(&mut lo)[i] -= eps;
            (loss(&hi) - loss(&lo)) / (2.0 * eps)
        })
        .collect()
}

fn check_case(c: &Case, grads: bool) {
    let want = reference(c);
    for level in cpu::supported_levels() {
        let got = run_kernels(level, c);
        let tag = format!("{:?} at {level:?}", c.spec);
        close(&format!("sequence {tag}"), &got.seq, &want.seq, 2e-5);
        close(&format!("last state {tag}"), &got.h, &want.h, 2e-5);
        if c.spec.cell.has_cell_state() {
            close(&format!("last cell state {tag}"), &got.c, &want.c, 2e-5);
        }
        if !grads {
            continue;
        }
        close(
            &format!("d_xp {tag}"),
            &got.d_xp,
            &numeric_grad(c, |c| &mut c.xp),
            2e-4,
        );
        close(
            &format!("d_r {tag}"),
            &got.d_r,
            &numeric_grad(c, |c| &mut c.r),
            2e-4,
        );
        close(
            &format!("d_h0 {tag}"),
            &got.d_h0,
            &numeric_grad(c, |c| &mut c.h0),
            2e-4,
        );
        if c.spec.cell.has_cell_state() {
            close(
                &format!("d_c0 {tag}"),
                &got.d_c0,
                &numeric_grad(c, |c| c.c0.as_mut().unwrap()),
                2e-4,
            );
        }
        if c.spec.cell.has_recurrent_bias() {
            close(
                &format!("d_rb {tag}"),
                &got.d_rb,
                &numeric_grad(c, |c| c.rb.as_mut().unwrap()),
                2e-4,
            );
        }
    }
}

fn cells() -> impl Strategy<Value = Cell> {
    prop_oneof![
        Just(Cell::Lstm),
        Just(Cell::Gru { reset_after: true }),
        Just(Cell::Gru { reset_after: false }),
        Just(Cell::Simple),
    ]
}

/// Values on a 1/64 grid in [-1, 1] (exact in f32, so the reference sees what
/// the kernel sees).
fn grid(len: usize, seed: u64) -> Vec<f64> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) % 129) as f64 / 64.0 - 1.0
        })
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn make_case(
    cell: Cell,
    (batch, steps, units): (usize, usize, usize),
    acts: (Unary, Unary),
    go_backwards: bool,
    masked: bool,
    zero_output_for_mask: bool,
    outputs: (bool, bool, bool),
    seed: u64,
) -> Case {
    let spec = RnnSpec {
        cell,
        batch,
        steps,
        units,
        activation: acts.1,
        recurrent_activation: acts.0,
        go_backwards,
        zero_output_for_mask,
    };
    let (g, bu) = (spec.gate_width(), batch * units);
    let mask = masked.then(|| {
        grid(batch * steps, seed + 5)
            .into_iter()
            .map(|v| if v < -0.3 { 0.0 } else { 1.0 })
            .collect()
    });
    Case {
        spec,
        xp: grid(batch * steps * g, seed),
        r: grid(units * g, seed + 1),
        rb: cell.has_recurrent_bias().then(|| grid(g, seed + 2)),
        h0: grid(bu, seed + 3),
        c0: cell.has_cell_state().then(|| grid(bu, seed + 4)),
        mask,
        w_seq: outputs.0.then(|| grid(batch * steps * units, seed + 6)),
        w_h: outputs.1.then(|| grid(bu, seed + 7)),
        w_c: (outputs.2 && cell.has_cell_state()).then(|| grid(bu, seed + 8)),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn forward_and_gradients_match_the_reference(
        cell in cells(),
        batch in 0usize..5,
        steps in 0usize..5,
        units in 1usize..7,
        fast in any::<bool>(),
        go_backwards in any::<bool>(),
        masked in any::<bool>(),
        zero_output in any::<bool>(),
        outputs in (any::<bool>(), any::<bool>(), any::<bool>()),
        seed in 0u64..1000,
    ) {
        // The vectorised defaults, and the general path with other smooth ones.
        let acts = if fast { (Unary::Sigmoid, Unary::Tanh) } else { (Unary::Tanh, Unary::Sigmoid) };
        let c = make_case(cell, (batch, steps, units), acts, go_backwards, masked, zero_output, outputs, seed);
        check_case(&c, true);
    }

    #[test]
    fn piecewise_activations_match_the_reference(
        cell in cells(),
        batch in 1usize..4,
        steps in 1usize..5,
        units in 1usize..20,
        seed in 0u64..1000,
    ) {
        let c = make_case(cell, (batch, steps, units), (Unary::HardSigmoid, Unary::Relu), false, true, false, (true, true, true), seed);
        check_case(&c, false);
    }
}

#[test]
fn wide_layers_across_simd_widths_and_several_tasks() {
    // Units around the vector widths, and a batch that splits into tasks.
    for (i, cell) in [
        Cell::Lstm,
        Cell::Gru { reset_after: true },
        Cell::Gru { reset_after: false },
        Cell::Simple,
    ]
    .into_iter()
    .enumerate()
    {
        for units in [7, 8, 15, 16, 17, 33] {
            let c = make_case(
                cell,
                (3, 3, units),
                (Unary::Sigmoid, Unary::Tanh),
                i % 2 == 0,
                true,
                false,
                (true, true, true),
                units as u64,
            );
            check_case(&c, units <= 8);
        }
        let c = make_case(
            cell,
            (70, 6, 40),
            (Unary::Sigmoid, Unary::Tanh),
            false,
            true,
            false,
            (true, true, true),
            9,
        );
        assert!(!c.spec.single_task() || c.spec.recurrent_flops() < 2 * MIN_TASK_FLOPS);
        check_case(&c, false);
    }
}

/// Forward and backward of `c` at `level` with its initial state given as zeros
/// (`explicit`) or left out, the backward with or without the initial state's
/// gradient: the outputs' bits (forward: sequence, last states, workspace,
/// previous states; backward: the input projection's, recurrent kernel's and
/// bias's gradients, and `d_c0`).
fn zero_start_bits(level: SimdLevel, c: &Case, explicit: bool) -> Vec<Vec<u32>> {
    let s = &c.spec;
    let (b, t, u, g, w) = (
        s.batch,
        s.steps,
        s.units,
        s.gate_width(),
        s.workspace_width(),
    );
    let lstm = s.cell.has_cell_state();
    let (xp, r) = (f32s(&c.xp), f32s(&c.r));
    let rb = c.rb.as_deref().map(f32s);
    let mask = c.mask.as_deref().map(f32s);
    let zeros = vec![0.0f32; b * u];
    let mut seq = vec![f32::NAN; b * t * u];
    let mut h = vec![f32::NAN; b * u];
    let mut cl = vec![f32::NAN; if lstm { b * u } else { 0 }];
    let mut ws = vec![f32::NAN; b * t * w];
    let mut hp = vec![f32::NAN; b * t * u];
    let inputs = RnnInputs {
        projection: Projection::Computed(&xp),
        recurrent_kernel: &r,
        recurrent_bias: rb.as_deref(),
        h0: explicit.then_some(&zeros[..]),
        c0: (explicit && lstm).then_some(&zeros[..]),
        mask: mask.as_deref(),
    };
    let outputs = RnnOutputs {
        sequence: Some(&mut seq),
        h_last: &mut h,
        c_last: lstm.then_some(&mut cl[..]),
        workspace: &mut ws,
        h_prev: &mut hp,
    };
    rnn_forward_with_level(level, s, &inputs, outputs).unwrap();
    let ds = f32s(&grid(b * t * u, 11));
    let mut d_xp = vec![f32::NAN; b * t * g];
    let mut d_r = vec![f32::NAN; u * g];
    let mut d_rb = vec![f32::NAN; if s.cell.has_recurrent_bias() { g } else { 0 }];
    let mut d_h0 = vec![f32::NAN; b * u];
    let mut d_c0 = vec![f32::NAN; if lstm { b * u } else { 0 }];
    let grad_in = RnnGradInputs {
        recurrent_kernel: &r,
        mask: mask.as_deref(),
        workspace: &ws,
        h_prev: &hp,
        d_sequence: Some(&ds),
        d_h_last: None,
        d_c_last: None,
        initial_state_gradient: explicit,
    };
    let grad_out = RnnGradOutputs {
        d_xp: &mut d_xp,
        d_recurrent_kernel: &mut d_r,
        d_recurrent_bias: s.cell.has_recurrent_bias().then_some(&mut d_rb[..]),
        d_h0: &mut d_h0,
        d_c0: lstm.then_some(&mut d_c0[..]),
    };
    rnn_backward_with_level(level, s, &grad_in, grad_out).unwrap();
    // NaNs compare by their being NaN (a kernel with an infinity makes them).
    let bits = |x: &[f32]| {
        x.iter()
            .map(|v| if v.is_nan() { u32::MAX } else { v.to_bits() })
            .collect()
    };
    [&seq, &h, &cl, &ws, &hp, &d_xp, &d_r, &d_rb, &d_c0]
        .map(|v| bits(v))
        .to_vec()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// A layer without an initial state skips the first step's product by the
    /// recurrent kernel (a zero state's) and, backward, the last step's product
    /// that only feeds the initial state's gradient: bit for bit what zeros given
    /// as the initial state give, also for -0 inputs and when the kernel holds an
    /// infinity.
    #[test]
    fn a_zero_initial_state_skips_products_with_the_same_bits(
        cell in cells(),
        batch in 1usize..5,
        steps in 1usize..5,
        units in 1usize..20,
        go_backwards in any::<bool>(),
        masked in any::<bool>(),
        infinite in any::<bool>(),
        seed in 0u64..1000,
    ) {
        let mut c = make_case(cell, (batch, steps, units), (Unary::Sigmoid, Unary::Tanh), go_backwards, masked, false, (true, false, false), seed);
        if infinite {
            let at = seed as usize % c.r.len();
            c.r[at] = f64::INFINITY;
        }
        // Some -0 inputs: the product adds +0 to them.
        for x in c.xp.iter_mut().step_by(7) {
            *x = -0.0;
        }
        for level in cpu::supported_levels() {
            let given = zero_start_bits(level, &c, true);
            let left_out = zero_start_bits(level, &c, false);
            for (k, (a, b)) in given.iter().zip(&left_out).enumerate() {
                prop_assert!(a == b, "output {} of {:?} at {:?}", k, c.spec, level);
            }
        }
    }
}

#[test]
fn bad_arguments_are_errors() {
    let c = make_case(
        Cell::Lstm,
        (2, 3, 4),
        (Unary::Sigmoid, Unary::Tanh),
        false,
        false,
        false,
        (true, true, true),
        1,
    );
    let s = c.spec;
    let xp = f32s(&c.xp);
    let r = f32s(&c.r);
    let h0 = f32s(&c.h0);
    let mut out = [
        vec![0.0f32; 24],
        vec![0.0; 8],
        vec![0.0; 8],
        vec![0.0; 144],
        vec![0.0; 24],
    ];
    let [seq, h, cl, ws, hp] = &mut out;
    // No initial cell state for an LSTM.
    let inputs = RnnInputs {
        projection: Projection::Computed(&xp),
        recurrent_kernel: &r,
        recurrent_bias: None,
        h0: Some(&h0),
        c0: None,
        mask: None,
    };
    let o = RnnOutputs {
        sequence: Some(seq),
        h_last: h,
        c_last: Some(cl),
        workspace: ws,
        h_prev: hp,
    };
    assert!(rnn_forward(&s, &inputs, o).is_err());
    // A recurrent kernel of the wrong size.
    let c0 = h0.clone();
    let inputs = RnnInputs {
        projection: Projection::Computed(&xp),
        recurrent_kernel: &r[1..],
        recurrent_bias: None,
        h0: Some(&h0),
        c0: Some(&c0),
        mask: None,
    };
    let o = RnnOutputs {
        sequence: Some(seq),
        h_last: h,
        c_last: Some(cl),
        workspace: ws,
        h_prev: hp,
    };
    assert!(rnn_forward(&s, &inputs, o).is_err());
    // An activation whose derivative needs its input.
    let gelu = RnnSpec {
        activation: Unary::Gelu { approximate: false },
        ..s
    };
    let inputs = RnnInputs {
        projection: Projection::Computed(&xp),
        recurrent_kernel: &r,
        recurrent_bias: None,
        h0: Some(&h0),
        c0: Some(&c0),
        mask: None,
    };
    let o = RnnOutputs {
        sequence: Some(seq),
        h_last: h,
        c_last: Some(cl),
        workspace: ws,
        h_prev: hp,
    };
    let e = rnn_forward(&gelu, &inputs, o).unwrap_err().to_string();
    assert!(e.contains("gelu"), "{e}");
}

/// The forward outputs (sequence, last states, workspace, previous states) of `c`
/// at `level` with the given input projection.
fn forward_outputs(level: SimdLevel, c: &Case, projection: Projection) -> Result<[Vec<f32>; 5]> {
    let s = &c.spec;
    let (b, t, u, w) = (s.batch, s.steps, s.units, s.workspace_width());
    let (r, h0) = (f32s(&c.r), f32s(&c.h0));
    let rb = c.rb.as_deref().map(f32s);
    let c0 = c.c0.as_deref().map(f32s);
    let mask = c.mask.as_deref().map(f32s);
    let lstm = s.cell.has_cell_state();
    let mut out = [
        vec![f32::NAN; b * t * u],
        vec![f32::NAN; b * u],
        vec![f32::NAN; if lstm { b * u } else { 0 }],
        vec![f32::NAN; b * t * w],
        vec![f32::NAN; b * t * u],
    ];
    let [seq, h, cl, ws, hp] = &mut out;
    let inputs = RnnInputs {
        projection,
        recurrent_kernel: &r,
        recurrent_bias: rb.as_deref(),
        h0: Some(&h0),
        c0: c0.as_deref(),
        mask: mask.as_deref(),
    };
    let outputs = RnnOutputs {
        sequence: Some(seq),
        h_last: h,
        c_last: lstm.then_some(&mut cl[..]),
        workspace: ws,
        h_prev: hp,
    };
    rnn_forward_with_level(level, s, &inputs, outputs)?;
    Ok(out)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Projecting looked-up rows step by step gives the same bits as the projection
    /// computed beforehand by one product of the gathered rows (the unfused layer),
    /// which the tests above check against the reference.
    #[test]
    fn a_lookup_projection_runs_as_the_projection_computed_first(
        cell in cells(),
        batch in 1usize..40,
        steps in 1usize..5,
        units in 1usize..20,
        width in 1usize..40,
        count in 1usize..12,
        use_bias in any::<bool>(),
        go_backwards in any::<bool>(),
        masked in any::<bool>(),
        seed in 0u64..1000,
    ) {
        let c = make_case(
            cell,
            (batch, steps, units),
            (Unary::Sigmoid, Unary::Tanh),
            go_backwards,
            masked,
            false,
            (true, true, true),
            seed,
        );
        let g = c.spec.gate_width();
        let rows = f32s(&grid(count * width, seed + 11));
        let kernel = f32s(&grid(width * g, seed + 12));
        let bias = f32s(&grid(g, seed + 13));
        let bias = use_bias.then_some(&bias[..]);
        let positions: Vec<i32> = grid(batch * steps, seed + 14)
            .iter()
            .map(|v| ((v + 1.0) * 0.5 * count as f64) as i32 % count as i32)
            .collect();
        let lookup = LookupProjection { rows: &rows, width, positions: &positions, kernel: &kernel, bias };
        let gathered: Vec<f32> = positions
            .iter()
            .flat_map(|&p| rows[p as usize * width..][..width].iter().copied())
            .collect();
        let epilogue = Epilogue { bias, activation: None };
        for level in cpu::supported_levels() {
            let mut xp = vec![f32::NAN; batch * steps * g];
            gemm::sgemm_with_level(
                level,
                1.0,
                MatRef::row_major(&gathered, batch * steps, width).unwrap(),
                MatRef::row_major(&kernel, width, g).unwrap(),
                0.0,
                MatMut::row_major(&mut xp, batch * steps, g).unwrap(),
                &epilogue,
            )
            .unwrap();
            let want = forward_outputs(level, &c, Projection::Computed(&xp)).unwrap();
            let got = forward_outputs(level, &c, Projection::Lookup(lookup)).unwrap();
            for (what, (g, w)) in ["sequence", "h", "c", "workspace", "h_prev"].iter().zip(got.iter().zip(&want)) {
                let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                prop_assert_eq!(bits(g), bits(w), "{} at {:?}", what, level);
            }
        }
    }
}

#[test]
fn a_lookup_projection_checks_its_positions_and_lengths() {
    let c = make_case(
        Cell::Lstm,
        (2, 3, 4),
        (Unary::Sigmoid, Unary::Tanh),
        false,
        false,
        false,
        (true, true, true),
        1,
    );
    let (width, g) = (5, c.spec.gate_width());
    let rows = vec![0.5f32; 3 * width];
    let kernel = vec![0.25f32; width * g];
    let bias = vec![0.0f32; g];
    let level = cpu::active();
    let run = |positions: &[i32], rows: &[f32], width: usize, bias: &[f32]| {
        let lookup = LookupProjection {
            rows,
            width,
            positions,
            kernel: &kernel,
            bias: Some(bias),
        };
        forward_outputs(level, &c, Projection::Lookup(lookup)).map(|_| ())
    };
    let good = [0, 1, 2, 2, 1, 0];
    run(&good, &rows, width, &bias).unwrap();
    for (at, bad) in [(3, 3), (0, -1), (5, i32::MAX)] {
        let mut positions = good;
        positions[at] = bad;
        let e = run(&positions, &rows, width, &bias)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&format!("{bad}")) && e.contains("positions"),
            "{e}"
        );
    }
    // Too few positions, rows not a whole number of rows, no width, a short bias.
    assert!(run(&good[1..], &rows, width, &bias).is_err());
    assert!(run(&good, &rows[1..], width, &bias).is_err());
    assert!(run(&good, &rows, 0, &bias).is_err());
    assert!(run(&good, &rows, width, &bias[1..]).is_err());
}
