//! Recurrent layers forward (with the input projection computed beforehand or
//! step by step from looked-up rows) and backward are bitwise identical for 1, 2
//! and 3 threads. In its own test binary because it replaces the global thread pool.

mod common;

use pyfuncnet_kernels::par;
use pyfuncnet_kernels::rnn::{
    self, Cell, LookupProjection, Projection, RnnGradInputs, RnnGradOutputs, RnnInputs, RnnOutputs,
    RnnSpec,
};
use pyfuncnet_kernels::unary::Unary;

/// The shared values, halved: in [-0.5, 0.5).
fn values(len: usize, seed: u64) -> Vec<f32> {
    common::values(len, seed)
        .into_iter()
        .map(|v| v / 2.0)
        .collect()
}

fn run(threads: usize, spec: &RnnSpec) -> Vec<Vec<f32>> {
    par::set_num_threads(threads).unwrap();
    par::watch_machine_load(false);
    let (b, t, u, g, w) = (
        spec.batch,
        spec.steps,
        spec.units,
        spec.gate_width(),
        spec.workspace_width(),
    );
    let lstm = spec.cell.has_cell_state();
    let (xp, r, rb, h0, c0) = (
        values(b * t * g, 1),
        values(u * g, 2),
        values(g, 3),
        values(b * u, 4),
        values(b * u, 5),
    );
    let mask: Vec<f32> = values(b * t, 6)
        .iter()
        .map(|&v| if v < -0.3 { 0.0 } else { 1.0 })
        .collect();
    let (mut seq, mut h, mut c) = (vec![0.0; b * t * u], vec![0.0; b * u], vec![0.0; b * u]);
    let (mut ws, mut hp) = (vec![0.0; b * t * w], vec![0.0; b * t * u]);
    let mut inputs = RnnInputs {
        projection: Projection::Computed(&xp),
        recurrent_kernel: &r,
        recurrent_bias: spec.cell.has_recurrent_bias().then_some(&rb[..]),
        h0: Some(&h0),
        c0: lstm.then_some(&c0[..]),
        mask: Some(&mask),
    };
    let out = RnnOutputs {
        sequence: Some(&mut seq),
        h_last: &mut h,
        c_last: lstm.then_some(&mut c[..]),
        workspace: &mut ws,
        h_prev: &mut hp,
    };
    rnn::rnn_forward(spec, &inputs, out).unwrap();
    let d_seq = values(b * t * u, 7);
    let (mut d_xp, mut d_r, mut d_rb) = (vec![0.0; b * t * g], vec![0.0; u * g], vec![0.0; g]);
    let (mut d_h0, mut d_c0) = (vec![0.0; b * u], vec![0.0; b * u]);
    let grad_in = RnnGradInputs {
        recurrent_kernel: &r,
        mask: Some(&mask),
        workspace: &ws,
        h_prev: &hp,
        d_sequence: Some(&d_seq),
        d_h_last: Some(&h0),
        d_c_last: lstm.then_some(&c0[..]),
        initial_state_gradient: true,
    };
    let grad_out = RnnGradOutputs {
        d_xp: &mut d_xp,
        d_recurrent_kernel: &mut d_r,
        d_recurrent_bias: spec.cell.has_recurrent_bias().then_some(&mut d_rb[..]),
        d_h0: &mut d_h0,
        d_c0: lstm.then_some(&mut d_c0[..]),
    };
    rnn::rnn_backward(spec, &grad_in, grad_out).unwrap();
    // The same layer fed 37 looked-up rows of width 24.
    let (count, width) = (37, 24);
    let (rows, kernel) = (values(count * width, 8), values(width * g, 9));
    let positions: Vec<i32> = (0..b * t).map(|i| ((i * 7919) % count) as i32).collect();
    inputs.projection = Projection::Lookup(LookupProjection {
        rows: &rows,
        width,
        positions: &positions,
        kernel: &kernel,
        bias: Some(&rb),
    });
    let (mut seq2, mut h2, mut c2) = (vec![0.0; b * t * u], vec![0.0; b * u], vec![0.0; b * u]);
    let out = RnnOutputs {
        sequence: Some(&mut seq2),
        h_last: &mut h2,
        c_last: lstm.then_some(&mut c2[..]),
        workspace: &mut ws,
        h_prev: &mut hp,
    };
    rnn::rnn_forward(spec, &inputs, out).unwrap();
    vec![seq, h, c, d_xp, d_r, d_rb, d_h0, d_c0, seq2, h2, c2, ws, hp]
}

#[test]
fn recurrent_layers_are_bitwise_identical_for_1_2_and_3_threads() {
    // Batches that split into several row tasks (and one that does not).
    for cell in [
        Cell::Lstm,
        Cell::Gru { reset_after: true },
        Cell::Gru { reset_after: false },
        Cell::Simple,
    ] {
        for (batch, steps, units) in [(128, 12, 48), (70, 9, 40), (8, 5, 16)] {
            let spec = RnnSpec {
                cell,
                batch,
                steps,
                units,
                activation: Unary::Tanh,
                recurrent_activation: Unary::Sigmoid,
                go_backwards: false,
                zero_output_for_mask: false,
            };
            let one = run(1, &spec);
            for threads in [2, 3] {
                let many = run(threads, &spec);
                for (i, (a, b)) in one.iter().zip(&many).enumerate() {
                    assert!(
                        a.iter().zip(b).all(|(p, q)| p.to_bits() == q.to_bits()),
                        "result {i} of {spec:?} differs with {threads} threads"
                    );
                }
            }
        }
    }
}
