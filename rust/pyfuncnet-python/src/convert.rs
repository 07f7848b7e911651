//! numpy <-> tensor conversion and the one helper that enters Rust compute.

use numpy::{IntoPyArray, PyArrayDyn, PyReadonlyArrayDyn, PyUntypedArrayMethods};
use pyo3::prelude::*;

use pyfuncnet_graph::tensor::{DataRef, TensorRef};
use pyfuncnet_graph::GraphError;

use crate::errors::{dtype_err, graph_err, value_err};

/// A borrowed numpy array of one of the dtypes the core computes with.
pub enum ArrayIn<'py> {
    F32(PyReadonlyArrayDyn<'py, f32>),
    I32(PyReadonlyArrayDyn<'py, i32>),
}

impl<'py> ArrayIn<'py> {
    /// Borrows a C-contiguous float32 or int32 array; anything else is refused with
    /// a message naming `what` (Python converts before calling).
    pub fn extract(obj: &Bound<'py, PyAny>, what: &str) -> PyResult<Self> {
        let arr = if let Ok(a) = obj.extract::<PyReadonlyArrayDyn<'py, f32>>() {
            ArrayIn::F32(a)
        } else if let Ok(a) = obj.extract::<PyReadonlyArrayDyn<'py, i32>>() {
            ArrayIn::I32(a)
        } else {
            let dtype = obj
                .getattr("dtype")
                .map(|d| d.to_string())
                .unwrap_or_else(|_| obj.get_type().to_string());
            return Err(dtype_err(format!(
                "{what}: expected a float32 or int32 numpy array, got {dtype}"
            )));
        };
        let contiguous = match &arr {
            ArrayIn::F32(a) => a.is_c_contiguous(),
            ArrayIn::I32(a) => a.is_c_contiguous(),
        };
        if !contiguous {
            return Err(value_err(format!("{what}: the array must be C-contiguous")));
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

/// Borrows every array of a list.
pub fn extract_all<'py>(arrays: &[Bound<'py, PyAny>], what: &str) -> PyResult<Vec<ArrayIn<'py>>> {
    arrays
        .iter()
        .enumerate()
        .map(|(i, a)| ArrayIn::extract(a, &format!("{what} {i}")))
        .collect()
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

/// Runs `f` with the GIL released, on the project's thread pool, and converts its
/// error. A panic inside is caught and reported as an exception, never unwound
/// into Python.
pub fn enter_core<T: Send>(
    py: Python<'_>,
    f: impl FnOnce() -> Result<T, GraphError> + Send,
) -> PyResult<T> {
    let result = py.detach(|| {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pyfuncnet_kernels::par::install(f)
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
