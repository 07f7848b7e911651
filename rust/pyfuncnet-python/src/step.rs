//! `CompiledStep`: a graph spec compiled once per input signature; one call per batch.

use pyo3::prelude::*;

use pyfuncnet_graph::program::{self, Mode};
use pyfuncnet_graph::tensor::DType;

use crate::convert::{enter_core, extract_all, to_numpy};
use crate::errors::value_err;
use crate::optimizer::Optimizer;
use crate::variables::Variables;

/// A compiled predict / test / train step.
#[pyclass(module = "pyfuncnet._core")]
pub struct CompiledStep {
    inner: program::CompiledStep,
}

impl CompiledStep {
    fn outputs<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyAny>>> {
        let exec = self.inner.executor();
        (0..self.inner.num_outputs())
            .map(|k| to_numpy(py, self.inner.output(k), exec.fetch_dtype(k) == DType::Bool))
            .collect()
    }
}

#[pymethods]
impl CompiledStep {
    /// Compiles `spec` (JSON) for `mode` in {"predict", "test", "train"}.
    #[new]
    fn new(py: Python<'_>, spec: String, mode: &str) -> PyResult<Self> {
        let mode = match mode {
            "predict" => Mode::Predict,
            "test" => Mode::Test,
            "train" => Mode::Train,
            other => {
                return Err(value_err(format!(
                    "mode must be 'predict', 'test' or 'train', got '{other}'"
                )))
            }
        };
        let inner = enter_core(py, move || program::CompiledStep::compile(&spec, mode))?;
        Ok(CompiledStep { inner })
    }

    /// Runs the step without training; returns `(outputs, loss)` (loss None in predict mode).
    #[pyo3(signature = (inputs, variables, step = 0))]
    fn run<'py>(
        &mut self,
        py: Python<'py>,
        inputs: Vec<Bound<'py, PyAny>>,
        variables: PyRef<'py, Variables>,
        step: u64,
    ) -> PyResult<(Vec<Bound<'py, PyAny>>, Option<f32>)> {
        let arrays = extract_all(&inputs, "input")?;
        let tensors: Vec<_> = arrays.iter().map(|a| a.tensor()).collect();
        let vars = &variables.inner;
        let inner = &mut self.inner;
        enter_core(py, || inner.run(&tensors, vars, step))?;
        Ok((self.outputs(py)?, self.inner.loss()))
    }

    /// One training step (forward, loss, backward, optimizer update) at learning rate
    /// `lr`; returns `(outputs, loss)`. On error the variables and the optimizer state
    /// are unchanged.
    fn train<'py>(
        &mut self,
        py: Python<'py>,
        inputs: Vec<Bound<'py, PyAny>>,
        mut variables: PyRefMut<'py, Variables>,
        mut optimizer: PyRefMut<'py, Optimizer>,
        lr: f32,
    ) -> PyResult<(Vec<Bound<'py, PyAny>>, Option<f32>)> {
        let arrays = extract_all(&inputs, "input")?;
        let tensors: Vec<_> = arrays.iter().map(|a| a.tensor()).collect();
        let vars = &mut variables.inner;
        let opt = &mut *optimizer;
        let inner = &mut self.inner;
        enter_core(py, || {
            inner.train(&tensors, vars, &opt.config, &mut opt.state, lr)
        })?;
        Ok((self.outputs(py)?, self.inner.loss()))
    }

    /// (shape, dtype name) of each input the step expects.
    fn input_types(&self) -> Vec<(Vec<usize>, &'static str)> {
        self.inner
            .executor()
            .input_types()
            .into_iter()
            .map(|t| (t.shape.clone(), t.dtype.name()))
            .collect()
    }
}
