//! `Optimizer`: an optimizer's configuration and state (slots, iteration count).

use pyo3::prelude::*;

use pyfuncnet_graph::optim::{OptimizerConfig, OptimizerState};

use crate::convert::{f32_array, f32_vec};
use crate::errors::value_err;

/// Optimizer configuration (Keras 3 formulas) and per-variable state.
#[pyclass(module = "pyfuncnet._core")]
pub struct Optimizer {
    pub config: OptimizerConfig,
    pub state: OptimizerState,
    pub sizes: Vec<usize>,
}

#[pymethods]
impl Optimizer {
    /// `config`: JSON such as `{"name": "adam", "beta_1": 0.9}`; `sizes`: the element
    /// count of each trainable variable, in the order training steps list them.
    #[new]
    fn new(config: &str, sizes: Vec<usize>) -> PyResult<Self> {
        let json: serde_json::Value = serde_json::from_str(config)
            .map_err(|e| value_err(format!("optimizer config is not valid JSON: {e}")))?;
        let config = OptimizerConfig::from_json(&json).map_err(value_err)?;
        let state = OptimizerState::new(&config, &sizes);
        Ok(Optimizer {
            config,
            state,
            sizes,
        })
    }

    /// Number of updates applied so far (Keras's `optimizer.iterations`).
    #[getter]
    fn iterations(&self) -> u64 {
        self.state.iterations
    }

    #[setter]
    fn set_iterations(&mut self, value: u64) {
        self.state.iterations = value;
    }

    /// The slot arrays of trainable variable `index` (e.g. Adam's m and v), flat.
    fn slots<'py>(&self, py: Python<'py>, index: usize) -> PyResult<Vec<Bound<'py, PyAny>>> {
        let var = self
            .state
            .variables
            .get(index)
            .ok_or_else(|| value_err(format!("optimizer variable {index} does not exist")))?;
        var.slots
            .iter()
            .map(|s| f32_array(py, &[s.len()], s.clone()).map(|a| a.into_any()))
            .collect()
    }

    /// Replaces the slot arrays of trainable variable `index`.
    fn set_slots(&mut self, index: usize, slots: Vec<Bound<'_, PyAny>>) -> PyResult<()> {
        let var = self
            .state
            .variables
            .get_mut(index)
            .ok_or_else(|| value_err(format!("optimizer variable {index} does not exist")))?;
        if slots.len() != var.slots.len() {
            return Err(value_err(format!(
                "expected {} slot arrays, got {}",
                var.slots.len(),
                slots.len()
            )));
        }
        let mut new = Vec::with_capacity(slots.len());
        for (s, old) in slots.iter().zip(&var.slots) {
            let (_, data) = f32_vec(s, "optimizer slot")?;
            if data.len() != old.len() {
                return Err(value_err(format!(
                    "slot needs {} values, got {}",
                    old.len(),
                    data.len()
                )));
            }
            new.push(data);
        }
        var.slots = new;
        Ok(())
    }
}
