//! Eager execution: one op on numpy arrays, and tape gradients.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};

use pyfuncnet_graph::ops::{self, Op};
use pyfuncnet_graph::tensor::{Buffer, DType, DataRef, TensorRef, TensorType};
use pyfuncnet_graph::{eager, program};

use crate::convert::{enter_core, extract_all, json_from_py, to_numpy, ArrayIn, ArrayOut};
use crate::errors::{graph_err, value_err};
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

/// Most distinct (op name, attributes) pairs [`cached_op`] keeps before it starts over.
const OP_CACHE_SIZE: usize = 512;

/// Ops already built, by op name then attributes JSON (two levels, so a lookup
/// borrows both strings instead of allocating a key).
#[derive(Default)]
struct OpCache {
    ops: HashMap<String, HashMap<String, Arc<dyn Op>>>,
    len: usize,
}

static OP_CACHE: LazyLock<Mutex<OpCache>> = LazyLock::new(Mutex::default);

/// The op `name` with attributes `key` (their compact JSON), built once per
/// distinct pair: an eager loop calls the same few ops over and over. `parse` gives
/// the attributes on a miss. Ops are immutable (`forward` takes `&self`), so one
/// instance serves every call and thread.
fn cached_op(
    name: &str,
    key: &str,
    parse: impl FnOnce() -> PyResult<serde_json::Value>,
) -> PyResult<Arc<dyn Op>> {
    // A poisoned lock only means a panic elsewhere mid-insert; the map is still valid.
    let lock = || OP_CACHE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(op) = lock().ops.get(name).and_then(|by_attrs| by_attrs.get(key)) {
        return Ok(Arc::clone(op));
    }
    let op: Arc<dyn Op> = Arc::from(ops::build(name, &parse()?).map_err(graph_err)?);
    let mut cache = lock();
    if cache.len >= OP_CACHE_SIZE {
        *cache = OpCache::default();
    }
    cache
        .ops
        .entry(name.to_string())
        .or_default()
        .insert(key.to_string(), Arc::clone(&op));
    cache.len += 1;
    Ok(op)
}

/// The op `name` with `attrs`: a dict (or None) of JSON-like values, or JSON text.
fn op_with_attrs(name: &str, attrs: &Bound<'_, PyAny>) -> PyResult<Arc<dyn Op>> {
    if let Ok(text) = attrs.cast::<PyString>() {
        let text = text.to_cow()?;
        return cached_op(name, &text, || {
            serde_json::from_str(&text)
                .map_err(|e| value_err(format!("{name}: attributes are not valid JSON: {e}")))
        });
    }
    if attrs.cast::<PyDict>().is_ok_and(|d| d.is_empty()) {
        return cached_op(name, "{}", || {
            Ok(serde_json::Value::Object(Default::default()))
        });
    }
    let value = json_from_py(attrs, name)?;
    cached_op(name, &value.to_string(), || Ok(value))
}

/// Runs op `name` with `attrs` (a dict of JSON-like values, or JSON text) on numpy
/// arrays at once; returns its outputs.
///
/// The outputs are new numpy arrays that the op writes into directly, with the GIL
/// released, on this thread (whose large kernels share their work with the pool's
/// helpers; see `pyfuncnet_graph::eager::forward`).
#[pyfunction]
pub fn run_op<'py>(
    py: Python<'py>,
    name: &str,
    attrs: &Bound<'py, PyAny>,
    inputs: Vec<Bound<'py, PyAny>>,
) -> PyResult<Vec<Bound<'py, PyAny>>> {
    let arrays = extract_all(&inputs, name)?;
    let op = op_with_attrs(name, attrs)?;
    let op = op.as_ref();
    let tensors: Vec<TensorRef> = arrays.iter().map(ArrayIn::tensor).collect();
    let types = eager::output_types(op, &tensors).map_err(graph_err)?;
    let mut outs = types
        .iter()
        .map(|t| ArrayOut::new(py, t))
        .collect::<PyResult<Vec<_>>>()?;
    let mut views = outs
        .iter_mut()
        .zip(&types)
        .map(|(o, t)| o.tensor(&t.shape))
        .collect::<PyResult<Vec<_>>>()?;
    enter_core(py, || eager::forward(op, &types, &tensors, &mut views))?;
    drop(views);
    outs.into_iter()
        .zip(&types)
        .map(|(o, t)| o.finish(py, &t.shape))
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
