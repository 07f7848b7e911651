//! Recurrent layers over whole sequences, forward and backward through time, on
//! the LSTMs of the question-answering model (batch 128, 100 steps, 32 and 16
//! units) and of the ticket model (batch 32: 10 steps of 128 units, 100 of 32),
//! and GRUs (reset after and before) and a SimpleRNN of the same size as the first.
//!
//! Throughput is declared in flops of the recurrent GEMMs (`2 * batch * steps *
//! units * gates * units` per pass), so criterion's `Gelem/s` reads as GFLOP/s of
//! them; the gate nonlinearities come on top. Run one thread count at a time, e.g.
//! `PYFUNCNET_NUM_THREADS=1 cargo bench -p pyfuncnet-benches --bench rnn`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use pyfuncnet_benches::values;
use pyfuncnet_kernels::rnn::{
    self, Cell, Projection, RnnGradInputs, RnnGradOutputs, RnnInputs, RnnOutputs, RnnSpec,
};
use pyfuncnet_kernels::unary::Unary;

const CASES: [(&str, Cell, usize, usize, usize); 7] = [
    ("qa_text_lstm32", Cell::Lstm, 128, 100, 32),
    ("qa_question_lstm16", Cell::Lstm, 128, 100, 16),
    ("ticket_title_lstm128", Cell::Lstm, 32, 10, 128),
    ("ticket_body_lstm32", Cell::Lstm, 32, 100, 32),
    ("gru32", Cell::Gru { reset_after: true }, 128, 100, 32),
    (
        "gru_reset_before32",
        Cell::Gru { reset_after: false },
        128,
        100,
        32,
    ),
    ("simple_rnn32", Cell::Simple, 128, 100, 32),
];

fn recurrent(c: &mut Criterion) {
    for (name, cell, batch, steps, units) in CASES {
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
        let (g, w, bu, btu) = (
            spec.gate_width(),
            spec.workspace_width(),
            batch * units,
            batch * steps * units,
        );
        // Small values keep the gates away from saturation, as trained layers are.
        let scaled = |n, seed| {
            values(n, seed)
                .into_iter()
                .map(|v| v * 0.3)
                .collect::<Vec<f32>>()
        };
        let (xp, r, rb) = (
            scaled(batch * steps * g, 1),
            scaled(units * g, 2),
            scaled(g, 3),
        );
        let lstm = cell.has_cell_state();
        let (mut seq, mut h, mut cl) = (vec![0.0; btu], vec![0.0; bu], vec![0.0; bu]);
        let (mut ws, mut hp) = (vec![0.0; batch * steps * w], vec![0.0; btu]);
        let d_seq = scaled(btu, 4);
        let (mut d_xp, mut d_r, mut d_rb) = (
            vec![0.0; batch * steps * g],
            vec![0.0; units * g],
            vec![0.0; g],
        );
        let (mut d_h0, mut d_c0) = (vec![0.0; bu], vec![0.0; bu]);
        let inputs = RnnInputs {
            projection: Projection::Computed(&xp),
            recurrent_kernel: &r,
            recurrent_bias: cell.has_recurrent_bias().then_some(&rb[..]),
            h0: None,
            c0: None,
            mask: None,
        };
        let mut group = c.benchmark_group("rnn");
        group
            .sample_size(10)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(2))
            .throughput(Throughput::Elements(spec.recurrent_flops() as u64));
        group.bench_with_input(BenchmarkId::new("forward", name), &(), |b, _| {
            {
                b.iter(|| {
                    let out = RnnOutputs {
                        sequence: Some(&mut seq),
                        h_last: &mut h,
                        c_last: lstm.then_some(&mut cl[..]),
                        workspace: &mut ws,
                        h_prev: &mut hp,
                    };
                    rnn::rnn_forward(&spec, black_box(&inputs), out).unwrap()
                })
            }
        });
        group.bench_with_input(BenchmarkId::new("backward", name), &(), |b, _| {
            {
                b.iter(|| {
                    let x = RnnGradInputs {
                        recurrent_kernel: &r,
                        mask: None,
                        workspace: &ws,
                        h_prev: &hp,
                        d_sequence: Some(black_box(&d_seq)),
                        d_h_last: None,
                        d_c_last: None,
                        initial_state_gradient: false,
                    };
                    let out = RnnGradOutputs {
                        d_xp: &mut d_xp,
                        d_recurrent_kernel: &mut d_r,
                        d_recurrent_bias: cell.has_recurrent_bias().then_some(&mut d_rb[..]),
                        d_h0: &mut d_h0,
                        d_c0: lstm.then_some(&mut d_c0[..]),
                    };
                    rnn::rnn_backward(&spec, &x, out).unwrap()
                })
            }
        });
        group.finish();
    }
}

criterion_group!(benches, recurrent);
criterion_main!(benches);
