//! The op graph: values (inputs, weights, constants, node outputs) and nodes in
//! topological order. Nodes are only ever appended, so index order is a valid
//! execution order for forward graphs and for the gradient nodes autodiff adds.

use crate::error::{GraphError, Result};
use crate::ops::{Op, OpCost};
use crate::tensor::{DType, TensorType};

/// Index of a value in [`Graph::values`].
pub type ValueId = usize;

/// Where a value comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum ValueSource {
    /// The `i`-th input fed at every step.
    Input(usize),
    /// A model variable: index into the caller's weight store.
    Weight(usize),
    /// A constant baked into the graph.
    Const(Vec<f32>),
    /// Output `output` of node `node`.
    Node { node: usize, output: usize },
}

/// A value of the graph.
#[derive(Debug, Clone)]
pub struct Value {
    pub ty: TensorType,
    pub source: ValueSource,
}

/// One op application.
#[derive(Debug)]
pub struct Node {
    pub op: Box<dyn Op>,
    pub inputs: Vec<ValueId>,
    pub outputs: Vec<ValueId>,
    /// The layer (or user op) this node was built for; prefixes its error messages.
    pub label: Option<String>,
}

/// A graph under construction or compiled.
#[derive(Debug, Default)]
pub struct Graph {
    pub values: Vec<Value>,
    pub nodes: Vec<Node>,
    pub inputs: Vec<ValueId>,
}

impl Graph {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn ty(&self, v: ValueId) -> &TensorType {
        &self.values[v].ty
    }

    pub fn shape(&self, v: ValueId) -> &[usize] {
        &self.values[v].ty.shape
    }

    fn push_value(&mut self, ty: TensorType, source: ValueSource) -> ValueId {
        self.values.push(Value { ty, source });
        self.values.len() - 1
    }

    /// Adds the next step input.
    pub fn add_input(&mut self, ty: TensorType) -> ValueId {
        let idx = self.inputs.len();
        let id = self.push_value(ty, ValueSource::Input(idx));
        self.inputs.push(id);
        id
    }

    /// Adds a reference to weight `index` of the caller's store.
    pub fn add_weight(&mut self, index: usize, ty: TensorType) -> ValueId {
        self.push_value(ty, ValueSource::Weight(index))
    }

    /// Adds a float constant.
    ///
    /// # Errors
    /// `Shape` when `data` does not hold exactly the shape's element count.
    pub fn add_const(&mut self, shape: Vec<usize>, data: Vec<f32>) -> Result<ValueId> {
        let numel: usize = shape.iter().product();
        if numel != data.len() {
            return Err(GraphError::shape(format!(
                "constant of shape {shape:?} needs {numel} values, got {}",
                data.len()
            )));
        }
        Ok(self.push_value(TensorType::f32(shape), ValueSource::Const(data)))
    }

    /// A float scalar constant.
    pub fn scalar(&mut self, v: f32) -> ValueId {
        self.push_value(TensorType::f32(vec![]), ValueSource::Const(vec![v]))
    }

    /// Appends a node; infers and records the types of its outputs.
    ///
    /// # Errors
    /// Whatever the op's shape/dtype inference rejects, prefixed with the op name.
    pub fn apply(&mut self, op: Box<dyn Op>, inputs: &[ValueId]) -> Result<Vec<ValueId>> {
        if let Some(&bad) = inputs.iter().find(|&&v| v >= self.values.len()) {
            return Err(GraphError::value(format!(
                "{}: input value id {bad} does not exist",
                op.name()
            )));
        }
        let types: Vec<&TensorType> = inputs.iter().map(|&v| &self.values[v].ty).collect();
        let out_types = op.infer(&types).map_err(|e| e.context(op.name()))?;
        let node = self.nodes.len();
        let outputs: Vec<ValueId> = out_types
            .into_iter()
            .enumerate()
            .map(|(output, ty)| self.push_value(ty, ValueSource::Node { node, output }))
            .collect();
        self.nodes.push(Node {
            op,
            inputs: inputs.to_vec(),
            outputs: outputs.clone(),
            label: None,
        });
        Ok(outputs)
    }

    /// [`Graph::apply`] for single-output ops.
    pub fn apply1(&mut self, op: Box<dyn Op>, inputs: &[ValueId]) -> Result<ValueId> {
        let outs = self.apply(op, inputs)?;
        Ok(outs[0])
    }

    /// Appends an output of type `ty` to node `node` (for graph passes that replace
    /// a node's op by one with more outputs).
    pub fn add_node_output(&mut self, node: usize, ty: TensorType) -> ValueId {
        let output = self.nodes[node].outputs.len();
        let id = self.push_value(ty, ValueSource::Node { node, output });
        self.nodes[node].outputs.push(id);
        id
    }

    /// The estimated cost of running node `node` ([`Op::cost`] on its types).
    pub fn node_cost(&self, node: usize) -> OpCost {
        let n = &self.nodes[node];
        let ins: Vec<&TensorType> = n.inputs.iter().map(|&v| self.ty(v)).collect();
        let outs: Vec<&TensorType> = n.outputs.iter().map(|&v| self.ty(v)).collect();
        n.op.cost(&ins, &outs)
    }

    /// Whether a value is float-typed (and so can carry a gradient).
    pub fn is_float(&self, v: ValueId) -> bool {
        self.values[v].ty.dtype == DType::F32
    }
}
