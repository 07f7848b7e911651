//! `Optimizer`: an optimizer's configuration and state (slots, iteration count).

use pyo3::prelude::*;

use pyfuncnet_graph::optim::{self, OptimizerConfig, OptimizerState};
use pyfuncnet_graph::tensor::fmt_shape;
use pyfuncnet_graph::GraphError;

use crate::convert::{enter_core, f32_array, f32_vec};
use crate::errors::value_err;
use crate::variables::Variables;

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

    /// One update of the store's variables `indices` (in optimizer-state order, all
    /// of them) with `grads` at learning rate `lr`: the eager `apply_gradients`.
    /// Every gradient is checked first; on error nothing changes.
    fn apply(
        &mut self,
        py: Python<'_>,
        mut variables: PyRefMut<'_, Variables>,
        indices: Vec<usize>,
        grads: Vec<Bound<'_, PyAny>>,
        lr: f32,
    ) -> PyResult<()> {
        if indices.len() != self.sizes.len() || grads.len() != indices.len() {
            return Err(value_err(format!(
                "apply: the optimizer was built for {} variables, got {} variables and {} gradients",
                self.sizes.len(),
                indices.len(),
                grads.len()
            )));
        }
        let mut grad_data = Vec::with_capacity(grads.len());
        for (k, (g, &index)) in grads.iter().zip(&indices).enumerate() {
            let (shape, data) = f32_vec(g, "gradient")?;
            let want = variables.shape(index)?;
            if shape != want {
                return Err(value_err(format!(
                    "apply: gradient {k} has shape {}, its variable {}",
                    fmt_shape(&shape),
                    fmt_shape(&want)
                )));
            }
            grad_data.push(data);
        }
        let mut seen = vec![false; variables.inner.values.len()];
        for &index in &indices {
            if std::mem::replace(&mut seen[index], true) {
                return Err(value_err(format!(
                    "apply: variable {index} is listed twice"
                )));
            }
        }
        // Borrow each listed variable once, in the order of `indices`.
        let mut slots: Vec<Option<&mut [f32]>> = variables
            .inner
            .values
            .iter_mut()
            .map(|v| Some(v.as_mut_slice()))
            .collect();
        let mut vars: Vec<&mut [f32]> = indices
            .iter()
            .map(|&i| slots[i].take().expect("indices are distinct and exist"))
            .collect();
        let mut grad_refs: Vec<optim::Gradient> = grad_data
            .iter_mut()
            .map(|g| optim::Gradient::Dense(g.as_mut_slice()))
            .collect();
        let (config, state) = (&self.config, &mut self.state);
        enter_core(py, || {
            optim::apply_gradients(config, state, lr, &mut vars, &mut grad_refs)
                .map_err(GraphError::value)
        })
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

    /// The scalar state of trainable variable `index` (Nadam's `u_product`; empty
    /// for the other optimizers).
    fn scalars(&self, index: usize) -> PyResult<Vec<f64>> {
        self.state
            .variables
            .get(index)
            .map(|v| v.scalars.clone())
            .ok_or_else(|| value_err(format!("optimizer variable {index} does not exist")))
    }

    /// Replaces the scalar state of trainable variable `index` (same count).
    fn set_scalars(&mut self, index: usize, values: Vec<f64>) -> PyResult<()> {
        let var = self
            .state
            .variables
            .get_mut(index)
            .ok_or_else(|| value_err(format!("optimizer variable {index} does not exist")))?;
        if values.len() != var.scalars.len() {
            return Err(value_err(format!(
                "expected {} scalars, got {}",
                var.scalars.len(),
                values.len()
            )));
        }
        var.scalars = values;
        Ok(())
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
