//! The memory plan: which nodes run, and which buffer slot holds each value.
//!
//! Liveness: a value's slot is returned to the free pool right after the last node
//! that reads it, and reused by later values of the same storage type, so peak
//! memory follows the widest point of the graph rather than its length. Slots are
//! sized once when the plan is made; executing a plan allocates nothing.

use crate::graph::{Graph, ValueId, ValueSource};
use crate::tensor::DType;

/// Where the executor finds a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    /// The `i`-th step input.
    Input(usize),
    /// Weight `i` of the variable store.
    Weight(usize),
    /// A constant of the graph (its data lives in the value).
    Const,
    /// Buffer slot `s`.
    Slot(usize),
    /// Never computed (not needed by any fetched value).
    Unused,
}

/// The result of planning a graph for a set of fetched values.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Nodes to execute, in order.
    pub order: Vec<usize>,
    /// Location of every value.
    pub locations: Vec<Location>,
    /// Storage dtype and element capacity of every slot.
    pub slots: Vec<(DType, usize)>,
}

impl Plan {
    /// Plans the nodes needed to compute `fetches`; fetched values stay live to the end.
    pub fn new(g: &Graph, fetches: &[ValueId]) -> Plan {
        let n_values = g.values.len();
        // Nodes needed: walk back from the fetches.
        let mut needed_value = vec![false; n_values];
        for &f in fetches {
            needed_value[f] = true;
        }
        let mut needed_node = vec![false; g.nodes.len()];
        for (i, node) in g.nodes.iter().enumerate().rev() {
            if node.outputs.iter().any(|&o| needed_value[o]) {
                needed_node[i] = true;
                for &v in &node.inputs {
                    needed_value[v] = true;
                }
            }
        }
        let order: Vec<usize> = (0..g.nodes.len()).filter(|&i| needed_node[i]).collect();

        // Last step (position in `order`) reading each value; fetches live forever.
        let mut last_use = vec![None::<usize>; n_values];
        for (step, &ni) in order.iter().enumerate() {
            for &v in &g.nodes[ni].inputs {
                last_use[v] = Some(step);
            }
        }
        let mut pinned = vec![false; n_values];
        for &f in fetches {
            pinned[f] = true;
        }

        let mut locations: Vec<Location> = g
            .values
            .iter()
            .map(|v| match v.source {
                ValueSource::Input(i) => Location::Input(i),
                ValueSource::Weight(i) => Location::Weight(i),
                ValueSource::Const(_) => Location::Const,
                ValueSource::Node { .. } => Location::Unused,
            })
            .collect();
        let mut slots: Vec<(DType, usize)> = Vec::new();
        let mut free: Vec<usize> = Vec::new();
        for (step, &ni) in order.iter().enumerate() {
            let node = &g.nodes[ni];
            for &o in &node.outputs {
                let ty = g.ty(o);
                let storage = if ty.dtype.is_f32_storage() {
                    DType::F32
                } else {
                    DType::I32
                };
                let size = ty.numel();
                // Best fit among free slots of the same storage type: the smallest that
                // already holds `size`, else the largest (which then grows).
                let fit = free
                    .iter()
                    .enumerate()
                    .filter(|(_, &s)| slots[s].0 == storage)
                    .min_by_key(|(_, &s)| {
                        let cap = slots[s].1;
                        if cap >= size {
                            (0, cap)
                        } else {
                            (1, usize::MAX - cap)
                        }
                    })
                    .map(|(pos, _)| pos);
                let slot = match fit {
                    Some(pos) => free.swap_remove(pos),
                    None => {
                        slots.push((storage, 0));
                        slots.len() - 1
                    }
                };
                slots[slot].1 = slots[slot].1.max(size);
                locations[o] = Location::Slot(slot);
            }
            // Release inputs read for the last time here, and outputs nobody reads.
            for &v in node.inputs.iter().chain(&node.outputs) {
                if let Location::Slot(s) = locations[v] {
                    let dead = !pinned[v] && last_use[v].is_none_or(|l| l <= step);
                    if dead && !free.contains(&s) {
                        free.push(s);
                    }
                }
            }
        }
        Plan {
            order,
            locations,
            slots,
        }
    }
}
