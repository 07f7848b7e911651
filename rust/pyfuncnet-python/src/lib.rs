//! `pyfuncnet._core`: converts between numpy and the Rust core, releases the GIL
//! around compute, and maps Rust errors to typed Python exceptions. Nothing else.

use pyo3::prelude::*;
use pyo3::types::PyDict;

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
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
