//! A steady-state training step makes no heap allocation (its own test binary:
//! the counting allocator is process-wide).

mod common;

use pyfuncnet_graph::optim::{OptimizerConfig, OptimizerState};
use pyfuncnet_graph::program::{CompiledStep, Mode, Variables};
use pyfuncnet_graph::tensor::{DataRef, TensorRef};
use pyfuncnet_kernels::alloc_count::{allocations, CountingAllocator};

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// Trains `spec` for 10 steps, then counts the allocations of 10 more.
fn steady_state_allocations(
    spec: &str,
    mut vars: Variables,
    batch: usize,
    features: usize,
) -> usize {
    let mut step = CompiledStep::compile(spec, Mode::Train).unwrap();
    let config = OptimizerConfig::from_json(&serde_json::json!({"name": "adam"})).unwrap();
    let sizes: Vec<usize> = vars.values.iter().map(Vec::len).collect();
    let mut state = OptimizerState::new(&config, &sizes);
    let (x, y) = common::mlp_batch(batch, features, 11);
    let (x_shape, y_shape) = ([batch, features], [batch]);
    let inputs = [
        TensorRef::new_f32(&x_shape, &x),
        TensorRef {
            shape: &y_shape,
            data: DataRef::I32(&y),
        },
    ];
    // One-time set-up (each thread's scratch buffers, reached by the first
    // sections) is not steady state: run a few steps first.
    for _ in 0..10 {
        step.train(&inputs, &mut vars, &config, &mut state, 1e-3)
            .unwrap();
    }
    let before = allocations();
    for _ in 0..10 {
        step.train(&inputs, &mut vars, &config, &mut state, 1e-3)
            .unwrap();
    }
    allocations() - before
}

#[test]
fn steady_state_train_step_does_not_allocate() {
    // The pool must keep the same threads from warm-up to measurement (it gives way
    // to other processes otherwise): a helper's first share of a product allocates
    // its buffers.
    pyfuncnet_kernels::par::watch_machine_load(false);
    let dims = [784, 64, 64, 10];
    for batch in [64, 256] {
        let made = steady_state_allocations(
            &common::mlp_spec(batch, &dims),
            common::mlp_variables(&dims),
            batch,
            dims[0],
        );
        assert_eq!(
            made, 0,
            "MLP batch {batch}: 10 steady-state steps made {made} heap allocations"
        );
    }
    // Independent towers: stages of small nodes run side by side.
    let made = steady_state_allocations(
        &common::towers_spec(32, 128, 64, 6),
        common::towers_variables(128, 64, 6),
        32,
        128,
    );
    assert_eq!(
        made, 0,
        "towers: 10 steady-state steps made {made} heap allocations"
    );
    // (In this one test: the counting allocator is process-wide, so tests running
    // at the same time would count each other's allocations.)
    for shared in [false, true] {
        let made = embedding_step_allocations(shared);
        assert_eq!(
            made, 0,
            "embedding model (table gathered twice: {shared}): 12 steady-state steps made \
             {made} heap allocations"
        );
    }
    let made = two_encoder_step_allocations();
    assert_eq!(
        made, 0,
        "two-encoder LSTM model: 12 steady-state steps made {made} heap allocations"
    );
    // Several steps per call: what a call allocates does not grow with its steps.
    let (few, many) = (batches_call_allocations(2), batches_call_allocations(12));
    assert_eq!(
        few, many,
        "train_batches: a call of 2 steps made {few} heap allocations, of 12 steps {many}"
    );
}

/// The allocations of one `train_batches` call of `steps` MLP steps on gathered rows
/// (after a first call).
fn batches_call_allocations(steps: usize) -> usize {
    use pyfuncnet_graph::program::BatchRows;
    let (dims, batch) = ([784, 64, 64, 10], 64);
    let mut step = CompiledStep::compile(&common::mlp_spec(batch, &dims), Mode::Train).unwrap();
    let mut vars = common::mlp_variables(&dims);
    let config = OptimizerConfig::from_json(&serde_json::json!({"name": "rmsprop"})).unwrap();
    let sizes: Vec<usize> = vars.values.iter().map(Vec::len).collect();
    let mut state = OptimizerState::new(&config, &sizes);
    let rows = 12 * batch;
    let (x, y) = common::mlp_batch(rows, dims[0], 5);
    let (x_shape, y_shape) = ([rows, dims[0]], [rows]);
    let sources = [
        TensorRef::new_f32(&x_shape, &x),
        TensorRef {
            shape: &y_shape,
            data: DataRef::I32(&y),
        },
    ];
    let order: Vec<i32> = (0..rows as i32).rev().collect();
    let lrs = [1e-3; 12];
    let mut log = Vec::with_capacity(12);
    let mut call = |steps: usize, log: &mut Vec<f32>| {
        log.clear();
        let rows = BatchRows::Gathered(&order[..steps * batch]);
        step.train_batches(
            &sources,
            rows,
            &lrs[..steps],
            &mut vars,
            &config,
            &mut state,
            &[],
            log,
        )
        .unwrap();
    };
    call(12, &mut log);
    let before = allocations();
    call(steps, &mut log);
    allocations() - before
}

/// An embedding model: `take` feeding a dense layer over every step (whose kernel
/// gradient reads the rank-3 input through a flat view), mean over the steps. The
/// table's gradient reaches the optimizer as the gathered rows' sums; gathered
/// twice (`shared`, the two gathers added), as the scatter-add of both (which sorts
/// its terms into row bands). Returns the allocations of 12 steady-state steps.
fn embedding_step_allocations(shared: bool) -> usize {
    // 512 classes: the products of a batch's distinct rows outgrow the scratch
    // buffers' first size.
    let (batch, steps, vocab, dim, classes) = (32, 20, 2000, 64, 512);
    let spec = common::embedding_spec((batch, steps, vocab, dim, classes), "linear", shared);
    let weights = vec![
        common::values(vocab * dim, 1),
        common::values(dim * classes, 2),
        vec![0.0; classes],
    ];
    token_model_allocations(
        &spec.to_string(),
        weights,
        1,
        (batch, steps, vocab, classes),
    )
}

/// Two encoders (embedding -> LSTM) concatenated into a dense softmax, as the Python
/// side writes the question-answering model (the graph fuses each lookup and its
/// projection into one `take_dense`, and the first encoder's LSTM, which splits
/// into row tasks, projects its looked-up rows itself; concatenate's backward is a
/// split): the recurrent steps' packed kernels, workspaces and per-task scratch
/// must all be reused.
fn two_encoder_step_allocations() -> usize {
    let (batch, steps, vocab, classes) = (64, 8, 200, 10);
    // (embedding width, units) of the two encoders.
    // The first is wide enough for its lookups to take the distinct-row path.
    let [(d1, u1), (d2, u2)] = [(32, 32), (8, 4)];
    let encoder = |input: usize, first_weight: usize, first_node: usize| {
        let [e, w, r, b] = std::array::from_fn(|k| first_weight + k);
        let n = first_node;
        serde_json::json!([
            {"op": "take", "attrs": {"axis": 0}, "inputs": [e, input]},
            {"op": "matmul", "attrs": {}, "inputs": [n, w]},
            {"op": "add", "attrs": {}, "inputs": [n + 1, b]},
            {"op": "rnn", "attrs": {"cell": "lstm", "initial_state": false}, "inputs": [n + 2, r]},
        ])
    };
    // Values: inputs 0-2, weights 3-12, then nodes from 13 (an rnn node makes 5,
    // softmax_cross_entropy 2).
    let mut nodes = encoder(0, 3, 13).as_array().unwrap().clone();
    nodes.extend(encoder(1, 7, 21).as_array().unwrap().clone());
    nodes.extend(
        serde_json::json!([
            {"op": "concatenate", "attrs": {"axis": -1}, "inputs": [17, 25]},
            {"op": "matmul", "attrs": {}, "inputs": [29, 11]},
            {"op": "add", "attrs": {}, "inputs": [30, 12]},
            {"op": "softmax_cross_entropy", "attrs": {"sparse": true}, "inputs": [31, 2]},
            {"op": "mean", "attrs": {}, "inputs": [32]},
        ])
        .as_array()
        .unwrap()
        .clone(),
    );
    let shapes = [
        vec![vocab, d1],
        vec![d1, 4 * u1],
        vec![u1, 4 * u1],
        vec![4 * u1],
        vec![vocab, d2],
        vec![d2, 4 * u2],
        vec![u2, 4 * u2],
        vec![4 * u2],
        vec![u1 + u2, classes],
        vec![classes],
    ];
    let spec = serde_json::json!({
        "inputs": [
            {"shape": [batch, steps], "dtype": "int32"},
            {"shape": [batch, steps], "dtype": "int32"},
            {"shape": [batch], "dtype": "int32"},
        ],
        "weights": shapes.iter().enumerate()
            .map(|(k, s)| serde_json::json!({"index": k, "shape": s}))
            .collect::<Vec<_>>(),
        "nodes": nodes,
        "outputs": [31],
        "loss": 34,
        "trainable": (0..shapes.len()).collect::<Vec<_>>(),
    });
    let weights = shapes
        .iter()
        .enumerate()
        .map(|(k, s)| common::values(s.iter().product(), k as u64 + 1))
        .collect();
    token_model_allocations(
        &spec.to_string(),
        weights,
        2,
        (batch, steps, vocab, classes),
    )
}

/// Trains a model of `token_inputs` inputs of token indices `(batch, steps)` and
/// sparse labels with RMSprop for 10 steps, then counts the allocations of 10 more.
fn token_model_allocations(
    spec: &str,
    weights: Vec<Vec<f32>>,
    token_inputs: usize,
    (batch, steps, vocab, classes): (usize, usize, usize, usize),
) -> usize {
    let mut step = CompiledStep::compile(spec, Mode::Train).unwrap();
    let config = OptimizerConfig::from_json(&serde_json::json!({"name": "rmsprop"})).unwrap();
    let mut vars = Variables { values: weights };
    let sizes: Vec<usize> = vars.values.iter().map(Vec::len).collect();
    let mut state = OptimizerState::new(&config, &sizes);
    // Indices spread over the first `rows` rows of the vocabulary (several bands of
    // the scatter-add when many), from a few rows to all of them: the batches'
    // distinct rows, and so the products over them, change from step to step. The
    // buffers grow to the largest batch seen, then never again.
    let draw = |rows: usize| -> Vec<Vec<i32>> {
        (0..token_inputs)
            .map(|k| {
                (0..batch * steps)
                    .map(|i| ((i * 7919 + k * 31) % rows) as i32)
                    .collect()
            })
            .collect()
    };
    let batches: Vec<_> = [3, 1, 2, 4, 6, 10]
        .iter()
        .map(|&tenths| draw((vocab * tenths / 10).max(3)))
        .collect();
    let labels: Vec<i32> = (0..batch).map(|i| (i % classes) as i32).collect();
    let (idx_shape, y_shape) = ([batch, steps], [batch]);
    let batches: Vec<_> = batches
        .iter()
        .map(|idx| step_inputs(idx, &idx_shape, &labels, &y_shape))
        .collect();
    // Each batch several times, so that every thread has had its share of each.
    for _ in 0..3 {
        for batch_inputs in batches.iter().chain(batches.iter().rev()) {
            step.train(batch_inputs, &mut vars, &config, &mut state, 1e-3)
                .unwrap();
        }
    }
    let before = allocations();
    for batch_inputs in batches.iter().rev().chain(&batches) {
        step.train(batch_inputs, &mut vars, &config, &mut state, 1e-3)
            .unwrap();
    }
    allocations() - before
}

/// The token inputs `idx` (each of `idx_shape`) and the labels, as a step takes them.
fn step_inputs<'a>(
    idx: &'a [Vec<i32>],
    idx_shape: &'a [usize],
    labels: &'a [i32],
    y_shape: &'a [usize],
) -> Vec<TensorRef<'a>> {
    let mut inputs: Vec<TensorRef> = idx
        .iter()
        .map(|x| TensorRef {
            shape: idx_shape,
            data: DataRef::I32(x),
        })
        .collect();
    inputs.push(TensorRef {
        shape: y_shape,
        data: DataRef::I32(labels),
    });
    inputs
}
