//! `pyfuncnet._core`: converts between numpy and the Rust core, releases the GIL
//! around compute, and maps Rust errors to typed Python exceptions. Nothing else.

use pyo3::prelude::*;
use pyo3::types::PyDict;

use convert::enter_core;

mod convert;
mod eager;
mod errors;
mod optimizer;
mod step;
mod variables;

/// Sets the number of threads of the project's pool (the caller and its helpers).
#[pyfunction]
fn set_num_threads(n: usize) -> PyResult<()> {
    pyfuncnet_kernels::par::set_num_threads(n).map_err(errors::kernel_err)
}

/// The number of threads of the project's pool (the caller and its helpers).
#[pyfunction]
fn get_num_threads() -> usize {
    pyfuncnet_kernels::par::num_threads()
}

/// Whether every element of a float32 array is finite (no NaN, no infinity).
#[pyfunction]
fn all_finite(py: Python<'_>, x: numpy::PyReadonlyArrayDyn<'_, f32>) -> bool {
    match x.as_slice() {
        Ok(values) => py.detach(|| pyfuncnet_kernels::reduce::all_finite(values)),
        Err(_) => x.as_array().iter().all(|v| v.is_finite()),
    }
}

/// `out[j] = x[indices[j]]` along the first axis, in the core's threads: the
/// shuffled batches of `fit`. `x` and `out` are C-contiguous arrays of one dtype,
/// float32 or int32, with the same trailing dimensions.
#[pyfunction]
fn take_rows(
    py: Python<'_>,
    x: &Bound<'_, PyAny>,
    indices: numpy::PyReadonlyArray1<'_, i32>,
    out: &Bound<'_, PyAny>,
) -> PyResult<()> {
    use numpy::{PyArrayDyn, PyArrayMethods, PyUntypedArrayMethods};
    fn take<T: numpy::Element + Copy + Send + Sync>(
        py: Python<'_>,
        x: &Bound<'_, PyArrayDyn<T>>,
        indices: &[i32],
        out: &Bound<'_, PyArrayDyn<T>>,
    ) -> PyResult<()> {
        let (n, inner) = match x.shape() {
            [] => {
                return Err(errors::value_err(
                    "take_rows: x must have at least one axis",
                ))
            }
            [n, rest @ ..] => (*n, rest.iter().product::<usize>()),
        };
        if out.shape().first() != Some(&indices.len()) || out.shape()[1..] != x.shape()[1..] {
            return Err(errors::value_err(format!(
                "take_rows: out has shape {:?}, expected {:?}",
                out.shape(),
                [&[indices.len()], &x.shape()[1..]].concat()
            )));
        }
        // `try_*`: an array already borrowed (`out` being `x`, or a read-only
        // `out`) is an error, not a panic.
        let x = x
            .try_readonly()
            .map_err(|e| errors::value_err(format!("take_rows: x cannot be read: {e}")))?;
        let mut out = out
            .try_readwrite()
            .map_err(|e| errors::value_err(format!("take_rows: out cannot be written: {e}")))?;
        let (Ok(src), Ok(dst)) = (x.as_slice(), out.as_slice_mut()) else {
            return Err(errors::value_err(
                "take_rows: x and out must be C-contiguous",
            ));
        };
        enter_core(py, || {
            pyfuncnet_kernels::layout::gather("take_rows", src, &[n, inner], 0, indices, dst)
                .map_err(Into::into)
        })
    }
    let indices = indices.as_slice()?;
    if let (Ok(x), Ok(out)) = (x.cast::<PyArrayDyn<f32>>(), out.cast::<PyArrayDyn<f32>>()) {
        take(py, x, indices, out)
    } else if let (Ok(x), Ok(out)) = (x.cast::<PyArrayDyn<i32>>(), out.cast::<PyArrayDyn<i32>>()) {
        take(py, x, indices, out)
    } else {
        Err(errors::dtype_err(
            "take_rows: x and out must both be float32 or both int32 arrays",
        ))
    }
}

/// Version, build profile, SIMD level in use and thread count.
#[pyfunction]
fn build_info(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let info = PyDict::new(py);
    info.set_item("version", env!("CARGO_PKG_VERSION"))?;
    info.set_item(
        "profile",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
    )?;
    info.set_item("simd", pyfuncnet_kernels::cpu::active().name())?;
    info.set_item("simd_detected", pyfuncnet_kernels::cpu::detected().name())?;
    info.set_item("threads", pyfuncnet_kernels::par::num_threads())?;
    Ok(info)
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    errors::register(m)?;
    m.add_class::<variables::Variables>()?;
    m.add_class::<optimizer::Optimizer>()?;
    m.add_class::<step::CompiledStep>()?;
    m.add_function(wrap_pyfunction!(eager::run_op, m)?)?;
    m.add_function(wrap_pyfunction!(eager::tape_gradient, m)?)?;
    m.add_function(wrap_pyfunction!(eager::infer, m)?)?;
    m.add_function(wrap_pyfunction!(set_num_threads, m)?)?;
    m.add_function(wrap_pyfunction!(get_num_threads, m)?)?;
    m.add_function(wrap_pyfunction!(build_info, m)?)?;
    m.add_function(wrap_pyfunction!(all_finite, m)?)?;
    m.add_function(wrap_pyfunction!(take_rows, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
