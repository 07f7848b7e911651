//! A compiled training step of an MLP: the loss falls, errors leave the weights
//! and optimizer state unchanged; an embedding table's step equals the optimizer's
//! step from the table's dense gradient.

mod common;

use pyfuncnet_graph::optim::{OptimizerConfig, OptimizerState};
use pyfuncnet_graph::program::{CompiledStep, Mode};
use pyfuncnet_graph::tensor::{DataRef, TensorRef};
use serde_json::json;

const DIMS: [usize; 4] = [784, 64, 64, 10];

fn adam() -> OptimizerConfig {
    OptimizerConfig::from_json(&json!({"name": "adam"})).unwrap()
}

/// Trains `spec` for `steps` Adam steps on one batch (labels from `seed`); returns
/// the losses, the weights and the optimizer's iteration count.
fn train(spec: &str, batch: usize, steps: usize, seed: u64) -> (Vec<f32>, Vec<Vec<f32>>, u64) {
    let mut step = CompiledStep::compile(spec, Mode::Train).unwrap();
    let mut vars = common::mlp_variables(&DIMS);
    let config = adam();
    let sizes: Vec<usize> = vars.values.iter().map(Vec::len).collect();
    let mut state = OptimizerState::new(&config, &sizes);
    let (x, y) = common::mlp_batch(batch, DIMS[0], seed);
    let (x_shape, y_shape) = ([batch, DIMS[0]], [batch]);
    let inputs = [
        TensorRef::new_f32(&x_shape, &x),
        TensorRef {
            shape: &y_shape,
            data: DataRef::I32(&y),
        },
    ];
    let losses = (0..steps)
        .map(|_| {
            step.train(&inputs, &mut vars, &config, &mut state, 1e-3)
                .unwrap();
            step.loss().unwrap()
        })
        .collect();
    (losses, vars.values, state.iterations)
}

#[test]
fn mlp_training_step_reduces_the_loss() {
    let batch = 32;
    let (losses, _, iterations) = train(&common::mlp_spec(batch, &DIMS), batch, 30, 7);
    // Ten classes: the first loss is near ln(10); memorising one batch drives it down.
    assert!(
        (losses[0] - 10f32.ln()).abs() < 1.0,
        "first loss {}",
        losses[0]
    );
    assert!(losses[29] < 0.5 * losses[0], "losses {losses:?}");
    assert_eq!(iterations, 30);
}

#[test]
fn layers_written_with_matmul_add_relu_fuse_into_dense() {
    // The fusion pass turns the primitive graph into the dense one: the same
    // kernels run in the same order, so the results are bitwise identical.
    let batch = 16;
    let spec = pyfuncnet_graph::spec::parse(&common::mlp_spec_primitive(batch, &DIMS)).unwrap();
    let mut fetches = spec.outputs.clone();
    fetches.extend(spec.loss);
    let plan = pyfuncnet_graph::plan::Plan::new(&spec.graph, &fetches);
    let ops: Vec<&str> = plan
        .order
        .iter()
        .map(|&i| spec.graph.nodes[i].op.name())
        .collect();
    assert_eq!(ops[..3], ["dense", "dense", "dense"], "planned ops {ops:?}");
    assert!(!ops.contains(&"matmul"), "planned ops {ops:?}");
    let fused = train(&common::mlp_spec_primitive(batch, &DIMS), batch, 5, 5);
    let dense = train(&common::mlp_spec(batch, &DIMS), batch, 5, 5);
    assert_eq!(fused.0, dense.0);
    assert_eq!(fused.1, dense.1);
    assert!(fused.0[4] < fused.0[0]);
}

#[test]
fn a_failed_step_changes_nothing() {
    let batch = 4;
    let mut step = CompiledStep::compile(&common::mlp_spec(batch, &DIMS), Mode::Train).unwrap();
    let mut vars = common::mlp_variables(&DIMS);
    let config = adam();
    let sizes: Vec<usize> = vars.values.iter().map(Vec::len).collect();
    let mut state = OptimizerState::new(&config, &sizes);
    let (x, mut y) = common::mlp_batch(batch, DIMS[0], 3);
    y[2] = 10; // a label outside [0, 10)
    let (x_shape, y_shape) = ([batch, DIMS[0]], [batch]);
    let inputs = [
        TensorRef::new_f32(&x_shape, &x),
        TensorRef {
            shape: &y_shape,
            data: DataRef::I32(&y),
        },
    ];
    let (vars_before, state_before) = (vars.values.clone(), state.clone());
    let err = step
        .train(&inputs, &mut vars, &config, &mut state, 1e-3)
        .unwrap_err();
    assert!(
        err.message.contains("10") && err.message.contains("position 2"),
        "{}",
        err.message
    );
    assert_eq!(vars.values, vars_before);
    assert_eq!(state, state_before);

    // A wrong input shape is refused before anything runs.
    let short_shape = [batch, 783];
    let short = [
        TensorRef::new_f32(&short_shape, &x[..batch * 783]),
        inputs[1],
    ];
    let err = step
        .train(&short, &mut vars, &config, &mut state, 1e-3)
        .unwrap_err();
    assert!(
        err.message.contains("(4, 784)") && err.message.contains("(4, 783)"),
        "{}",
        err.message
    );
    assert_eq!(vars.values, vars_before);
}

#[test]
fn weights_without_gradient_are_left_alone() {
    // loss = mean(x @ w0); w1 is trainable but unused: Keras skips it (no decay).
    let spec = json!({
        "inputs": [{"shape": [2, 3]}],
        "weights": [{"index": 0, "shape": [3, 1]}, {"index": 1, "shape": [2]}],
        "nodes": [{"op": "matmul", "inputs": [0, 1]}, {"op": "mean", "inputs": [3]}],
        "outputs": [],
        "loss": 4,
        "trainable": [0, 1],
    })
    .to_string();
    let mut step = CompiledStep::compile(&spec, Mode::Train).unwrap();
    let config = OptimizerConfig::from_json(&json!({"name": "sgd", "weight_decay": 0.5})).unwrap();
    let mut vars = pyfuncnet_graph::program::Variables {
        values: vec![vec![1.0, 2.0, 3.0], vec![5.0, 6.0]],
    };
    let mut state = OptimizerState::new(&config, &[3, 2]);
    let x = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
    let shape = [2, 3];
    step.train(
        &[TensorRef::new_f32(&shape, &x)],
        &mut vars,
        &config,
        &mut state,
        0.1,
    )
    .unwrap();
    assert_eq!(vars.values[1], vec![5.0, 6.0]);
    // d mean(x @ w) / dw = column means of x = [2.5, 3.5, 4.5]; Keras applies decay
    // first (w -= w * wd * lr), then w -= lr * g.
    for (i, (w0, g)) in [(1.0f32, 2.5f32), (2.0, 3.5), (3.0, 4.5)]
        .iter()
        .enumerate()
    {
        let decayed = w0 - w0 * 0.5 * 0.1;
        assert!((vars.values[0][i] - (decayed - 0.1 * g)).abs() < 1e-6);
    }
}

/// An embedding table trained by a compiled step (which hands the optimizer the
/// gathered rows' sums) ends bitwise where the optimizer takes it from the dense
/// gradient of the same step (the tape's `take_grad`, a scatter-add): steps of Adam
/// and of RMSprop, with and without clipping by the global norm, on batches that
/// repeat indices (the lookup's sums taken as they are) or not, gathering different rows.
#[test]
fn an_embedding_table_steps_as_with_its_dense_gradient() {
    use pyfuncnet_graph::optim::{apply_gradients, Gradient};
    use pyfuncnet_graph::program::{gradient, Variables};
    use pyfuncnet_graph::tensor::Buffer;

    let (batch, steps, vocab, dim, classes) = (6, 5, 300, 40, 7);
    let mut spec = common::embedding_spec((batch, steps, vocab, dim, classes), "tanh", false);
    let train_spec = spec.to_string();
    // The tape's spec: the loss, then the sources, the three weights.
    spec["outputs"] = json!([spec["loss"], 2, 3, 4]);
    let tape_spec = spec.to_string();
    // Batches whose lookup deduplicates (many repeats: the step takes the lookup's sums
    // as they are) and one that does not (every index distinct), in turns, so the sums'
    // buffers go round.
    let repeating = |stride: usize, distinct: usize, first: usize| -> Vec<i32> {
        (0..batch * steps)
            .map(|i| (first + (i * stride) % distinct) as i32)
            .collect()
    };
    let batches: [Vec<i32>; 5] = [
        repeating(7, 11, 0),
        repeating(5, 9, 150),
        (0..batch * steps)
            .map(|i| (vocab - 1 - (i * 13) % 40) as i32)
            .collect(),
        repeating(7, 11, 0),
        repeating(3, 13, 280),
    ];
    let labels: Vec<i32> = (0..batch).map(|i| (i % classes) as i32).collect();
    for config in [
        json!({"name": "adam"}),
        json!({"name": "rmsprop", "global_clipnorm": 0.01}),
    ] {
        let config = OptimizerConfig::from_json(&config).unwrap();
        let weights = vec![
            common::values(vocab * dim, 1),
            common::values(dim * classes, 2),
            common::values(classes, 3),
        ];
        let sizes: Vec<usize> = weights.iter().map(Vec::len).collect();
        let mut step = CompiledStep::compile(&train_spec, Mode::Train).unwrap();
        let (mut trained, mut by_hand) = (
            Variables {
                values: weights.clone(),
            },
            Variables { values: weights },
        );
        let mut state = OptimizerState::new(&config, &sizes);
        let mut hand_state = state.clone();
        for indices in &batches {
            let (x_shape, y_shape) = ([batch, steps], [batch]);
            let inputs = [
                TensorRef {
                    shape: &x_shape,
                    data: DataRef::I32(indices),
                },
                TensorRef {
                    shape: &y_shape,
                    data: DataRef::I32(&labels),
                },
            ];
            step.train(&inputs, &mut trained, &config, &mut state, 0.01)
                .unwrap();
            let mut grads: Vec<Vec<f32>> = gradient(&tape_spec, &inputs, &by_hand)
                .unwrap()
                .into_iter()
                .map(|g| match g {
                    Some((_, Buffer::F32(d))) => d,
                    other => panic!("a float gradient for every weight, got {other:?}"),
                })
                .collect();
            let mut vars: Vec<&mut [f32]> =
                by_hand.values.iter_mut().map(Vec::as_mut_slice).collect();
            let mut dense: Vec<Gradient> = grads
                .iter_mut()
                .map(|g| Gradient::Dense(g.as_mut_slice()))
                .collect();
            apply_gradients(&config, &mut hand_state, 0.01, &mut vars, &mut dense).unwrap();
        }
        for (k, (a, b)) in trained.values.iter().zip(&by_hand.values).enumerate() {
            let same = a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
            assert!(same, "{:?}: weight {k} differs", config.kind);
        }
        assert_eq!(state, hand_state, "{:?}: optimizer state", config.kind);
    }
}

/// Spec of an `Embedding` feeding a recurrent layer (`cell`, returning its last
/// state, read `go_backwards` or not), then a softmax classifier: inputs token
/// indices `(batch, steps)` and labels `(batch,)`; weights 0-5: table, input
/// kernel, input bias, recurrent kernel, dense kernel, dense bias. With
/// `fetch_projection`, the input projection is also an output.
fn embedded_rnn_spec(
    (batch, steps, vocab, dim, units, classes): (usize, usize, usize, usize, usize, usize),
    (cell, gates, go_backwards): (&str, usize, bool),
    fetch_projection: bool,
) -> String {
    let g = gates * units;
    // Values: inputs 0-1, weights 2-7, then the nodes' from 8.
    let (emb, xp, rnn) = (8, 9, 10);
    // The rnn's outputs: sequence, last state, [cell state], workspace, previous states.
    let rnn_outputs = if cell == "lstm" { 5 } else { 4 };
    let (h, logits) = (rnn + 1, rnn + rnn_outputs);
    let loss = logits + 3;
    let mut outputs = vec![logits];
    if fetch_projection {
        outputs.push(xp);
    }
    json!({
        "inputs": [{"shape": [batch, steps], "dtype": "int32"}, {"shape": [batch], "dtype": "int32"}],
        "weights": [
            {"index": 0, "shape": [vocab, dim]},
            {"index": 1, "shape": [dim, g]},
            {"index": 2, "shape": [g]},
            {"index": 3, "shape": [units, g]},
            {"index": 4, "shape": [units, classes]},
            {"index": 5, "shape": [classes]},
        ],
        "nodes": [
            {"op": "take", "attrs": {"axis": 0}, "inputs": [2, 0]},
            {"op": "dense", "attrs": {"activation": "linear"}, "inputs": [emb, 3, 4]},
            {"op": "rnn", "attrs": {"cell": cell, "initial_state": false, "sequence": false,
                                    "go_backwards": go_backwards}, "inputs": [xp, 5]},
            {"op": "dense", "attrs": {"activation": "linear"}, "inputs": [h, 6, 7]},
            {"op": "softmax_cross_entropy", "attrs": {"sparse": true}, "inputs": [logits, 1]},
            {"op": "mean", "attrs": {}, "inputs": [logits + 1]},
        ],
        "outputs": outputs,
        "loss": loss,
        "trainable": [0, 1, 2, 3, 4, 5],
    })
    .to_string()
}

/// The recurrent layer that projects its looked-up rows step by step (the fused
/// program) trains bitwise as the one reading the projection computed first (kept
/// by fetching it): predictions, losses, weights and optimizer state, on batches
/// that repeat indices (the lookup deduplicates) and that do not. The layers split
/// into row tasks (a layer run as one task is not fused).
#[test]
fn an_embedding_feeding_a_recurrent_layer_trains_as_unfused() {
    use pyfuncnet_graph::ops::recurrent::RnnOp;

    let (batch, steps, vocab, dim, classes) = (64, 8, 600, 24, 4);
    let batches: [Vec<i32>; 3] = [
        (0..batch * steps).map(|i| ((i * 7) % 11) as i32).collect(),
        (0..batch * steps).map(|i| (vocab - 1 - i) as i32).collect(),
        (0..batch * steps)
            .map(|i| (100 + (i * 3) % 13) as i32)
            .collect(),
    ];
    let labels: Vec<i32> = (0..batch).map(|i| (i % classes) as i32).collect();
    let config = OptimizerConfig::from_json(&json!({"name": "rmsprop"})).unwrap();
    for (cell, units) in [
        (("lstm", 4, false), 32),
        (("simple_rnn", 1, true), 64),
        (("lstm", 4, true), 32),
    ] {
        let dims = (batch, steps, vocab, dim, units, classes);
        let g = cell.1 * units;
        let mut runs = Vec::new();
        for fetch_projection in [false, true] {
            let spec = embedded_rnn_spec(dims, cell, fetch_projection);
            let mut step = CompiledStep::compile(&spec, Mode::Train).unwrap();
            let graph = step.executor().graph();
            let fused = graph.nodes.iter().any(|node| {
                let rnn = node.op.as_any().downcast_ref::<RnnOp>();
                rnn.is_some_and(|op| op.lookup.is_some())
            });
            assert_eq!(fused, !fetch_projection, "{cell:?}: fused");
            let mut vars = pyfuncnet_graph::program::Variables {
                values: [vocab * dim, dim * g, g, units * g, units * classes, classes]
                    .iter()
                    .enumerate()
                    .map(|(k, &n)| common::values(n, 10 + k as u64))
                    .collect(),
            };
            let sizes: Vec<usize> = vars.values.iter().map(Vec::len).collect();
            let mut state = OptimizerState::new(&config, &sizes);
            let mut seen = Vec::new();
            for indices in &batches {
                let (x_shape, y_shape) = ([batch, steps], [batch]);
                let inputs = [
                    TensorRef {
                        shape: &x_shape,
                        data: DataRef::I32(indices),
                    },
                    TensorRef {
                        shape: &y_shape,
                        data: DataRef::I32(&labels),
                    },
                ];
                step.train(&inputs, &mut vars, &config, &mut state, 0.05)
                    .unwrap();
                seen.push(step.loss().unwrap());
                let DataRef::F32(logits) = step.output(0).data else {
                    panic!("float logits");
                };
                seen.extend_from_slice(logits);
            }
            runs.push((seen, vars.values, state));
        }
        let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        let ((fused, fused_w, fused_s), (plain, plain_w, plain_s)) = (&runs[0], &runs[1]);
        assert_eq!(bits(fused), bits(plain), "{cell:?}: losses and logits");
        for (k, (a, b)) in fused_w.iter().zip(plain_w).enumerate() {
            assert_eq!(bits(a), bits(b), "{cell:?}: weight {k}");
        }
        assert_eq!(fused_s, plain_s, "{cell:?}: optimizer state");
    }
}
