//! Fusion pass: `matmul` (or a plain `conv`) followed by a bias `add` and/or an
//! activation becomes one `dense` (or `conv`) op, whose GEMM adds the bias and
//! applies the activation in its epilogue (one pass over the output instead of
//! three) and whose backward is the fused one. Graphs built from primitive ops
//! (custom layers, Lambda layers) get what the built-in layers lower to directly.
//! Then a table lookup (`take`) read only by a `dense` becomes one `take_dense`,
//! which multiplies each distinct row of the batch once; and a `take_dense` that
//! is a recurrent layer's input projection becomes the lookup alone, with the
//! layer projecting each step's rows itself (the sequence's projection is never
//! written out and read back).

use pyfuncnet_kernels::binary::Binary;
use pyfuncnet_kernels::unary::Unary;

use crate::graph::{Graph, ValueId, ValueSource};
use crate::ops::binary::BinaryOp;
use crate::ops::conv::ConvOp;
use crate::ops::gather::TakeOp;
use crate::ops::matmul::{DenseOp, MatmulOp, TakeDenseOp};
use crate::ops::normalize_axis;
use crate::ops::recurrent::{RnnLookup, RnnOp};
use crate::ops::unary::UnaryOp;
use crate::ops::Op;
use crate::tensor::DType;

/// A product that can take a bias and an activation into its epilogue.
enum Head {
    Matmul,
    Conv(ConvOp),
}

impl Head {
    /// The head of a fusion at `node`, with its output's last dimension.
    fn of(g: &Graph, node: usize) -> Option<(Head, usize)> {
        let node = &g.nodes[node];
        let (x, w) = (*node.inputs.first()?, *node.inputs.get(1)?);
        if g.ty(x).dtype != DType::F32 || g.ty(w).dtype != DType::F32 {
            return None;
        }
        let w_shape = g.shape(w);
        if let Some(op) = node.op.as_any().downcast_ref::<MatmulOp>() {
            let plain = !op.transpose_a && !op.transpose_b;
            return (plain && w_shape.len() == 2 && g.shape(x).len() >= 2)
                .then(|| (Head::Matmul, w_shape[1]));
        }
        let op = node.op.as_any().downcast_ref::<ConvOp>()?;
        let units = *w_shape.last()?;
        (!op.use_bias && op.activation == Unary::Linear).then(|| (Head::Conv(op.clone()), units))
    }

    fn fused(self, activation: Unary, use_bias: bool) -> Box<dyn Op> {
        match self {
            Head::Matmul => Box::new(DenseOp {
                activation,
                use_bias,
            }),
            Head::Conv(conv) => Box::new(ConvOp {
                activation,
                use_bias,
                ..conv
            }),
        }
    }
}

/// Rewrites every `matmul(x, w)` (no transposes, `w` of rank 2) or plain `conv(x,
/// w)` whose result feeds only an `add` of a bias of shape `(units,)` and/or only
/// an activation whose derivative needs no input, into one `dense` or `conv` node
/// in place of the last op of the pattern. Values in `keep` (fetched outputs, the
/// loss) are never fused away. The replaced nodes stay in the graph, unread, and
/// are neither planned nor differentiated. Returns the number of fusions.
pub fn fuse_dense(g: &mut Graph, keep: &[ValueId]) -> usize {
    let readers = count_readers(g, keep);
    let mut fused = 0;
    for mm in 0..g.nodes.len() {
        let Some((head, units)) = Head::of(g, mm) else {
            continue;
        };
        let node = &g.nodes[mm];
        let (x, w, m) = (node.inputs[0], node.inputs[1], node.outputs[0]);
        let (mut last, mut cur) = (mm, m);
        let mut bias = None;
        let add_node = sole_reader(g, &readers, cur).filter(|&n| {
            let add = g.nodes[n].op.as_any().downcast_ref::<BinaryOp>();
            add.is_some_and(|b| b.kind == Binary::Add)
        });
        if let Some(n) = add_node {
            let add = &g.nodes[n];
            let other = if add.inputs[0] == cur {
                add.inputs[1]
            } else {
                add.inputs[0]
            };
            let bias_like = g.ty(other).dtype == DType::F32 && g.shape(other) == [units];
            if bias_like && g.shape(add.outputs[0]) == g.shape(cur) {
                bias = Some(other);
                (last, cur) = (n, add.outputs[0]);
            }
        }
        let mut activation = Unary::Linear;
        if let Some(n) = sole_reader(g, &readers, cur) {
            let act = &g.nodes[n];
            if let Some(u) = act.op.as_any().downcast_ref::<UnaryOp>() {
                if !u.kind.grad_needs_input() {
                    activation = u.kind;
                    (last, cur) = (n, act.outputs[0]);
                }
            }
        }
        if last == mm {
            continue;
        }
        let mut inputs = vec![x, w];
        inputs.extend(bias);
        let dense = head.fused(activation, bias.is_some());
        // The pattern's result keeps its value id and type: check the fused op
        // infers exactly that type before committing.
        let types: Vec<_> = inputs.iter().map(|&v| g.ty(v)).collect();
        match dense.infer(&types) {
            Ok(t) if t.len() == 1 && t[0] == *g.ty(cur) => {}
            _ => continue,
        }
        debug_assert!(
            matches!(g.values[cur].source, ValueSource::Node { node, .. } if node == last)
        );
        let label = g.nodes[last]
            .label
            .take()
            .or_else(|| g.nodes[mm].label.clone());
        let node = &mut g.nodes[last];
        node.op = dense;
        node.inputs = inputs;
        node.label = label;
        fused += 1;
    }
    fused
}

/// Rewrites every `dense` (or plain `matmul` by a rank-2 kernel) whose input is a
/// `take` along the first axis of a rank-2 table, read by nothing else, into one
/// `take_dense` node in place of it (the `take` stays in the graph, unread).
/// Values in `keep` are never fused away. Returns the number of fusions.
pub fn fuse_take_dense(g: &mut Graph, keep: &[ValueId]) -> usize {
    let readers = count_readers(g, keep);
    let mut fused = 0;
    for d in (0..g.nodes.len()).filter(|&d| readers.live[d]) {
        let op = g.nodes[d].op.as_any();
        let (activation, use_bias) = if let Some(dense) = op.downcast_ref::<DenseOp>() {
            (dense.activation, dense.use_bias)
        } else if matches!(Head::of(g, d), Some((Head::Matmul, _))) {
            (Unary::Linear, false)
        } else {
            continue;
        };
        let (x, y) = (g.nodes[d].inputs[0], g.nodes[d].outputs[0]);
        let ValueSource::Node { node: t, .. } = g.values[x].source else {
            continue;
        };
        let Some(take) = g.nodes[t].op.as_any().downcast_ref::<TakeOp>() else {
            continue;
        };
        let (table, indices) = (g.nodes[t].inputs[0], g.nodes[t].inputs[1]);
        if readers.count[x] != 1
            || g.shape(table).len() != 2
            || normalize_axis("take", take.axis, 2).ok() != Some(0)
        {
            continue;
        }
        let mut inputs = vec![table, indices];
        inputs.extend_from_slice(&g.nodes[d].inputs[1..]);
        let op = TakeDenseOp {
            activation,
            use_bias,
            project: true,
        };
        let types: Vec<_> = inputs.iter().map(|&v| g.ty(v)).collect();
        let out_types = match op.infer(&types) {
            Ok(t) if t[0] == *g.ty(y) => t,
            _ => continue,
        };
        // The fused node's run-time errors are about the indices: it carries the
        // lookup's layer label (so its time and errors are the Embedding's).
        let label = g.nodes[t].label.clone().or_else(|| g.nodes[d].label.take());
        let node = &mut g.nodes[d];
        node.op = Box::new(op);
        node.inputs = inputs;
        node.label = label;
        for ty in out_types.into_iter().skip(1) {
            g.add_node_output(d, ty);
        }
        fused += 1;
    }
    fused
}

/// Rewrites every `rnn` whose input projection is a `take_dense` without an
/// activation, of indices `(batch, time)`, read by nothing else, into an `rnn`
/// that projects the looked-up rows step by step ([`RnnLookup`]): the `take_dense`
/// becomes the lookup alone (without `project`), whose gathered rows and positions
/// the `rnn` reads with the kernel and bias. A layer that runs as one task keeps
/// its projection apart, where the product splits across threads (fused, it would
/// run on the layer's one thread). Values in `keep` are never fused away. Returns
/// the number of fusions.
pub fn fuse_take_rnn(g: &mut Graph, keep: &[ValueId]) -> usize {
    let readers = count_readers(g, keep);
    let mut fused = 0;
    for r in (0..g.nodes.len()).filter(|&r| readers.live[r]) {
        let Some(rnn) = g.nodes[r].op.as_any().downcast_ref::<RnnOp>() else {
            continue;
        };
        let xp = g.nodes[r].inputs[0];
        let ValueSource::Node { node: t, output: 0 } = g.values[xp].source else {
            continue;
        };
        let Some(&projection) = g.nodes[t].op.as_any().downcast_ref::<TakeDenseOp>() else {
            continue;
        };
        let (table, indices) = (g.nodes[t].inputs[0], g.nodes[t].inputs[1]);
        let fusable = rnn.lookup.is_none()
            && projection.project
            && projection.activation == Unary::Linear
            && readers.count[xp] == 1
            && !g.node_cost(r).single_task
            && g.shape(indices).len() == 2
            && g.shape(table).get(1).is_some_and(|&width| width > 0);
        if !fusable {
            continue;
        }
        let [y, _, positions, gathered] = g.nodes[t].outputs[..] else {
            continue;
        };
        let lookup = TakeDenseOp {
            activation: Unary::Linear,
            use_bias: false,
            project: false,
        };
        let mut inputs = vec![gathered, positions, g.nodes[t].inputs[2]];
        inputs.extend(projection.use_bias.then(|| g.nodes[t].inputs[3]));
        inputs.extend_from_slice(&g.nodes[r].inputs[1..]);
        let op = RnnOp {
            config: rnn.config,
            lookup: Some(RnnLookup {
                use_bias: projection.use_bias,
            }),
        };
        // Both nodes keep their outputs' types (but the lookup's emptied `y`):
        // check the new ops infer exactly those before committing.
        let same_types = |op: &dyn crate::ops::Op, inputs: &[ValueId], node: usize, from: usize| {
            let types: Vec<_> = inputs.iter().map(|&v| g.ty(v)).collect();
            op.infer(&types).is_ok_and(|t| {
                let outputs = &g.nodes[node].outputs;
                t.len() == outputs.len()
                    && t.iter().zip(outputs).skip(from).all(|(t, &v)| t == g.ty(v))
            })
        };
        if !same_types(&op, &inputs, r, 0) || !same_types(&lookup, &[table, indices], t, 1) {
            continue;
        }
        let mut empty = g.shape(indices).to_vec();
        empty.push(0);
        g.values[y].ty = crate::tensor::TensorType::f32(empty);
        g.nodes[t].op = Box::new(lookup);
        g.nodes[t].inputs = vec![table, indices];
        g.nodes[r].op = Box::new(op);
        g.nodes[r].inputs = inputs;
        fused += 1;
    }
    fused
}

/// Who reads each value: only live nodes (those `keep` needs, directly or through
/// others) count, so nodes an earlier fusion replaced, or that nothing uses, do not.
struct Readers {
    /// Live readers of each value, plus one for each value in `keep`.
    count: Vec<usize>,
    live: Vec<bool>,
}

fn count_readers(g: &Graph, keep: &[ValueId]) -> Readers {
    let mut count = vec![0usize; g.values.len()];
    let mut live = vec![false; g.nodes.len()];
    for &v in keep {
        count[v] += 1;
    }
    for (n, node) in g.nodes.iter().enumerate().rev() {
        if node.outputs.iter().any(|&o| count[o] > 0) {
            live[n] = true;
            for &v in &node.inputs {
                count[v] += 1;
            }
        }
    }
    Readers { count, live }
}

/// The only node reading `v`, when exactly one live node does and nothing else needs it.
fn sole_reader(g: &Graph, readers: &Readers, v: ValueId) -> Option<usize> {
    if readers.count[v] != 1 {
        return None;
    }
    (0..g.nodes.len()).find(|&n| readers.live[n] && g.nodes[n].inputs.contains(&v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Plan;
    use crate::tensor::TensorType;

    fn planned_ops(g: &Graph, fetches: &[ValueId]) -> Vec<&'static str> {
        let plan = Plan::new(g, fetches);
        plan.order.iter().map(|&i| g.nodes[i].op.name()).collect()
    }

    fn matmul(g: &mut Graph, x: ValueId, w: ValueId) -> ValueId {
        g.apply1(Box::new(MatmulOp::default()), &[x, w]).unwrap()
    }

    #[test]
    fn matmul_bias_activation_becomes_one_dense() {
        let mut g = Graph::new();
        let x = g.add_input(TensorType::f32(vec![5, 3]));
        let w = g.add_weight(0, TensorType::f32(vec![3, 4]));
        let b = g.add_weight(1, TensorType::f32(vec![4]));
        let m = matmul(&mut g, x, w);
        let z = g.add(b, m).unwrap(); // the bias on either side
        let y = g.unary(Unary::Relu, z).unwrap();
        assert_eq!(fuse_dense(&mut g, &[y]), 1);
        assert_eq!(planned_ops(&g, &[y]), vec!["dense"]);
        let dense = g.nodes[2].op.as_any().downcast_ref::<DenseOp>().unwrap();
        assert_eq!((dense.activation, dense.use_bias), (Unary::Relu, true));
        assert_eq!(g.nodes[2].inputs, vec![x, w, b]);
    }

    #[test]
    fn partial_patterns_fuse_and_shared_values_do_not() {
        let mut g = Graph::new();
        let x = g.add_input(TensorType::f32(vec![2, 5, 3]));
        let w = g.add_weight(0, TensorType::f32(vec![3, 4]));
        let b = g.add_weight(1, TensorType::f32(vec![4]));
        // matmul + tanh (no bias), batched input.
        let m1 = matmul(&mut g, x, w);
        let y1 = g.unary(Unary::Tanh, m1).unwrap();
        // matmul + bias whose pre-activation is also fetched: only the add fuses.
        let m2 = matmul(&mut g, x, w);
        let z2 = g.add(m2, b).unwrap();
        let y2 = g.unary(Unary::Sigmoid, z2).unwrap();
        // matmul read twice: nothing fuses.
        let m3 = matmul(&mut g, x, w);
        let y3 = g.mul(m3, m3).unwrap();
        // gelu's derivative needs its input: it stays separate (the add fuses).
        let m4 = matmul(&mut g, x, w);
        let z4 = g.add(m4, b).unwrap();
        let y4 = g.unary(Unary::Gelu { approximate: false }, z4).unwrap();
        let fetches = [y1, z2, y2, y3, y4];
        assert_eq!(fuse_dense(&mut g, &fetches), 3);
        // Four independent chains, each planned in the order it runs.
        assert_eq!(
            planned_ops(&g, &fetches),
            vec!["dense", "dense", "sigmoid", "matmul", "multiply", "dense", "gelu"]
        );
    }

    #[test]
    fn a_lookup_read_only_by_a_dense_becomes_one_take_dense() {
        let mut g = Graph::new();
        let idx = g.add_input(TensorType::new(vec![2, 7], DType::I32));
        let table = g.add_weight(0, TensorType::f32(vec![10, 3]));
        let w = g.add_weight(1, TensorType::f32(vec![3, 4]));
        let b = g.add_weight(2, TensorType::f32(vec![4]));
        let take = |g: &mut Graph| {
            g.apply1(Box::new(TakeOp { axis: 0 }), &[table, idx])
                .unwrap()
        };
        // take -> matmul + bias + tanh: one take_dense.
        let x1 = take(&mut g);
        let m1 = matmul(&mut g, x1, w);
        let z1 = g.add(m1, b).unwrap();
        let y1 = g.unary(Unary::Tanh, z1).unwrap();
        // take -> plain matmul: one take_dense without bias.
        let x2 = take(&mut g);
        let y2 = matmul(&mut g, x2, w);
        // The lookup is also fetched: it stays, and the dense reads it.
        let x3 = take(&mut g);
        let m3 = matmul(&mut g, x3, w);
        let y3 = g.add(m3, b).unwrap();
        let fetches = [y1, y2, x3, y3];
        assert_eq!(fuse_dense(&mut g, &fetches), 2);
        assert_eq!(fuse_take_dense(&mut g, &fetches), 2);
        assert_eq!(
            planned_ops(&g, &fetches),
            vec!["take_dense", "take_dense", "take", "dense"]
        );
        let fused = g.values[y1].source.clone();
        let ValueSource::Node { node, output: 0 } = fused else {
            panic!("y1 comes from a node's first output");
        };
        assert_eq!(g.nodes[node].inputs, vec![table, idx, w, b]);
        let op = g.nodes[node]
            .op
            .as_any()
            .downcast_ref::<TakeDenseOp>()
            .unwrap();
        assert_eq!((op.activation, op.use_bias), (Unary::Tanh, true));
        let outputs: Vec<_> = g.nodes[node]
            .outputs
            .iter()
            .map(|&v| g.ty(v).clone())
            .collect();
        assert_eq!(
            outputs,
            vec![
                TensorType::f32(vec![2, 7, 4]),
                TensorType::new(vec![14], DType::I32),
                TensorType::new(vec![2, 7], DType::I32),
                TensorType::f32(vec![14, 3]),
            ]
        );
    }

    #[test]
    fn a_recurrent_layer_projects_its_looked_up_rows_itself() {
        let mut g = Graph::new();
        // 64 rows of 8 steps of an LSTM of 32 units split into two row tasks; 4 rows
        // run as one.
        let idx = g.add_input(TensorType::new(vec![64, 8], DType::I32));
        let few = g.add_input(TensorType::new(vec![4, 8], DType::I32));
        let table = g.add_weight(0, TensorType::f32(vec![10, 3]));
        let w = g.add_weight(1, TensorType::f32(vec![3, 128]));
        let b = g.add_weight(2, TensorType::f32(vec![128]));
        let r = g.add_weight(3, TensorType::f32(vec![32, 128]));
        let attrs = serde_json::json!({"cell": "lstm", "initial_state": false});
        let rnn = |g: &mut Graph, xp| {
            g.apply(crate::ops::build("rnn", &attrs).unwrap(), &[xp, r])
                .unwrap()
        };
        let projection = |g: &mut Graph, activation, indices| {
            let x = g
                .apply1(Box::new(TakeOp { axis: 0 }), &[table, indices])
                .unwrap();
            let m = matmul(g, x, w);
            let z = g.add(m, b).unwrap();
            match activation {
                Some(a) => g.unary(a, z).unwrap(),
                None => z,
            }
        };
        // A projection without activation, read only by the layer: fused.
        let xp1 = projection(&mut g, None, idx);
        let h1 = rnn(&mut g, xp1)[1];
        // With an activation (in the take_dense), fetched, or for a layer that runs
        // as one task: left as they are.
        let xp2 = projection(&mut g, Some(Unary::Tanh), idx);
        let h2 = rnn(&mut g, xp2)[1];
        let xp3 = projection(&mut g, None, idx);
        let h3 = rnn(&mut g, xp3)[1];
        let xp4 = projection(&mut g, None, few);
        let h4 = rnn(&mut g, xp4)[1];
        let fetches = [h1, h2, h3, xp3, h4];
        fuse_dense(&mut g, &fetches);
        assert_eq!(fuse_take_dense(&mut g, &fetches), 4);
        assert_eq!(fuse_take_rnn(&mut g, &fetches), 1);
        let ValueSource::Node { node: fused, .. } = g.values[h1].source else {
            panic!("h1 comes from a node");
        };
        let ValueSource::Node { node: lookup, .. } = g.values[g.nodes[fused].inputs[0]].source
        else {
            panic!("the rows come from a node");
        };
        let rnn_op = g.nodes[fused].op.as_any().downcast_ref::<RnnOp>().unwrap();
        assert_eq!(rnn_op.lookup, Some(RnnLookup { use_bias: true }));
        let outs = &g.nodes[lookup].outputs;
        assert_eq!(g.nodes[fused].inputs, vec![outs[3], outs[2], w, b, r]);
        assert_eq!(g.nodes[lookup].inputs, vec![table, idx]);
        let take_op = g.nodes[lookup]
            .op
            .as_any()
            .downcast_ref::<TakeDenseOp>()
            .unwrap();
        assert!(!take_op.project);
        assert_eq!(g.shape(outs[0]), [64, 8, 0]);
        for h in [h2, h3, h4] {
            let ValueSource::Node { node, .. } = g.values[h].source else {
                panic!("a node's output");
            };
            let op = g.nodes[node].op.as_any().downcast_ref::<RnnOp>().unwrap();
            assert_eq!(op.lookup, None);
        }
        let mut ops = planned_ops(&g, &fetches);
        ops.sort_unstable();
        assert_eq!(ops, [["rnn"; 4], ["take_dense"; 4]].concat());
    }

    /// What a compiled program runs: the spec parser applies both passes.
    #[test]
    fn parsed_embedding_projections_run_as_take_dense() {
        let spec = serde_json::json!({
            "inputs": [{"shape": [2, 3], "dtype": "int32"}],
            "weights": [
                {"index": 0, "shape": [10, 4]},
                {"index": 1, "shape": [4, 5]},
                {"index": 2, "shape": [5]},
            ],
            "nodes": [
                {"op": "take", "attrs": {"axis": 0}, "inputs": [1, 0]},
                {"op": "matmul", "attrs": {}, "inputs": [4, 2]},
                {"op": "add", "attrs": {}, "inputs": [5, 3]},
            ],
            "outputs": [6],
        });
        let parsed = crate::spec::parse(&spec.to_string()).unwrap();
        assert_eq!(
            planned_ops(&parsed.graph, &parsed.outputs),
            vec!["take_dense"]
        );
    }

    #[test]
    fn conv_bias_activation_becomes_one_fused_conv() {
        let mut g = Graph::new();
        let x = g.add_input(TensorType::f32(vec![2, 6, 6, 3]));
        let w = g.add_weight(0, TensorType::f32(vec![3, 3, 3, 4]));
        let b = g.add_weight(1, TensorType::f32(vec![4]));
        let attrs = serde_json::json!({"strides": [1, 1], "padding": "same"});
        let c = g
            .apply1(crate::ops::build("conv", &attrs).unwrap(), &[x, w])
            .unwrap();
        let z = g.add(c, b).unwrap();
        let y = g.unary(Unary::Relu, z).unwrap();
        assert_eq!(fuse_dense(&mut g, &[y]), 1);
        assert_eq!(planned_ops(&g, &[y]), vec!["conv"]);
        let conv = g.nodes[2].op.as_any().downcast_ref::<ConvOp>().unwrap();
        assert_eq!((conv.activation, conv.use_bias), (Unary::Relu, true));
        assert_eq!(g.nodes[2].inputs, vec![x, w, b]);
    }

    #[test]
    fn a_bias_of_another_shape_is_left_alone() {
        let mut g = Graph::new();
        let x = g.add_input(TensorType::f32(vec![5, 3]));
        let w = g.add_weight(0, TensorType::f32(vec![3, 4]));
        let b = g.add_weight(1, TensorType::f32(vec![5, 4]));
        let m = matmul(&mut g, x, w);
        let z = g.add(m, b).unwrap();
        assert_eq!(fuse_dense(&mut g, &[z]), 0);
        assert_eq!(planned_ops(&g, &[z]), vec!["matmul", "add"]);
    }
}
