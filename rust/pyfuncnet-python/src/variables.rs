//! `Variables`: a model's weight store, shared by all of its compiled steps.

use pyo3::prelude::*;

use pyfuncnet_graph::program;
use pyfuncnet_graph::tensor::{fmt_shape, TensorRef};

use crate::convert::{f32_array, f32_vec, to_numpy};
use crate::errors::{graph_err, value_err};

/// The float32 weights of a model, addressed by index.
#[pyclass(module = "pyfuncnet._core")]
#[derive(Default)]
pub struct Variables {
    pub inner: program::Variables,
    pub shapes: Vec<Vec<usize>>,
}

impl Variables {
    fn check_index(&self, index: usize) -> PyResult<()> {
        if index >= self.shapes.len() {
            return Err(graph_err(pyfuncnet_graph::GraphError::new(
                pyfuncnet_graph::ErrorKind::Index,
                format!(
                    "variable index {index} is out of range: the store holds {}",
                    self.shapes.len()
                ),
            )));
        }
        Ok(())
    }
}

#[pymethods]
impl Variables {
    #[new]
    fn new() -> Self {
        Self::default()
    }

    /// Adds a variable initialised from a float32 array; returns its index.
    fn add(&mut self, value: &Bound<'_, PyAny>) -> PyResult<usize> {
        let (shape, data) = f32_vec(value, "Variables.add")?;
        self.inner.values.push(data);
        self.shapes.push(shape);
        Ok(self.shapes.len() - 1)
    }

    /// A copy of variable `index` as a numpy array.
    fn get<'py>(&self, py: Python<'py>, index: usize) -> PyResult<Bound<'py, PyAny>> {
        self.check_index(index)?;
        let shape = &self.shapes[index];
        let t = TensorRef::new_f32(shape, &self.inner.values[index]);
        to_numpy(py, t, false)
    }

    /// Overwrites variable `index`; the new value must have the variable's shape.
    fn set(&mut self, index: usize, value: &Bound<'_, PyAny>) -> PyResult<()> {
        self.check_index(index)?;
        let (shape, data) = f32_vec(value, "Variables.set")?;
        if shape != self.shapes[index] {
            return Err(value_err(format!(
                "variable {index}: expected a value of shape {}, got {}",
                fmt_shape(&self.shapes[index]),
                fmt_shape(&shape)
            )));
        }
        self.inner.values[index] = data;
        Ok(())
    }

    /// Puts a new value of any shape in slot `index` (a freed slot taken again).
    fn replace(&mut self, index: usize, value: &Bound<'_, PyAny>) -> PyResult<()> {
        self.check_index(index)?;
        let (shape, data) = f32_vec(value, "Variables.replace")?;
        self.inner.values[index] = data;
        self.shapes[index] = shape;
        Ok(())
    }

    /// The shape of variable `index`.
    pub fn shape(&self, index: usize) -> PyResult<Vec<usize>> {
        self.check_index(index)?;
        Ok(self.shapes[index].clone())
    }

    fn __len__(&self) -> usize {
        self.shapes.len()
    }

    /// All variables as numpy arrays, in index order.
    fn get_all<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyAny>>> {
        self.shapes
            .iter()
            .zip(&self.inner.values)
            .map(|(s, v)| f32_array(py, s, v.clone()).map(|a| a.into_any()))
            .collect()
    }
}
