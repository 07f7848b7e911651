//! Reverse-mode automatic differentiation, graph to graph: the gradient is built
//! from ordinary nodes appended to the same graph, so the executor, the memory
//! planner and the eager path treat it like any other computation.

use crate::error::{GraphError, Result};
use crate::graph::{Graph, ValueId};
use crate::tensor::DType;

/// Appends the nodes computing d(sum(target)) / d(source) for every source and
/// returns their ids; `None` for a source the target does not depend on (as
/// TensorFlow's `GradientTape.gradient`).
///
/// # Errors
/// `DType` when the target is not float; whatever an op's backward rule raises
/// (e.g. unsupported second-order gradients).
pub fn gradients(
    g: &mut Graph,
    target: ValueId,
    sources: &[ValueId],
) -> Result<Vec<Option<ValueId>>> {
    if g.ty(target).dtype != DType::F32 {
        return Err(GraphError::dtype(format!(
            "gradient: the target must be a float tensor, got {}",
            g.ty(target).dtype.name()
        )));
    }
    let n_values = g.values.len();
    let n_nodes = g.nodes.len();

    // Values that depend on a source (and so may carry a gradient).
    let mut depends = vec![false; n_values];
    for &s in sources {
        depends[s] = g.is_float(s);
    }
    for node in &g.nodes {
        if node.inputs.iter().any(|&v| depends[v]) {
            for &o in &node.outputs {
                depends[o] = g.is_float(o);
            }
        }
    }
    if !depends[target] {
        return Ok(vec![None; sources.len()]);
    }

    // Seed: ones shaped like the target (the gradient of sum(target)).
    let shape = g.shape(target).to_vec();
    let one = g.scalar(1.0);
    let seed = g.broadcast_to(one, shape)?;
    let mut grads: Vec<Option<ValueId>> = vec![None; n_values];
    grads[target] = Some(seed);

    for node_index in (0..n_nodes).rev() {
        let node = &g.nodes[node_index];
        let dys: Vec<Option<ValueId>> = node.outputs.iter().map(|&o| grads[o]).collect();
        if dys.iter().all(Option::is_none) || !node.inputs.iter().any(|&v| depends[v]) {
            continue;
        }
        let inputs = node.inputs.clone();
        let outputs = node.outputs.clone();
        // Take the op out so `backward` can append to the graph it lives in.
        let op = std::mem::replace(&mut g.nodes[node_index].op, Box::new(Placeholder));
        let result = op.backward(g, &inputs, &outputs, &dys);
        g.nodes[node_index].op = op;
        let dxs = result
            .map_err(|e| e.context(&format!("gradient of '{}'", g.nodes[node_index].op.name())))?;
        for (&input, dx) in inputs.iter().zip(dxs) {
            let (Some(dx), true) = (dx, depends[input]) else {
                continue;
            };
            grads[input] = Some(match grads[input] {
                Some(prev) => g.add(prev, dx)?,
                None => dx,
            });
        }
    }
    Ok(sources.iter().map(|&s| grads[s]).collect())
}

/// Stands in for an op while its backward rule runs; never executed.
#[derive(Debug)]
struct Placeholder;

impl crate::ops::Op for Placeholder {
    fn name(&self) -> &'static str {
        "placeholder"
    }
    fn infer(&self, _: &[&crate::tensor::TensorType]) -> Result<Vec<crate::tensor::TensorType>> {
        Err(GraphError::unsupported("placeholder op"))
    }
    fn forward(
        &self,
        _: &crate::ops::Ctx,
        _: &[crate::tensor::TensorRef],
        _: &mut [crate::tensor::TensorMut],
    ) -> Result<()> {
        Err(GraphError::unsupported("placeholder op"))
    }
    fn backward(
        &self,
        _: &mut Graph,
        _: &[ValueId],
        _: &[ValueId],
        _: &[Option<ValueId>],
    ) -> Result<Vec<Option<ValueId>>> {
        Err(GraphError::unsupported("placeholder op"))
    }
}
