//! Independent branches: the executor runs chains of small nodes side by side,
//! with the same results as a float64 reference and bitwise the same results for
//! any thread count (own test binary: it changes the global thread count).

mod common;

use pyfuncnet_graph::optim::{OptimizerConfig, OptimizerState};
use pyfuncnet_graph::program::{CompiledStep, Mode, Variables};
use pyfuncnet_graph::tensor::{DataRef, TensorRef};
use pyfuncnet_kernels::par;

const BATCH: usize = 32;
const FEATURES: usize = 128;
const UNITS: usize = 64;
const TOWERS: usize = 6;

fn inputs_for<'a>(
    x: &'a [f32],
    y: &'a [i32],
    shapes: &'a ([usize; 2], [usize; 1]),
) -> [TensorRef<'a>; 2] {
    [
        TensorRef::new_f32(&shapes.0, x),
        TensorRef {
            shape: &shapes.1,
            data: DataRef::I32(y),
        },
    ]
}

/// Sum over towers of tanh(x W_t + b_t), in float64.
fn reference(x: &[f32], vars: &Variables) -> Vec<f64> {
    let mut out = vec![0.0f64; BATCH * UNITS];
    for t in 0..TOWERS {
        let (w, b) = (&vars.values[2 * t], &vars.values[2 * t + 1]);
        for r in 0..BATCH {
            for u in 0..UNITS {
                let mut z = b[u] as f64;
                for f in 0..FEATURES {
                    z += x[r * FEATURES + f] as f64 * w[f * UNITS + u] as f64;
                }
                out[r * UNITS + u] += z.tanh();
            }
        }
    }
    out
}

fn train(threads: usize) -> (Vec<Vec<f32>>, Vec<f32>, usize) {
    par::set_num_threads(threads).unwrap();
    par::watch_machine_load(false);
    let spec = common::towers_spec(BATCH, FEATURES, UNITS, TOWERS);
    let mut step = CompiledStep::compile(&spec, Mode::Train).unwrap();
    let parallel = step.executor().parallel_stages();
    let mut vars = common::towers_variables(FEATURES, UNITS, TOWERS);
    let config = OptimizerConfig::from_json(&serde_json::json!({"name": "adam"})).unwrap();
    let sizes: Vec<usize> = vars.values.iter().map(Vec::len).collect();
    let mut state = OptimizerState::new(&config, &sizes);
    let mut losses = Vec::new();
    let shapes = ([BATCH, FEATURES], [BATCH]);
    for s in 0..3 {
        let (x, y) = common::mlp_batch(BATCH, FEATURES, 50 + s);
        let inputs = inputs_for(&x, &y, &shapes);
        step.train(&inputs, &mut vars, &config, &mut state, 1e-2)
            .unwrap();
        losses.push(step.loss().unwrap());
    }
    (vars.values, losses, parallel)
}

#[test]
fn branches_run_side_by_side_and_match_the_reference() {
    let spec = common::towers_spec(BATCH, FEATURES, UNITS, TOWERS);
    let mut step = CompiledStep::compile(&spec, Mode::Predict).unwrap();
    // The towers form one stage of small GEMMs: at least one stage runs them as
    // several tasks.
    assert!(step.executor().parallel_stages() >= 1);
    let vars = common::towers_variables(FEATURES, UNITS, TOWERS);
    let (x, y) = common::mlp_batch(BATCH, FEATURES, 7);
    let shapes = ([BATCH, FEATURES], [BATCH]);
    let inputs = inputs_for(&x, &y, &shapes);
    for threads in [1, 2, 3] {
        par::set_num_threads(threads).unwrap();
        par::watch_machine_load(false);
        step.run(&inputs, &vars, 0).unwrap();
        let DataRef::F32(got) = step.output(0).data else {
            panic!("float output expected")
        };
        for (g, w) in got.iter().zip(reference(&x, &vars)) {
            assert!(
                (*g as f64 - w).abs() <= 1e-4 * (1.0 + w.abs()),
                "{g} vs {w}"
            );
        }
    }

    let (w1, l1, parallel) = train(1);
    assert!(
        parallel >= 2,
        "forward and backward stages run tasks side by side"
    );
    assert!(l1[2] < l1[0], "the loss falls: {l1:?}");
    for threads in [2, 3] {
        let (w, l, _) = train(threads);
        assert_eq!(l, l1, "losses differ with {threads} threads");
        for (a, b) in w.iter().zip(&w1) {
            assert!(
                a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()),
                "weights differ with {threads} threads"
            );
        }
    }
}
