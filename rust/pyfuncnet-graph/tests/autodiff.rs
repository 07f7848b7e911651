//! Reverse-mode gradients of each op family equal central finite differences of
//! the forward pass (loss = sum(op(inputs) * w) with fixed random weights w).

mod common;

use pyfuncnet_graph::autodiff::gradients;
use pyfuncnet_graph::exec::Executor;
use pyfuncnet_graph::graph::Graph;
use pyfuncnet_graph::ops::{self, Ctx};
use pyfuncnet_graph::tensor::{DataRef, TensorRef, TensorType};
use serde_json::{json, Value};

/// Builds loss = sum(op(x...) * w) for float inputs of `shapes` (plus int `indices`
/// appended as the last input when given) and returns (graph, loss, input ids).
fn build(
    op: &str,
    attrs: &Value,
    shapes: &[Vec<usize>],
    indices: Option<&[usize]>,
) -> (Graph, usize, Vec<usize>) {
    let mut g = Graph::new();
    let mut ids: Vec<usize> = shapes
        .iter()
        .map(|s| g.add_input(TensorType::f32(s.clone())))
        .collect();
    if let Some(shape) = indices {
        ids.push(g.add_input(TensorType::new(
            shape.to_vec(),
            pyfuncnet_graph::tensor::DType::I32,
        )));
    }
    let out = g.apply1(ops::build(op, attrs).unwrap(), &ids).unwrap();
    let out_shape = g.shape(out).to_vec();
    let n: usize = out_shape.iter().product();
    let w = g.add_const(out_shape, common::values(n, 99)).unwrap();
    let weighted = g.mul(out, w).unwrap();
    let loss = g
        .apply1(ops::build("sum", &json!({})).unwrap(), &[weighted])
        .unwrap();
    (g, loss, ids)
}

fn eval(
    op: &str,
    attrs: &Value,
    shapes: &[Vec<usize>],
    data: &[Vec<f32>],
    idx: Option<(&[usize], &[i32])>,
) -> f64 {
    let (g, loss, _) = build(op, attrs, shapes, idx.map(|(s, _)| s));
    let mut exec = Executor::new(g, vec![loss]);
    let mut inputs: Vec<TensorRef> = shapes
        .iter()
        .zip(data)
        .map(|(s, d)| TensorRef::new_f32(s, d))
        .collect();
    if let Some((s, i)) = idx {
        inputs.push(TensorRef {
            shape: s,
            data: DataRef::I32(i),
        });
    }
    exec.run(&Ctx::default(), &inputs, &[]).unwrap();
    match exec.fetch(0).data {
        DataRef::F32(d) => f64::from(d[0]),
        DataRef::I32(_) => unreachable!(),
    }
}

/// Compares autodiff with central differences for every element of every float input.
fn check(op: &str, attrs: Value, shapes: &[Vec<usize>], idx: Option<(&[usize], &[i32])>) {
    check_first(op, attrs, shapes, shapes.len(), idx);
}

/// As [`check`], differentiating only the first `n_diff` inputs (the rest are labels).
fn check_first(
    op: &str,
    attrs: Value,
    shapes: &[Vec<usize>],
    n_diff: usize,
    idx: Option<(&[usize], &[i32])>,
) {
    let data: Vec<Vec<f32>> = shapes
        .iter()
        .enumerate()
        .map(|(i, s)| {
            // Keep values away from 0, where relu/selu/abs-like ops have kinks that a
            // central difference would straddle.
            let away = |v: f32| {
                if v.abs() < 0.05 {
                    v + 0.1f32.copysign(v)
                } else {
                    v
                }
            };
            common::values(s.iter().product(), 7 + i as u64)
                .iter()
                .map(|v| away(v * 1.5))
                .collect()
        })
        .collect();
    check_at(op, attrs, shapes, n_diff, idx, &data);
}

/// As [`check_first`], at the input values `data`.
fn check_at(
    op: &str,
    attrs: Value,
    shapes: &[Vec<usize>],
    n_diff: usize,
    idx: Option<(&[usize], &[i32])>,
    data: &[Vec<f32>],
) {
    let (mut g, loss, ids) = build(op, &attrs, shapes, idx.map(|(s, _)| s));
    let float_ids = &ids[..n_diff];
    let grads = gradients(&mut g, loss, float_ids).unwrap();
    let fetches: Vec<usize> = grads
        .iter()
        .map(|g| g.expect("every float input gets a gradient"))
        .collect();
    let mut exec = Executor::new(g, fetches);
    let mut inputs: Vec<TensorRef> = shapes
        .iter()
        .zip(data)
        .map(|(s, d)| TensorRef::new_f32(s, d))
        .collect();
    if let Some((s, i)) = idx {
        inputs.push(TensorRef {
            shape: s,
            data: DataRef::I32(i),
        });
    }
    exec.run(&Ctx::default(), &inputs, &[]).unwrap();
    for k in 0..n_diff {
        let DataRef::F32(analytic) = exec.fetch(k).data else {
            unreachable!()
        };
        for e in 0..data[k].len() {
            let h = 1e-2f32;
            let mut plus = data.to_vec();
            plus[k][e] += h;
            let mut minus = data.to_vec();
            minus[k][e] -= h;
            let fd = (eval(op, &attrs, shapes, &plus, idx) - eval(op, &attrs, shapes, &minus, idx))
                / (2.0 * f64::from(h));
            let a = f64::from(analytic[e]);
            assert!(
                (a - fd).abs() <= 2e-2 * (1.0 + fd.abs()),
                "{op} {attrs}: d/d input{k}[{e}] autodiff {a} vs finite difference {fd}"
            );
        }
    }
}

#[test]
fn matmul_grads_for_every_transpose_and_broadcast_batch() {
    for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
        let a = if ta { vec![2, 4, 3] } else { vec![2, 3, 4] };
        let b = if tb { vec![5, 4] } else { vec![4, 5] };
        check(
            "matmul",
            json!({"transpose_a": ta, "transpose_b": tb}),
            &[a, b],
            None,
        );
    }
    check(
        "matmul",
        json!({}),
        &[vec![3, 1, 2, 4], vec![2, 4, 3]],
        None,
    );
}

#[test]
fn dense_grads_with_fused_activations() {
    for act in ["linear", "relu", "sigmoid", "tanh", "exponential"] {
        check(
            "dense",
            json!({"activation": act}),
            &[vec![5, 4], vec![4, 3], vec![3]],
            None,
        );
    }
    check(
        "dense",
        json!({"use_bias": false}),
        &[vec![2, 3, 4], vec![4, 3]],
        None,
    );
    // The kernel gradient the dense backward uses, itself differentiated.
    check(
        "dense_kernel_grad",
        json!({}),
        &[vec![2, 3, 4], vec![6, 5]],
        None,
    );
}

#[test]
fn elementwise_and_broadcast_grads() {
    for op in [
        "add",
        "subtract",
        "multiply",
        "maximum",
        "minimum",
        "squared_difference",
    ] {
        check(op, json!({}), &[vec![3, 1, 4], vec![2, 1]], None);
    }
    check("divide", json!({}), &[vec![3, 4], vec![4]], None);
    for op in [
        "tanh", "sigmoid", "exp", "softplus", "gelu", "silu", "elu", "selu", "sin",
    ] {
        check(op, json!({}), &[vec![2, 5]], None);
    }
}

#[test]
fn reduction_and_softmax_grads() {
    for op in ["sum", "mean", "max", "min", "var"] {
        check(
            op,
            json!({"axis": [0, 2], "keepdims": op == "mean"}),
            &[vec![3, 2, 4]],
            None,
        );
    }
    check("softmax", json!({"axis": 1}), &[vec![2, 4, 3]], None);
    check("log_softmax", json!({}), &[vec![3, 5]], None);
}

#[test]
fn layout_grads() {
    check(
        "transpose",
        json!({"perm": [2, 0, 1]}),
        &[vec![2, 3, 4]],
        None,
    );
    check(
        "concatenate",
        json!({"axis": 1}),
        &[vec![2, 3], vec![2, 2]],
        None,
    );
    check(
        "slice",
        json!({"begin": [1, 0], "step": [2, 3], "shape": [2, 2]}),
        &[vec![5, 6]],
        None,
    );
    check(
        "pad",
        json!({"before": [1, 0], "after": [0, 2]}),
        &[vec![2, 3]],
        None,
    );
    check("reshape", json!({"shape": [-1, 2]}), &[vec![3, 4]], None);
}

#[test]
fn gather_and_fused_loss_grads() {
    let idx_shape = [4];
    let idx = [2, 0, 2, 1];
    check(
        "take",
        json!({"axis": 0}),
        &[vec![3, 5]],
        Some((&idx_shape, &idx)),
    );
    let label_shape = [3];
    let labels = [1, 4, 0];
    check(
        "softmax_cross_entropy",
        json!({"sparse": true}),
        &[vec![3, 5]],
        Some((&label_shape, &labels)),
    );
    check_first(
        "sigmoid_cross_entropy",
        json!({}),
        &[vec![3, 2], vec![3, 2]],
        1,
        None,
    );
}

/// The cross-entropy of probabilities, dense and sparse: rows that do not sum to
/// 1 (the renormalisation's gradient), soft labels with zeros (the dense labels
/// get a gradient too), and probabilities the clip cuts (no gradient there).
#[test]
fn probability_crossentropy_grads() {
    // Row 0 sums to 1.75; in row 1, 0.05 falls under epsilon 0.1 and is clipped;
    // in row 2, 0.95 lies above 1 - epsilon and the rest under epsilon (far enough
    // from the bounds that the differences' steps stay on one side).
    let probs = vec![
        0.3, 0.5, 0.8, 0.15, 0.05, 0.6, 0.15, 0.2, 0.02, 0.95, 0.02, 0.01,
    ];
    let labels = vec![0.2, 0.0, 0.7, 0.1, 0.5, 0.5, 0.0, 0.0, 0.0, 0.6, 0.3, 0.1];
    let attrs = json!({"epsilon": 0.1});
    check_at(
        "categorical_crossentropy",
        attrs,
        &[vec![3, 4], vec![3, 4]],
        2,
        None,
        &[probs.clone(), labels],
    );
    let classes = [2, 0, 1];
    check_at(
        "categorical_crossentropy",
        json!({"epsilon": 0.1, "sparse": true}),
        &[vec![3, 4]],
        1,
        Some((&[3], &classes)),
        &[probs],
    );
}

#[test]
fn conv_grads_over_ranks_strides_dilations_paddings_and_groups() {
    let cases = [
        (
            json!({"strides": [1], "padding": "causal", "dilation_rate": [2]}),
            vec![2, 7, 3],
            vec![2, 3, 4],
        ),
        (
            json!({"strides": [2], "padding": "same"}),
            vec![1, 8, 2],
            vec![3, 2, 3],
        ),
        (
            json!({"strides": [1, 2], "padding": "same"}),
            vec![2, 5, 6, 3],
            vec![2, 3, 3, 2],
        ),
        (
            json!({"strides": [1, 1], "padding": "valid", "dilation_rate": [2, 1]}),
            vec![1, 6, 4, 2],
            vec![2, 2, 2, 3],
        ),
        (
            json!({"strides": [1, 1], "padding": "valid", "groups": 2}),
            vec![2, 4, 4, 4],
            vec![3, 3, 2, 6],
        ),
        (
            json!({"strides": [2, 2], "padding": "valid"}),
            vec![2, 5, 5, 3],
            vec![1, 1, 3, 4],
        ),
        (
            json!({"strides": [1, 1, 2], "padding": "same"}),
            vec![1, 3, 3, 4, 2],
            vec![2, 2, 2, 2, 2],
        ),
    ];
    for (attrs, x, k) in cases {
        check("conv", attrs, &[x, k], None);
    }
    for act in ["linear", "relu", "tanh"] {
        check(
            "conv",
            json!({"strides": [1, 1], "padding": "same", "use_bias": true, "activation": act}),
            &[vec![2, 4, 3, 2], vec![3, 2, 2, 3], vec![3]],
            None,
        );
    }
}

#[test]
fn conv_gradient_ops_are_differentiable() {
    // conv_input_grad(dy, kernel) and conv_kernel_grad(x, dy) of a strided,
    // padded convolution of a (2, 5, 4, 3) input by a (3, 2, 3, 4) kernel.
    let geometry = json!({"strides": [2, 1], "padding": "same"});
    let mut attrs = geometry.clone();
    attrs["input_shape"] = json!([2, 5, 4, 3]);
    check(
        "conv_input_grad",
        attrs,
        &[vec![2, 3, 4, 4], vec![3, 2, 3, 4]],
        None,
    );
    let mut attrs = geometry;
    attrs["kernel_shape"] = json!([3, 2, 3, 4]);
    check(
        "conv_kernel_grad",
        attrs,
        &[vec![2, 5, 4, 3], vec![2, 3, 4, 4]],
        None,
    );
}

#[test]
fn conv_transpose_grads() {
    let cases = [
        (
            json!({"strides": [2], "padding": "valid"}),
            vec![2, 4, 3],
            vec![3, 2, 3],
        ),
        (
            json!({"strides": [2], "padding": "same", "output_padding": [1]}),
            vec![1, 3, 2],
            vec![4, 3, 2],
        ),
        (
            json!({"strides": [2, 1], "padding": "same"}),
            vec![2, 3, 3, 2],
            vec![3, 2, 4, 2],
        ),
        (
            json!({"strides": [1, 1], "padding": "valid", "dilation_rate": [2, 1]}),
            vec![1, 3, 2, 2],
            vec![2, 2, 3, 2],
        ),
    ];
    for (attrs, x, k) in cases {
        check("conv_transpose", attrs, &[x, k], None);
    }
}

/// loss = sum(seq * w0) + sum(h * w1) [+ sum(c * w2)] of an `rnn` op whose float
/// inputs have `shapes`, with an optional constant mask; returns the graph, the
/// loss and the input ids.
fn rnn_graph(
    attrs: &Value,
    shapes: &[Vec<usize>],
    mask: Option<&[f32]>,
    outputs_used: usize,
) -> (Graph, usize, Vec<usize>) {
    let mut g = Graph::new();
    let ids: Vec<usize> = shapes
        .iter()
        .map(|s| g.add_input(TensorType::f32(s.clone())))
        .collect();
    let mut all = ids.clone();
    if let Some(m) = mask {
        let (b, t) = (shapes[0][0], shapes[0][1]);
        all.push(g.add_const(vec![b, t], m.to_vec()).unwrap());
    }
    let outs = g.apply(ops::build("rnn", attrs).unwrap(), &all).unwrap();
    let mut loss = None;
    for (k, &o) in outs.iter().take(outputs_used).enumerate() {
        let shape = g.shape(o).to_vec();
        let w = g
            .add_const(
                shape.clone(),
                common::values(shape.iter().product(), 50 + k as u64),
            )
            .unwrap();
        let term = g.mul(o, w).unwrap();
        let term = g
            .apply1(ops::build("sum", &json!({})).unwrap(), &[term])
            .unwrap();
        loss = Some(match loss {
            None => term,
            Some(l) => g.add(l, term).unwrap(),
        });
    }
    (g, loss.unwrap(), ids)
}

#[test]
fn rnn_grads_through_every_output_with_masks_and_both_directions() {
    let (b, t, u) = (3, 4, 3);
    let mask: Vec<f32> = (0..b * t)
        .map(|i| if i % 5 == 3 { 0.0 } else { 1.0 })
        .collect();
    for (cell, gates, rb, c0) in [
        ("lstm", 4, false, true),
        ("gru", 3, true, false),
        ("simple_rnn", 1, false, false),
    ] {
        // Without the sequence output (output 0 is then empty), the gradients
        // flow through the final states alone.
        for (masked, go_backwards, sequence) in [
            (false, false, true),
            (true, true, true),
            (true, false, false),
        ] {
            let attrs = json!({
                "cell": cell, "masked": masked, "go_backwards": go_backwards, "sequence": sequence
            });
            let mut shapes = vec![vec![b, t, gates * u], vec![u, gates * u]];
            if rb {
                shapes.push(vec![gates * u]);
            }
            shapes.push(vec![b, u]);
            if c0 {
                shapes.push(vec![b, u]);
            }
            let used = if c0 { 3 } else { 2 };
            let m = masked.then_some(&mask[..]);
            let data: Vec<Vec<f32>> = shapes
                .iter()
                .enumerate()
                .map(|(i, s)| common::values(s.iter().product(), 11 + i as u64))
                .collect();
            let eval_loss = |data: &[Vec<f32>]| {
                let (g, loss, _) = rnn_graph(&attrs, &shapes, m, used);
                let mut exec = Executor::new(g, vec![loss]);
                let inputs: Vec<TensorRef> = shapes
                    .iter()
                    .zip(data)
                    .map(|(s, d)| TensorRef::new_f32(s, d))
                    .collect();
                exec.run(&Ctx::default(), &inputs, &[]).unwrap();
                let DataRef::F32(v) = exec.fetch(0).data else {
                    unreachable!()
                };
                f64::from(v[0])
            };
            let (mut g, loss, ids) = rnn_graph(&attrs, &shapes, m, used);
            let rnn_out = g
                .nodes
                .iter()
                .find(|n| n.op.name() == "rnn")
                .map(|n| g.shape(n.outputs[0]).to_vec());
            assert_eq!(
                rnn_out,
                Some(vec![b, if sequence { t } else { 0 }, u]),
                "{attrs}"
            );
            let grads = gradients(&mut g, loss, &ids).unwrap();
            let fetches: Vec<usize> = grads
                .iter()
                .map(|g| g.expect("every input gets a gradient"))
                .collect();
            let mut exec = Executor::new(g, fetches);
            let inputs: Vec<TensorRef> = shapes
                .iter()
                .zip(&data)
                .map(|(s, d)| TensorRef::new_f32(s, d))
                .collect();
            exec.run(&Ctx::default(), &inputs, &[]).unwrap();
            for k in 0..shapes.len() {
                let DataRef::F32(analytic) = exec.fetch(k).data else {
                    unreachable!()
                };
                for e in 0..data[k].len() {
                    let h = 1e-2f32;
                    let mut plus = data.clone();
                    plus[k][e] += h;
                    let mut minus = data.clone();
                    minus[k][e] -= h;
                    let fd = (eval_loss(&plus) - eval_loss(&minus)) / (2.0 * f64::from(h));
                    let a = f64::from(analytic[e]);
                    assert!(
                        (a - fd).abs() <= 2e-2 * (1.0 + fd.abs()),
                        "rnn {attrs}: d/d input{k}[{e}] autodiff {a} vs finite difference {fd}"
                    );
                }
            }
        }
    }
}

#[test]
fn rnn_rejects_bad_shapes_and_activations() {
    let mut g = Graph::new();
    let xp = g.add_input(TensorType::f32(vec![2, 5, 12]));
    let r = g.add_input(TensorType::f32(vec![3, 12]));
    let h0 = g.add_input(TensorType::f32(vec![2, 3]));
    let c0 = g.add_input(TensorType::f32(vec![2, 4]));
    let lstm = || ops::build("rnn", &json!({"cell": "lstm"})).unwrap();
    let e = g.apply(lstm(), &[xp, r, h0, c0]).unwrap_err().to_string();
    assert!(
        e.contains("initial cell state") && e.contains("(2, 3)") && e.contains("(2, 4)"),
        "{e}"
    );
    let r_bad = g.add_input(TensorType::f32(vec![3, 9]));
    let e = g
        .apply(lstm(), &[xp, r_bad, h0, h0])
        .unwrap_err()
        .to_string();
    assert!(e.contains("recurrent kernel"), "{e}");
    let e = ops::build("rnn", &json!({"cell": "lstm", "activation": "gelu"}))
        .unwrap_err()
        .to_string();
    assert!(e.contains("gelu"), "{e}");
    assert!(ops::build("rnn", &json!({"cell": "transformer"})).is_err());
}
