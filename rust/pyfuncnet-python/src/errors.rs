//! The typed exception hierarchy, declared once here. Each class subclasses both
//! `PyfuncnetError` and the builtin a user would catch (`ValueError`, ...).

use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyTuple, PyType};

use pyfuncnet_graph::{ErrorKind, GraphError};
use pyfuncnet_kernels::KernelError;

/// (class name, builtin base, doc) of every exception class.
const CLASSES: [(&str, &str, &str); 5] = [
    (
        "ShapeError",
        "ValueError",
        "Incompatible or invalid tensor shapes.",
    ),
    ("DTypeError", "TypeError", "A tensor has the wrong dtype."),
    (
        "OutOfRangeError",
        "IndexError",
        "An index (gather, embedding, label) outside its valid range.",
    ),
    (
        "InvalidArgumentError",
        "ValueError",
        "An argument value outside its domain.",
    ),
    (
        "UnsupportedError",
        "NotImplementedError",
        "An op or feature this build does not support.",
    ),
];

static BASE: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static TYPES: PyOnceLock<Vec<Py<PyType>>> = PyOnceLock::new();

fn base(py: Python<'_>) -> PyResult<&Py<PyType>> {
    BASE.get_or_try_init(py, || {
        let ty = PyErr::new_type(
            py,
            c"pyfuncnet.errors.PyfuncnetError",
            Some(c"Base class of every error raised by pyfuncnet's core."),
            Some(&py.get_type::<PyException>()),
            None,
        )?;
        Ok(ty)
    })
}

fn types(py: Python<'_>) -> PyResult<&Vec<Py<PyType>>> {
    TYPES.get_or_try_init(py, || {
        let builtins = py.import("builtins")?;
        let type_fn = builtins.getattr("type")?;
        let base = base(py)?.bind(py).clone();
        CLASSES
            .iter()
            .map(|(name, builtin, doc)| {
                let bases =
                    PyTuple::new(py, [base.clone().into_any(), builtins.getattr(*builtin)?])?;
                let dict = PyDict::new(py);
                dict.set_item("__doc__", *doc)?;
                dict.set_item("__module__", "pyfuncnet.errors")?;
                let ty = type_fn.call1((*name, bases, dict))?;
                Ok(ty.cast_into::<PyType>()?.unbind())
            })
            .collect()
    })
}

/// Adds the exception classes to the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("PyfuncnetError", base(py)?.bind(py))?;
    for ((name, _, _), ty) in CLASSES.iter().zip(types(py)?) {
        m.add(*name, ty.bind(py))?;
    }
    Ok(())
}

fn class_index(kind: ErrorKind) -> usize {
    match kind {
        ErrorKind::Shape => 0,
        ErrorKind::DType => 1,
        ErrorKind::Index => 2,
        ErrorKind::Value => 3,
        ErrorKind::Unsupported => 4,
    }
}

/// Converts a graph error to the matching Python exception.
pub fn graph_err(e: GraphError) -> PyErr {
    Python::attach(|py| match types(py) {
        Ok(types) => PyErr::from_type(types[class_index(e.kind)].bind(py).clone(), e.message),
        Err(err) => err,
    })
}

/// Converts a kernel error to the matching Python exception.
pub fn kernel_err(e: KernelError) -> PyErr {
    graph_err(GraphError::from(e))
}

/// A `ValueError`-family error built from a message.
pub fn value_err(message: impl Into<String>) -> PyErr {
    graph_err(GraphError::value(message))
}

/// A `TypeError`-family error built from a message.
pub fn dtype_err(message: impl Into<String>) -> PyErr {
    graph_err(GraphError::dtype(message))
}
