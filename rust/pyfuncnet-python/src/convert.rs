//! numpy <-> tensor conversion and the one helper that enters Rust compute.

use numpy::{
    IntoPyArray, PyArrayDyn, PyArrayMethods, PyReadonlyArrayDyn, PyReadwriteArrayDyn,
    PyUntypedArrayMethods,
};
use pyo3::prelude::*;

use pyfuncnet_graph::tensor::{DType, DataMut, DataRef, TensorMut, TensorRef, TensorType};
use pyfuncnet_graph::GraphError;

use crate::errors::{dtype_err, graph_err, value_err};

/// A borrowed numpy array of one of the dtypes the core computes with.
pub enum ArrayIn<'py> {
    F32(PyReadonlyArrayDyn<'py, f32>),
    I32(PyReadonlyArrayDyn<'py, i32>),
}

impl<'py> ArrayIn<'py> {
    /// Borrows a C-contiguous float32 or int32 array; anything else is refused with
    /// a message naming the array as `what()` says (Python converts before calling).
    /// `what` runs only on error, so the success path formats nothing.
    pub fn extract(obj: &Bound<'py, PyAny>, what: impl Fn() -> String) -> PyResult<Self> {
        let borrowed = |e: numpy::BorrowError, what: String| {
            value_err(format!("{what}: the array is being written elsewhere: {e}"))
        };
        // `cast` checks the type and dtype without building an exception on a miss.
        let arr = if let Ok(a) = obj.cast::<PyArrayDyn<f32>>() {
            ArrayIn::F32(a.try_readonly().map_err(|e| borrowed(e, what()))?)
        } else if let Ok(a) = obj.cast::<PyArrayDyn<i32>>() {
            ArrayIn::I32(a.try_readonly().map_err(|e| borrowed(e, what()))?)
        } else {
            let dtype = obj
                .getattr("dtype")
                .map(|d| d.to_string())
                .unwrap_or_else(|_| obj.get_type().to_string());
            return Err(dtype_err(format!(
                "{}: expected a float32 or int32 numpy array, got {dtype}",
                what()
            )));
        };
        let contiguous = match &arr {
            ArrayIn::F32(a) => a.is_c_contiguous(),
            ArrayIn::I32(a) => a.is_c_contiguous(),
        };
        if !contiguous {
            return Err(value_err(format!(
                "{}: the array must be C-contiguous",
                what()
            )));
        }
        Ok(arr)
    }

    pub fn shape(&self) -> &[usize] {
        match self {
            ArrayIn::F32(a) => a.shape(),
            ArrayIn::I32(a) => a.shape(),
        }
    }

    /// The array as a tensor view (contiguity checked in `extract`).
    pub fn tensor(&self) -> TensorRef<'_> {
        let data = match self {
            ArrayIn::F32(a) => DataRef::F32(a.as_slice().unwrap_or(&[])),
            ArrayIn::I32(a) => DataRef::I32(a.as_slice().unwrap_or(&[])),
        };
        TensorRef {
            shape: self.shape(),
            data,
        }
    }
}

/// Borrows every array of a list; errors name the array as "`what` `i`".
pub fn extract_all<'py>(arrays: &[Bound<'py, PyAny>], what: &str) -> PyResult<Vec<ArrayIn<'py>>> {
    arrays
        .iter()
        .enumerate()
        .map(|(i, a)| ArrayIn::extract(a, || format!("{what} {i}")))
        .collect()
}

/// A new numpy array that an op writes its output into directly.
pub enum ArrayOut<'py> {
    F32(PyReadwriteArrayDyn<'py, f32>),
    I32(PyReadwriteArrayDyn<'py, i32>),
    /// Bool values are computed as f32 0.0 / 1.0 (`DType::Bool` storage) into this
    /// buffer, then converted to a numpy bool array by [`ArrayOut::finish`].
    Bool(Vec<f32>),
}

impl<'py> ArrayOut<'py> {
    /// Allocates the output for a value of type `ty`. The numpy array is zero-filled
    /// (`PyArray_Zeros`: calloc, so large arrays get zero pages from the OS); making
    /// it uninitialised would need `unsafe`, which stays in the kernels crate.
    pub fn new(py: Python<'py>, ty: &TensorType) -> PyResult<Self> {
        let shape = numpy::ndarray::IxDyn(&ty.shape);
        let taken = |e: numpy::BorrowError| value_err(format!("internal borrow error: {e}"));
        Ok(match ty.dtype {
            DType::F32 => ArrayOut::F32(
                PyArrayDyn::<f32>::zeros(py, shape, false)
                    .try_readwrite()
                    .map_err(taken)?,
            ),
            DType::I32 => ArrayOut::I32(
                PyArrayDyn::<i32>::zeros(py, shape, false)
                    .try_readwrite()
                    .map_err(taken)?,
            ),
            DType::Bool => ArrayOut::Bool(vec![0.0; ty.numel()]),
        })
    }

    /// The output as a writable tensor of `shape` (the shape it was made with).
    pub fn tensor<'a>(&'a mut self, shape: &'a [usize]) -> PyResult<TensorMut<'a>> {
        let not_contiguous = |e: numpy::AsSliceError| value_err(format!("internal error: {e}"));
        let data = match self {
            ArrayOut::F32(a) => DataMut::F32(a.as_slice_mut().map_err(not_contiguous)?),
            ArrayOut::I32(a) => DataMut::I32(a.as_slice_mut().map_err(not_contiguous)?),
            ArrayOut::Bool(v) => DataMut::F32(v),
        };
        Ok(TensorMut { shape, data })
    }

    /// Releases the write borrow and returns the numpy array (of `shape`).
    pub fn finish(self, py: Python<'py>, shape: &[usize]) -> PyResult<Bound<'py, PyAny>> {
        match self {
            ArrayOut::F32(a) => Ok(a.as_any().clone()),
            ArrayOut::I32(a) => Ok(a.as_any().clone()),
            ArrayOut::Bool(v) => {
                let shape = numpy::ndarray::IxDyn(shape);
                let arr = PyArrayDyn::<bool>::zeros(py, shape, false);
                {
                    let mut w = arr
                        .try_readwrite()
                        .map_err(|e| value_err(format!("internal borrow error: {e}")))?;
                    let out = w
                        .as_slice_mut()
                        .map_err(|e| value_err(format!("internal error: {e}")))?;
                    for (o, &x) in out.iter_mut().zip(&v) {
                        *o = x != 0.0;
                    }
                }
                Ok(arr.into_any())
            }
        }
    }
}

/// Copies a tensor into a new numpy array (bool values come back as numpy bool).
pub fn to_numpy<'py>(
    py: Python<'py>,
    t: TensorRef<'_>,
    is_bool: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let shape = numpy::ndarray::IxDyn(t.shape);
    let err = |e: numpy::ndarray::ShapeError| value_err(format!("internal shape error: {e}"));
    match t.data {
        DataRef::F32(d) if is_bool => {
            let v: Vec<bool> = d.iter().map(|&x| x != 0.0).collect();
            let a = numpy::ndarray::ArrayD::from_shape_vec(shape, v).map_err(err)?;
            Ok(a.into_pyarray(py).into_any())
        }
        DataRef::F32(d) => {
            let a = numpy::ndarray::ArrayD::from_shape_vec(shape, d.to_vec()).map_err(err)?;
            Ok(a.into_pyarray(py).into_any())
        }
        DataRef::I32(d) => {
            let a = numpy::ndarray::ArrayD::from_shape_vec(shape, d.to_vec()).map_err(err)?;
            Ok(a.into_pyarray(py).into_any())
        }
    }
}

/// Copies a float32 numpy array's data out (for weights).
pub fn f32_vec(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<(Vec<usize>, Vec<f32>)> {
    let arr: PyReadonlyArrayDyn<'_, f32> = obj
        .extract()
        .map_err(|_| dtype_err(format!("{what}: expected a float32 numpy array")))?;
    let shape = arr.shape().to_vec();
    let data = arr.as_array().iter().copied().collect();
    Ok((shape, data))
}

/// A new float32 numpy array of `shape` holding `data`.
pub fn f32_array<'py>(
    py: Python<'py>,
    shape: &[usize],
    data: Vec<f32>,
) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
    numpy::ndarray::ArrayD::from_shape_vec(numpy::ndarray::IxDyn(shape), data)
        .map(|a| a.into_pyarray(py))
        .map_err(|e| value_err(format!("internal shape error: {e}")))
}

/// Runs `f` with the GIL released and converts its error. A panic inside is
/// caught and reported as an exception, never unwound into Python. `f` runs on
/// the calling thread, which takes part in the kernels' parallel sections.
pub fn enter_core<T: Send>(
    py: Python<'_>,
    f: impl FnOnce() -> Result<T, GraphError> + Send,
) -> PyResult<T> {
    // Kernels run with subnormals flushed to zero (see `fpenv`); the mode is
    // restored before returning to Python.
    let result = py.detach(|| {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pyfuncnet_kernels::fpenv::with_subnormals_flushed(f)
        }))
    });
    match result {
        Ok(r) => r.map_err(graph_err),
        Err(panic) => {
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_string());
            Err(pyo3::exceptions::PyRuntimeError::new_err(format!(
                "internal error in pyfuncnet's core (please report it): {msg}"
            )))
        }
    }
}

/// Op attributes given as a dict (or None) of JSON-like values, as `json.loads`
/// would have made them from `json.dumps(obj)`: the eager path takes the dict
/// itself, which is much cheaper than a round trip through JSON text.
///
/// # Errors
/// `TypeError` for a value JSON cannot hold (naming `op`); `ValueError` for a
/// non-finite float.
pub fn json_from_py(obj: &Bound<'_, PyAny>, op: &str) -> PyResult<serde_json::Value> {
    use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
    use serde_json::Value;
    let items = |it: Bound<'_, pyo3::types::PyIterator>| -> PyResult<Value> {
        it.map(|x| json_from_py(&x?, op))
            .collect::<PyResult<_>>()
            .map(Value::Array)
    };
    if obj.is_none() {
        Ok(Value::Null)
    } else if let Ok(b) = obj.cast::<PyBool>() {
        Ok(Value::Bool(b.is_true()))
    } else if let Ok(i) = obj.cast::<PyInt>() {
        // As serde_json parses a number: i64, else u64, else f64.
        if let Ok(v) = i.extract::<i64>() {
            Ok(v.into())
        } else if let Ok(v) = i.extract::<u64>() {
            Ok(v.into())
        } else {
            finite(i.extract::<f64>()?, op)
        }
    } else if let Ok(f) = obj.cast::<PyFloat>() {
        finite(f.value(), op)
    } else if let Ok(s) = obj.cast::<PyString>() {
        Ok(Value::String(s.to_cow()?.into_owned()))
    } else if obj.is_instance_of::<PyList>() || obj.is_instance_of::<PyTuple>() {
        items(obj.try_iter()?)
    } else if let Ok(d) = obj.cast::<PyDict>() {
        let mut map = serde_json::Map::new();
        for (k, v) in d.iter() {
            let key = k.cast::<PyString>().map_err(|_| {
                pyo3::exceptions::PyTypeError::new_err(format!(
                    "{op}: attribute names must be strings, got {}",
                    k.get_type()
                ))
            })?;
            map.insert(key.to_cow()?.into_owned(), json_from_py(&v, op)?);
        }
        Ok(Value::Object(map))
    } else {
        Err(pyo3::exceptions::PyTypeError::new_err(format!(
            "{op}: attribute values must be None, bools, numbers, strings, lists or dicts, \
             got {}",
            obj.get_type()
        )))
    }
}

fn finite(x: f64, op: &str) -> PyResult<serde_json::Value> {
    serde_json::Number::from_f64(x)
        .map(serde_json::Value::Number)
        .ok_or_else(|| value_err(format!("{op}: attribute values must be finite, got {x}")))
}
