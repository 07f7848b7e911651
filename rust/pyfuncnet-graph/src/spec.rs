//! The plain graph spec Python hands over, parsed into a [`Graph`].
//!
//! ```json
//! {"inputs":  [{"shape": [32, 784], "dtype": "float32"}],
//!  "weights": [{"index": 0, "shape": [784, 64]}],
//!  "consts":  [{"shape": [], "data": [0.5]}],
//!  "nodes":   [{"op": "dense", "attrs": {"activation": "relu"}, "inputs": [0, 1, 2], "label": "dense"}],
//!  "outputs": [3], "loss": null, "trainable": [0], "updates": [[2, 7]], "seed": 0}
//! ```
//! Value ids number the inputs first, then the weights, then the constants, then
//! each node's outputs in order.

use serde::Deserialize;
use serde_json::Value as Json;

use crate::error::{GraphError, Result};
use crate::graph::{Graph, ValueId};
use crate::ops;
use crate::tensor::{DType, TensorType};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InputSpec {
    shape: Vec<usize>,
    #[serde(default = "float32")]
    dtype: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WeightSpec {
    index: usize,
    shape: Vec<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConstSpec {
    shape: Vec<usize>,
    data: Vec<f32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeSpec {
    op: String,
    #[serde(default)]
    attrs: Json,
    inputs: Vec<ValueId>,
    #[serde(default)]
    label: Option<String>,
}

fn float32() -> String {
    "float32".to_string()
}

/// A parsed spec: the graph plus what to compute from it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    #[serde(default)]
    inputs: Vec<InputSpec>,
    #[serde(default)]
    weights: Vec<WeightSpec>,
    #[serde(default)]
    consts: Vec<ConstSpec>,
    #[serde(default)]
    nodes: Vec<NodeSpec>,
    #[serde(default)]
    outputs: Vec<ValueId>,
    #[serde(default)]
    loss: Option<ValueId>,
    #[serde(default)]
    trainable: Vec<usize>,
    #[serde(default)]
    updates: Vec<(usize, ValueId)>,
    #[serde(default)]
    seed: u64,
}

/// The graph a spec describes and the roles of its values.
#[derive(Debug)]
pub struct Spec {
    pub graph: Graph,
    /// Values returned to the caller.
    pub outputs: Vec<ValueId>,
    /// The scalar to minimise in a training step.
    pub loss: Option<ValueId>,
    /// Weight store indices to train, and the graph value of each.
    pub trainable: Vec<(usize, ValueId)>,
    /// Non-trainable weights assigned after a training step: (weight index, value).
    pub updates: Vec<(usize, ValueId)>,
    pub seed: u64,
}

/// Parses and validates a JSON spec, building its graph (shape inference runs here).
///
/// # Errors
/// `Value` for malformed JSON or dangling ids; op construction and inference errors
/// prefixed with the node's label.
pub fn parse(text: &str) -> Result<Spec> {
    let raw: RawSpec = serde_json::from_str(text)
        .map_err(|e| GraphError::value(format!("invalid graph spec: {e}")))?;
    let mut g = Graph::new();
    // Spec ids -> graph ids (lowering may add extra graph nodes).
    let mut ids: Vec<ValueId> = Vec::new();
    for input in &raw.inputs {
        let dtype = DType::from_name(&input.dtype)?;
        ids.push(g.add_input(TensorType::new(input.shape.clone(), dtype)));
    }
    let mut weight_ids = Vec::new();
    for w in &raw.weights {
        let id = g.add_weight(w.index, TensorType::f32(w.shape.clone()));
        weight_ids.push((w.index, id));
        ids.push(id);
    }
    for c in raw.consts {
        ids.push(g.add_const(c.shape, c.data)?);
    }
    for (n, node) in raw.nodes.iter().enumerate() {
        let inputs: Vec<ValueId> = node
            .inputs
            .iter()
            .map(|&i| {
                ids.get(i).copied().ok_or_else(|| {
                    GraphError::value(format!(
                        "node {n} ('{}'): input id {i} is not defined before it",
                        node.op
                    ))
                })
            })
            .collect::<Result<_>>()?;
        let label = node.label.clone().unwrap_or_else(|| node.op.clone());
        let outs = lower(&mut g, &node.op, &node.attrs, &inputs).map_err(|e| e.context(&label))?;
        if let Some(l) = &node.label {
            let last = g.nodes.len() - 1;
            g.nodes[last].label = Some(l.clone());
        }
        ids.extend(outs);
    }
    let resolve = |i: ValueId, what: &str| {
        ids.get(i)
            .copied()
            .ok_or_else(|| GraphError::value(format!("{what} id {i} does not exist")))
    };
    let outputs = raw
        .outputs
        .iter()
        .map(|&i| resolve(i, "output"))
        .collect::<Result<Vec<_>>>()?;
    let loss = raw.loss.map(|i| resolve(i, "loss")).transpose()?;
    if let Some(l) = loss {
        if g.ty(l).dtype != DType::F32 || g.ty(l).numel() != 1 {
            return Err(GraphError::shape(format!(
                "the loss must be a float scalar, got shape {:?}",
                g.ty(l).shape
            )));
        }
    }
    let trainable = raw
        .trainable
        .iter()
        .map(|&w| {
            weight_ids
                .iter()
                .find(|(index, _)| *index == w)
                .copied()
                .ok_or_else(|| {
                    GraphError::value(format!(
                        "trainable weight {w} is not among the spec's weights"
                    ))
                })
        })
        .collect::<Result<Vec<_>>>()?;
    let mut updates = Vec::new();
    for &(w, v) in &raw.updates {
        let v = resolve(v, "update")?;
        let Some(&(_, wid)) = weight_ids.iter().find(|(index, _)| *index == w) else {
            return Err(GraphError::value(format!(
                "updated weight {w} is not among the spec's weights"
            )));
        };
        if g.ty(v).shape != g.ty(wid).shape {
            return Err(GraphError::shape(format!(
                "update of weight {w}: value shape {:?} differs from the weight's {:?}",
                g.ty(v).shape,
                g.ty(wid).shape
            )));
        }
        updates.push((w, v));
    }
    let mut keep = outputs.clone();
    keep.extend(loss);
    keep.extend(updates.iter().map(|&(_, v)| v));
    crate::fuse::fuse_dense(&mut g, &keep);
    crate::fuse::fuse_take_dense(&mut g, &keep);
    crate::fuse::fuse_take_rnn(&mut g, &keep);
    Ok(Spec {
        graph: g,
        outputs,
        loss,
        trainable,
        updates,
        seed: raw.seed,
    })
}

/// Builds one spec node. `dense` with an activation whose derivative needs the
/// pre-activation (gelu, elu, ...) becomes `dense` + that activation.
fn lower(g: &mut Graph, op: &str, attrs: &Json, inputs: &[ValueId]) -> Result<Vec<ValueId>> {
    if op == "dense" {
        let act = attrs
            .get("activation")
            .and_then(Json::as_str)
            .unwrap_or("linear");
        if let Some(kind) = pyfuncnet_kernels::unary::Unary::from_name(act, None, None) {
            if kind.grad_needs_input() && act != "linear" {
                let mut linear = attrs.clone();
                linear["activation"] = Json::from("linear");
                let z = g.apply1(ops::build("dense", &linear)?, inputs)?;
                return Ok(vec![g.unary(kind, z)?]);
            }
        }
    }
    g.apply(ops::build(op, attrs)?, inputs)
}
