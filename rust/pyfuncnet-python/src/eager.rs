//! Eager execution: one op on numpy arrays, and tape gradients.

use pyo3::prelude::*;

use pyfuncnet_graph::program;
use pyfuncnet_graph::tensor::{Buffer, DType, DataRef, TensorRef, TensorType};

use crate::convert::{enter_core, extract_all, to_numpy};
use crate::errors::value_err;
use crate::variables::Variables;

fn buffer_to_numpy<'py>(
    py: Python<'py>,
    shape: &[usize],
    buf: &Buffer,
    is_bool: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let data = match buf {
        Buffer::F32(d) => DataRef::F32(d),
        Buffer::I32(d) => DataRef::I32(d),
    };
    to_numpy(py, TensorRef { shape, data }, is_bool)
}

/// Runs op `name` with JSON `attrs` on numpy arrays at once; returns its outputs.
#[pyfunction]
pub fn run_op<'py>(
    py: Python<'py>,
    name: &str,
    attrs: &str,
    inputs: Vec<Bound<'py, PyAny>>,
) -> PyResult<Vec<Bound<'py, PyAny>>> {
    let arrays = extract_all(&inputs, name)?;
    let attrs: serde_json::Value = serde_json::from_str(attrs)
        .map_err(|e| value_err(format!("{name}: attributes are not valid JSON: {e}")))?;
    let tensors: Vec<TensorRef> = arrays.iter().map(|a| a.tensor()).collect();
    let outs = enter_core(py, || program::eager(name, &attrs, &tensors))?;
    outs.iter()
        .map(|(t, buf)| buffer_to_numpy(py, &t.shape, buf, t.dtype == DType::Bool))
        .collect()
}

/// Gradients for `GradientTape`: `spec` lists the recorded ops; its first output is
/// the target, the rest are the sources. Returns one array (or None) per source.
#[pyfunction]
pub fn tape_gradient<'py>(
    py: Python<'py>,
    spec: String,
    inputs: Vec<Bound<'py, PyAny>>,
    variables: PyRef<'py, Variables>,
) -> PyResult<Vec<Option<Bound<'py, PyAny>>>> {
    let arrays = extract_all(&inputs, "tape input")?;
    let tensors: Vec<TensorRef> = arrays.iter().map(|a| a.tensor()).collect();
    let vars = &variables.inner;
    let grads = enter_core(py, || program::gradient(&spec, &tensors, vars))?;
    grads
        .iter()
        .map(|g| {
            g.as_ref()
                .map(|(shape, buf)| buffer_to_numpy(py, shape, buf, false))
                .transpose()
        })
        .collect()
}

/// Shape and dtype inference of op `name` for symbolic tensors: `inputs` are
/// `(shape, dtype)` pairs; returns one pair per output.
#[pyfunction]
pub fn infer(
    name: &str,
    attrs: &str,
    inputs: Vec<(Vec<usize>, String)>,
) -> PyResult<Vec<(Vec<usize>, &'static str)>> {
    let attrs: serde_json::Value = serde_json::from_str(attrs)
        .map_err(|e| value_err(format!("{name}: attributes are not valid JSON: {e}")))?;
    let types = inputs
        .into_iter()
        .map(|(shape, dtype)| Ok(TensorType::new(shape, DType::from_name(&dtype)?)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(crate::errors::graph_err)?;
    let outs = program::infer(name, &attrs, &types).map_err(crate::errors::graph_err)?;
    Ok(outs
        .into_iter()
        .map(|t| (t.shape, t.dtype.name()))
        .collect())
}
