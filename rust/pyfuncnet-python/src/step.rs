//! `CompiledStep`: a graph spec compiled once per input signature; one call per batch.

use pyo3::prelude::*;

use numpy::{IntoPyArray, PyArray1, PyReadonlyArray1};
use pyfuncnet_graph::program::{self, BatchRows, Mode};
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

    /// `len(lrs)` training steps on batches of the whole arrays `sources` (one per
    /// input, in order): batch `j` is rows `order[j * batch:(j + 1) * batch]`, or
    /// with `order` None rows `first + j * batch` on, and step `j` runs at learning
    /// rate `lrs[j]`. Returns a float32 array of `len(lrs) * (1 + len(record))`
    /// values: per step, its loss and the first element of each output in `record`.
    /// Sources and rows are checked before any step; on a step's error, the steps
    /// before it stay applied.
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (sources, order, first, lrs, record, variables, optimizer))]
    fn train_batches<'py>(
        &mut self,
        py: Python<'py>,
        sources: Vec<Bound<'py, PyAny>>,
        order: Option<PyReadonlyArray1<'py, i32>>,
        first: usize,
        lrs: PyReadonlyArray1<'py, f32>,
        record: Vec<usize>,
        mut variables: PyRefMut<'py, Variables>,
        mut optimizer: PyRefMut<'py, Optimizer>,
    ) -> PyResult<Bound<'py, PyArray1<f32>>> {
        let arrays = extract_all(&sources, "source")?;
        let tensors: Vec<_> = arrays.iter().map(|a| a.tensor()).collect();
        let rows = match &order {
            Some(order) => BatchRows::Gathered(order.as_slice()?),
            None => BatchRows::Consecutive { first },
        };
        let lrs = lrs.as_slice()?;
        let vars = &mut variables.inner;
        let opt = &mut *optimizer;
        let inner = &mut self.inner;
        let mut log = Vec::with_capacity(lrs.len() * (1 + record.len()));
        enter_core(py, || {
            inner.train_batches(
                &tensors,
                rows,
                lrs,
                vars,
                &opt.config,
                &mut opt.state,
                &record,
                &mut log,
            )
        })?;
        Ok(log.into_pyarray(py))
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
