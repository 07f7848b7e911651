//! Shared helpers of the graph crate's integration tests.
#![allow(dead_code)]

use pyfuncnet_graph::program::Variables;
use serde_json::json;

/// A deterministic pseudo-random sequence in [-1, 1) (xorshift), so tests need no RNG crate.
pub fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// Spec of a 784-64-64-10 MLP (relu, relu, logits) with sparse softmax
/// cross-entropy averaged over the batch. Inputs: x (batch, 784) and labels (batch,).
pub fn mlp_spec(batch: usize, dims: &[usize]) -> String {
    mlp_spec_from(batch, dims, false)
}

/// [`mlp_spec`] with each layer written as `matmul`, `add` and `relu` nodes, as a
/// custom layer built from ops would be.
pub fn mlp_spec_primitive(batch: usize, dims: &[usize]) -> String {
    mlp_spec_from(batch, dims, true)
}

fn mlp_spec_from(batch: usize, dims: &[usize], primitive: bool) -> String {
    let n_layers = dims.len() - 1;
    let mut weights = Vec::new();
    for l in 0..n_layers {
        weights.push(json!({"index": 2 * l, "shape": [dims[l], dims[l + 1]]}));
        weights.push(json!({"index": 2 * l + 1, "shape": [dims[l + 1]]}));
    }
    // Ids: x = 0, labels = 1, weights 2.., then node outputs.
    let mut nodes = Vec::new();
    let mut h = 0;
    let mut next = 2 + 2 * n_layers;
    for l in 0..n_layers {
        let act = if l + 1 < n_layers { "relu" } else { "linear" };
        if primitive {
            nodes.push(json!({"op": "matmul", "inputs": [h, 2 + 2 * l]}));
            nodes.push(json!({"op": "add", "inputs": [next, 3 + 2 * l]}));
            next += 2;
            if act == "relu" {
                nodes.push(json!({"op": "relu", "inputs": [next - 1]}));
                next += 1;
            }
            h = next - 1;
            continue;
        }
        nodes.push(json!({"op": "dense", "attrs": {"activation": act}, "inputs": [h, 2 + 2 * l, 3 + 2 * l], "label": format!("dense_{l}")}));
        h = next;
        next += 1;
    }
    nodes.push(json!({"op": "softmax_cross_entropy", "attrs": {"sparse": true}, "inputs": [h, 1]}));
    let per_sample = next;
    next += 2;
    nodes.push(json!({"op": "mean", "attrs": {}, "inputs": [per_sample]}));
    let loss = next;
    json!({
        "inputs": [{"shape": [batch, dims[0]], "dtype": "float32"}, {"shape": [batch], "dtype": "int32"}],
        "weights": weights,
        "nodes": nodes,
        "outputs": [h],
        "loss": loss,
        "trainable": (0..2 * n_layers).collect::<Vec<_>>(),
    })
    .to_string()
}

/// Glorot-ish weights for [`mlp_spec`].
pub fn mlp_variables(dims: &[usize]) -> Variables {
    let mut values_out = Vec::new();
    for l in 0..dims.len() - 1 {
        let scale = (6.0 / (dims[l] + dims[l + 1]) as f32).sqrt();
        values_out.push(
            values(dims[l] * dims[l + 1], 100 + l as u64)
                .iter()
                .map(|v| v * scale)
                .collect(),
        );
        values_out.push(vec![0.0; dims[l + 1]]);
    }
    Variables { values: values_out }
}

/// A learnable batch: the label is the argmax of the first 10 features.
pub fn mlp_batch(batch: usize, features: usize, seed: u64) -> (Vec<f32>, Vec<i32>) {
    let x = values(batch * features, seed);
    let labels = (0..batch)
        .map(|r| {
            let row = &x[r * features..r * features + 10];
            (0..10)
                .max_by(|&a, &b| row[a].total_cmp(&row[b]))
                .unwrap_or(0) as i32
        })
        .collect();
    (x, labels)
}

/// Spec of `towers` independent dense+tanh towers on one input (batch, features)
/// -> (batch, units) each, summed, with sparse softmax cross-entropy: wide stages of
/// small GEMMs that the executor runs side by side. Weights: kernel then bias per
/// tower. Inputs: x and labels (batch,).
pub fn towers_spec(batch: usize, features: usize, units: usize, towers: usize) -> String {
    let weights: Vec<_> = (0..towers)
        .flat_map(|t| {
            [
                json!({"index": 2 * t, "shape": [features, units]}),
                json!({"index": 2 * t + 1, "shape": [units]}),
            ]
        })
        .collect();
    let mut nodes = Vec::new();
    let mut next = 2 + 2 * towers;
    let mut outs = Vec::new();
    for t in 0..towers {
        nodes.push(json!({"op": "dense", "attrs": {"activation": "tanh"}, "inputs": [0, 2 + 2 * t, 3 + 2 * t], "label": format!("tower_{t}")}));
        outs.push(next);
        next += 1;
    }
    let mut sum = outs[0];
    for &o in &outs[1..] {
        nodes.push(json!({"op": "add", "inputs": [sum, o]}));
        sum = next;
        next += 1;
    }
    nodes.push(
        json!({"op": "softmax_cross_entropy", "attrs": {"sparse": true}, "inputs": [sum, 1]}),
    );
    let per_sample = next;
    next += 2;
    nodes.push(json!({"op": "mean", "attrs": {}, "inputs": [per_sample]}));
    json!({
        "inputs": [{"shape": [batch, features], "dtype": "float32"}, {"shape": [batch], "dtype": "int32"}],
        "weights": weights,
        "nodes": nodes,
        "outputs": [sum],
        "loss": next,
        "trainable": (0..2 * towers).collect::<Vec<_>>(),
    })
    .to_string()
}

/// Weights for [`towers_spec`].
pub fn towers_variables(features: usize, units: usize, towers: usize) -> Variables {
    let mut values_out = Vec::new();
    for t in 0..towers {
        values_out.push(
            values(features * units, 300 + t as u64)
                .iter()
                .map(|v| v * 0.2)
                .collect(),
        );
        values_out.push(
            values(units, 400 + t as u64)
                .iter()
                .map(|v| v * 0.1)
                .collect(),
        );
    }
    Variables { values: values_out }
}

/// Spec of an embedding model over `(batch, steps, vocab, dim, classes)`: `take` of
/// the `vocab x dim` table (gathered twice and added when `shared`), a dense layer
/// with `activation` at every step, mean over the steps (the output), sparse softmax
/// cross-entropy averaged over the batch (the loss). Inputs: token indices
/// `(batch, steps)` and labels `(batch,)`; weights 0-2: table, kernel, bias.
pub fn embedding_spec(
    (batch, steps, vocab, dim, classes): (usize, usize, usize, usize, usize),
    activation: &str,
    shared: bool,
) -> serde_json::Value {
    // Values: inputs 0-1, weights 2-4, then the nodes' from 5 (two for the cross-entropy).
    let mut nodes = vec![json!({"op": "take", "attrs": {"axis": 0}, "inputs": [2, 0]})];
    if shared {
        nodes.push(json!({"op": "take", "attrs": {"axis": 0}, "inputs": [2, 0]}));
        nodes.push(json!({"op": "add", "attrs": {}, "inputs": [5, 6]}));
    }
    let embedded = 4 + nodes.len();
    nodes.extend([
        json!({"op": "dense", "attrs": {"activation": activation}, "inputs": [embedded, 3, 4]}),
        json!({"op": "mean", "attrs": {"axis": [1]}, "inputs": [embedded + 1]}),
        json!({"op": "softmax_cross_entropy", "attrs": {"sparse": true}, "inputs": [embedded + 2, 1]}),
        json!({"op": "mean", "attrs": {}, "inputs": [embedded + 3]}),
    ]);
    json!({
        "inputs": [{"shape": [batch, steps], "dtype": "int32"}, {"shape": [batch], "dtype": "int32"}],
        "weights": [
            {"index": 0, "shape": [vocab, dim]},
            {"index": 1, "shape": [dim, classes]},
            {"index": 2, "shape": [classes]},
        ],
        "nodes": nodes,
        "outputs": [embedded + 2],
        "loss": embedded + 5,
        "trainable": [0, 1, 2],
    })
}
