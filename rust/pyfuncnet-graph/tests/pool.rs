//! `max_pool` and `avg_pool` against a plain reference, and their gradients
//! against central finite differences of loss = sum(pool(x) * w), for 1-3 spatial
//! axes with 'valid' and 'same' padding.

mod common;

use pyfuncnet_graph::autodiff::gradients;
use pyfuncnet_graph::eager;
use pyfuncnet_graph::exec::Executor;
use pyfuncnet_graph::graph::Graph;
use pyfuncnet_graph::ops::{self, Ctx};
use pyfuncnet_graph::tensor::{Buffer, DataRef, TensorRef, TensorType};
use serde_json::{json, Value};

/// One pooling case: input shape (batch, spatial..., channels) and window.
struct Case {
    input: Vec<usize>,
    pool_size: Vec<usize>,
    strides: Vec<usize>,
    padding: &'static str,
}

impl Case {
    fn attrs(&self) -> Value {
        json!({"pool_size": self.pool_size, "strides": self.strides, "padding": self.padding})
    }
}

fn cases() -> Vec<Case> {
    let case = |input: &[usize], pool_size: &[usize], strides: &[usize], padding| Case {
        input: input.to_vec(),
        pool_size: pool_size.to_vec(),
        strides: strides.to_vec(),
        padding,
    };
    vec![
        // 1-D: a dropped tail; 'same' with one padding element each side.
        case(&[2, 7, 3], &[2], &[2], "valid"),
        case(&[2, 9, 2], &[3], &[2], "same"),
        // 2-D: overlapping windows; asymmetric 'same' padding (after only).
        case(&[2, 5, 4, 2], &[3, 3], &[1, 1], "valid"),
        case(&[1, 5, 6, 3], &[2, 3], &[2, 2], "same"),
        // 3-D: stride above the size along the last axis; 'same' with odd padding.
        case(&[1, 4, 5, 5, 2], &[2, 3, 2], &[1, 2, 3], "valid"),
        case(&[1, 3, 4, 5, 2], &[2, 2, 2], &[2, 2, 2], "same"),
    ]
}

/// Pooled values by Keras's rules in f64: per axis, 'valid' gives
/// `(n - k) / s + 1` outputs and 'same' `ceil(n / s)` with half the padding (rounded
/// down) before; padding is excluded from the max and from the average's count.
fn reference(c: &Case, x: &[f32], max: bool) -> (Vec<usize>, Vec<f64>) {
    let rank = c.input.len() - 2;
    let (batch, channels) = (c.input[0], c.input[rank + 1]);
    let spatial = &c.input[1..=rank];
    let geo: Vec<(usize, usize)> = (0..rank)
        .map(|a| {
            let (n, k, s) = (spatial[a], c.pool_size[a], c.strides[a]);
            if c.padding == "valid" {
                ((n - k) / s + 1, 0)
            } else {
                let out = n.div_ceil(s);
                (out, ((out - 1) * s + k).saturating_sub(n) / 2)
            }
        })
        .collect();
    let out_dims: Vec<usize> = geo.iter().map(|g| g.0).collect();
    let out_pixels: usize = out_dims.iter().product();
    let in_pixels: usize = spatial.iter().product();
    let taps: usize = c.pool_size.iter().product();
    let mut y = Vec::new();
    for b in 0..batch {
        for op in 0..out_pixels {
            let mut o = vec![0; rank];
            let mut rest = op;
            for a in (0..rank).rev() {
                o[a] = rest % out_dims[a];
                rest /= out_dims[a];
            }
            let mut read = Vec::new();
            for tap in 0..taps {
                let mut rest = tap;
                let mut pixel = 0i64;
                let mut inside = true;
                for a in (0..rank).rev() {
                    let t = rest % c.pool_size[a];
                    rest /= c.pool_size[a];
                    let pos = (o[a] * c.strides[a] + t) as i64 - geo[a].1 as i64;
                    inside &= pos >= 0 && pos < spatial[a] as i64;
                    let stride: usize = spatial[a + 1..].iter().product();
                    pixel += pos * stride as i64;
                }
                if inside {
                    read.push(pixel as usize);
                }
            }
            for ch in 0..channels {
                let vals = read
                    .iter()
                    .map(|&p| f64::from(x[(b * in_pixels + p) * channels + ch]));
                y.push(if max {
                    vals.fold(f64::MIN, f64::max)
                } else {
                    vals.sum::<f64>() / read.len() as f64
                });
            }
        }
    }
    let mut shape = vec![batch];
    shape.extend(&out_dims);
    shape.push(channels);
    (shape, y)
}

/// Distinct values 0.05 apart in random order: no two taps of a window are within
/// a finite-difference step of each other, so the max never switches taps.
fn distinct_values(n: usize, seed: u64) -> Vec<f32> {
    let keys = common::values(n, seed);
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| keys[a].total_cmp(&keys[b]));
    let mut x = vec![0.0; n];
    for (rank, &i) in order.iter().enumerate() {
        x[i] = (rank as f32 - n as f32 / 2.0) * 0.05;
    }
    x
}

#[test]
fn pool_forward_matches_reference() {
    for (seed, c) in cases().iter().enumerate() {
        let n: usize = c.input.iter().product();
        let x = common::values(n, seed as u64);
        for (op, max) in [("max_pool", true), ("avg_pool", false)] {
            let (want_shape, want) = reference(c, &x, max);
            let outs = eager::run(op, &c.attrs(), &[TensorRef::new_f32(&c.input, &x)]).unwrap();
            let (ty, Buffer::F32(got)) = &outs[0] else {
                panic!("{op}: expected a float output");
            };
            assert_eq!(ty.shape, want_shape, "{op} {}", c.attrs());
            for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (f64::from(g) - w).abs() <= 1e-5 * (1.0 + w.abs()),
                    "{op} {}: element {i} is {g}, expected {w}",
                    c.attrs()
                );
            }
        }
    }
}

/// Graph of loss = sum(op(x) * w) for fixed random `w`; returns (graph, loss, x).
fn loss_graph(op: &str, attrs: &Value, shape: &[usize]) -> (Graph, usize, usize) {
    let mut g = Graph::new();
    let x = g.add_input(TensorType::f32(shape.to_vec()));
    let y = g.apply1(ops::build(op, attrs).unwrap(), &[x]).unwrap();
    let y_shape = g.shape(y).to_vec();
    let w = g
        .add_const(
            y_shape.clone(),
            common::values(y_shape.iter().product(), 99),
        )
        .unwrap();
    let weighted = g.mul(y, w).unwrap();
    let loss = g
        .apply1(ops::build("sum", &json!({})).unwrap(), &[weighted])
        .unwrap();
    (g, loss, x)
}

fn first_f32(exec: &Executor, k: usize) -> Vec<f32> {
    match exec.fetch(k).data {
        DataRef::F32(d) => d.to_vec(),
        DataRef::I32(_) => unreachable!("float fetch"),
    }
}

/// Compares autodiff's gradient of the loss with central differences at `x`.
fn check_grad(op: &str, attrs: &Value, shape: &[usize], x: &[f32]) {
    let (mut g, loss, input) = loss_graph(op, attrs, shape);
    let dx = gradients(&mut g, loss, &[input]).unwrap()[0].expect("x gets a gradient");
    let mut exec = Executor::new(g, vec![dx]);
    exec.run(&Ctx::default(), &[TensorRef::new_f32(shape, x)], &[])
        .unwrap();
    let analytic = first_f32(&exec, 0);

    let (g, loss, _) = loss_graph(op, attrs, shape);
    let mut forward = Executor::new(g, vec![loss]);
    let mut eval = |data: &[f32]| {
        forward
            .run(&Ctx::default(), &[TensorRef::new_f32(shape, data)], &[])
            .unwrap();
        f64::from(first_f32(&forward, 0)[0])
    };
    let h = 1e-2f32;
    for e in 0..x.len() {
        let mut moved = x.to_vec();
        moved[e] = x[e] + h;
        let plus = eval(&moved);
        moved[e] = x[e] - h;
        let minus = eval(&moved);
        let fd = (plus - minus) / (2.0 * f64::from(h));
        let a = f64::from(analytic[e]);
        assert!(
            (a - fd).abs() <= 1e-2 * (1.0 + fd.abs()),
            "{op} {attrs} on {shape:?}: d/dx[{e}] autodiff {a} vs finite difference {fd}"
        );
    }
}

#[test]
fn max_pool_grad_matches_finite_difference() {
    for (seed, c) in cases().iter().enumerate() {
        let x = distinct_values(c.input.iter().product(), 10 + seed as u64);
        check_grad("max_pool", &c.attrs(), &c.input, &x);
    }
}

#[test]
fn avg_pool_grad_matches_finite_difference() {
    for (seed, c) in cases().iter().enumerate() {
        let x = common::values(c.input.iter().product(), 20 + seed as u64);
        check_grad("avg_pool", &c.attrs(), &c.input, &x);
    }
}

#[test]
fn avg_pool_grad_op_grad_matches_finite_difference() {
    // avg_pool_grad is linear in dy; its own gradient is avg_pool.
    for (seed, c) in cases().iter().enumerate() {
        let x = vec![0.0; c.input.iter().product()];
        let (dy_shape, _) = reference(c, &x, false);
        let mut attrs = c.attrs();
        attrs["input_shape"] = json!(c.input);
        let dy = common::values(dy_shape.iter().product(), 30 + seed as u64);
        check_grad("avg_pool_grad", &attrs, &dy_shape, &dy);
    }
}

#[test]
fn max_pool_grad_has_no_second_order_gradient() {
    let c = &cases()[0];
    let mut g = Graph::new();
    let x = g.add_input(TensorType::f32(c.input.clone()));
    let y = g
        .apply1(ops::build("max_pool", &c.attrs()).unwrap(), &[x])
        .unwrap();
    let dy = g.add_input(TensorType::f32(g.shape(y).to_vec()));
    let grad = ops::build("max_pool_grad", &c.attrs()).unwrap();
    let dx = g.apply1(grad, &[x, y, dy]).unwrap();
    let total = g
        .apply1(ops::build("sum", &json!({})).unwrap(), &[dx])
        .unwrap();
    let err = gradients(&mut g, total, &[x]).unwrap_err();
    assert!(err.message.contains("max_pool"), "{}", err.message);
}
