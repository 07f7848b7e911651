//! Training and eager results are bitwise identical for 1, 2 and 3 threads (own
//! test binary: it changes the global thread count).

mod common;

use pyfuncnet_graph::eager;
use pyfuncnet_graph::optim::{OptimizerConfig, OptimizerState};
use pyfuncnet_graph::program::{CompiledStep, Mode};
use pyfuncnet_graph::tensor::{Buffer, DataRef, TensorRef};
use pyfuncnet_kernels::par;
use serde_json::json;

/// The tests of this file replace the global pool; they take turns.
static POOL_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn train(threads: usize) -> (Vec<Vec<f32>>, Vec<f32>) {
    par::set_num_threads(threads).unwrap();
    par::watch_machine_load(false);
    let dims = [784, 256, 128, 10];
    let batch = 96;
    let mut step = CompiledStep::compile(&common::mlp_spec(batch, &dims), Mode::Train).unwrap();
    let mut vars = common::mlp_variables(&dims);
    let config = OptimizerConfig::from_json(&serde_json::json!({"name": "rmsprop"})).unwrap();
    let sizes: Vec<usize> = vars.values.iter().map(Vec::len).collect();
    let mut state = OptimizerState::new(&config, &sizes);
    let mut losses = Vec::new();
    for s in 0..4 {
        let (x, y) = common::mlp_batch(batch, dims[0], 20 + s);
        let (x_shape, y_shape) = ([batch, dims[0]], [batch]);
        let inputs = [
            TensorRef::new_f32(&x_shape, &x),
            TensorRef {
                shape: &y_shape,
                data: DataRef::I32(&y),
            },
        ];
        step.train(&inputs, &mut vars, &config, &mut state, 1e-3)
            .unwrap();
        losses.push(step.loss().unwrap());
    }
    (vars.values, losses)
}

#[test]
fn training_is_bitwise_identical_for_any_thread_count() {
    let _turn = POOL_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let (w1, l1) = train(1);
    for threads in [2, 3] {
        let (w, l) = train(threads);
        assert_eq!(l, l1, "losses differ with {threads} threads");
        for (a, b) in w.iter().zip(&w1) {
            assert!(
                a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()),
                "weights differ with {threads} threads"
            );
        }
    }
}

/// A 784-256-10 MLP with dropout (a mask broadcast over the batch), additive and
/// multiplicative Gaussian noise after the hidden layer: every random op of the
/// graph crate in one training program. Inputs: x (batch, 784) and labels (batch,).
fn noisy_mlp_spec(batch: usize) -> String {
    // Ids: x = 0, labels = 1, weights 2..=5, then node outputs from 6.
    json!({
        "inputs": [{"shape": [batch, 784], "dtype": "float32"}, {"shape": [batch], "dtype": "int32"}],
        "weights": [
            {"index": 0, "shape": [784, 256]}, {"index": 1, "shape": [256]},
            {"index": 2, "shape": [256, 10]}, {"index": 3, "shape": [10]},
        ],
        "nodes": [
            {"op": "dense", "attrs": {"activation": "relu"}, "inputs": [0, 2, 3]},
            {"op": "dropout", "attrs": {"rate": 0.3, "stream": 1, "noise_shape": [1, 256]}, "inputs": [6]},
            {"op": "gaussian_noise", "attrs": {"stddev": 0.1, "stream": 2}, "inputs": [7]},
            {"op": "gaussian_dropout", "attrs": {"rate": 0.2, "stream": 3}, "inputs": [9]},
            {"op": "dense", "attrs": {"activation": "linear"}, "inputs": [10, 4, 5]},
            {"op": "softmax_cross_entropy", "attrs": {"sparse": true}, "inputs": [12, 1]},
            {"op": "mean", "attrs": {}, "inputs": [13]},
        ],
        "outputs": [12],
        "loss": 15,
        "trainable": [0, 1, 2, 3],
        "seed": 42,
    })
    .to_string()
}

fn train_noisy(threads: usize) -> (Vec<Vec<f32>>, Vec<f32>) {
    par::set_num_threads(threads).unwrap();
    par::watch_machine_load(false);
    let (batch, dims) = (96, [784, 256, 10]);
    let mut step = CompiledStep::compile(&noisy_mlp_spec(batch), Mode::Train).unwrap();
    let mut vars = common::mlp_variables(&dims);
    let config = OptimizerConfig::from_json(&json!({"name": "sgd"})).unwrap();
    let sizes: Vec<usize> = vars.values.iter().map(Vec::len).collect();
    let mut state = OptimizerState::new(&config, &sizes);
    let mut losses = Vec::new();
    for s in 0..3 {
        let (x, y) = common::mlp_batch(batch, dims[0], 40 + s);
        let (x_shape, y_shape) = ([batch, dims[0]], [batch]);
        let inputs = [
            TensorRef::new_f32(&x_shape, &x),
            TensorRef {
                shape: &y_shape,
                data: DataRef::I32(&y),
            },
        ];
        step.train(&inputs, &mut vars, &config, &mut state, 0.1)
            .unwrap();
        losses.push(step.loss().unwrap());
    }
    (vars.values, losses)
}

#[test]
fn noise_ops_train_bitwise_identically_for_any_thread_count() {
    let _turn = POOL_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let (w1, l1) = train_noisy(1);
    for threads in [2, 3] {
        let (w, l) = train_noisy(threads);
        assert_eq!(l, l1, "losses differ with {threads} threads");
        for (a, b) in w.iter().zip(&w1) {
            assert!(
                a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()),
                "weights differ with {threads} threads"
            );
        }
    }
}

/// Ops big enough to split their work, run eagerly as the bindings run them: from a
/// thread outside the pool; returns every output's bits.
fn eager_outputs() -> Vec<Vec<u32>> {
    let a = common::values(256 * 784, 11);
    let b = common::values(784 * 64, 12);
    let big = common::values(600 * 1001, 13);
    let t = TensorRef::new_f32;
    let runs = [
        (
            "matmul",
            json!({}),
            vec![t(&[256, 784], &a), t(&[784, 64], &b)],
        ),
        // A narrow product (10 output columns).
        (
            "matmul",
            json!({}),
            vec![t(&[64, 784], &a[..64 * 784]), t(&[784, 10], &b[..7840])],
        ),
        (
            "transpose",
            json!({"perm": [1, 0]}),
            vec![t(&[256, 784], &a)],
        ),
        ("sum", json!({"axis": [0]}), vec![t(&[600, 1001], &big)]),
        ("mean", json!({}), vec![t(&[600, 1001], &big)]),
        ("softmax", json!({"axis": -1}), vec![t(&[600, 1001], &big)]),
        ("tanh", json!({}), vec![t(&[600, 1001], &big)]),
    ];
    let mut bits = Vec::new();
    for (name, attrs, inputs) in &runs {
        for (_, buf) in eager::run(name, attrs, inputs).unwrap() {
            match buf {
                Buffer::F32(d) => bits.push(d.iter().map(|x| x.to_bits()).collect()),
                Buffer::I32(d) => bits.push(d.iter().map(|&x| x as u32).collect()),
            }
        }
    }
    bits
}

#[test]
fn eager_ops_are_bitwise_identical_for_any_thread_count() {
    let _turn = POOL_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    par::set_num_threads(1).unwrap();
    par::watch_machine_load(false);
    let one = eager_outputs();
    // Inside a task of a parallel section (nested sections, as in a compiled
    // step's side-by-side nodes) the bits are the same.
    par::set_num_threads(2).unwrap();
    par::watch_machine_load(false);
    let nested: Vec<_> = (0..2).map(|_| std::sync::Mutex::new(Vec::new())).collect();
    par::for_each_task(2, |i| *nested[i].lock().unwrap() = eager_outputs());
    for r in nested {
        assert!(
            r.into_inner().unwrap() == one,
            "nested sections differ from 1 thread"
        );
    }
    for threads in [2, 3] {
        par::set_num_threads(threads).unwrap();
        par::watch_machine_load(false);
        assert!(eager_outputs() == one, "{threads} threads differ from 1");
        // Several callers at once share the pool and still get the same bits.
        let all: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..3).map(|_| s.spawn(eager_outputs)).collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(
            all.iter().all(|r| *r == one),
            "concurrent callers with {threads} threads differ from 1 thread"
        );
    }
}
