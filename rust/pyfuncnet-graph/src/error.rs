//! The error type of the graph crate. The Python bindings map each kind to a typed
//! exception that also subclasses the builtin a user would catch.

use std::fmt;

use pyfuncnet_kernels::KernelError;

/// Which family an error belongs to; decides the Python exception class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Incompatible or invalid shapes (Python `ValueError`).
    Shape,
    /// Wrong dtype (Python `TypeError`).
    DType,
    /// An index out of range (Python `IndexError`).
    Index,
    /// An invalid argument value (Python `ValueError`).
    Value,
    /// An op name or feature this build does not know (Python `NotImplementedError`-like `ValueError`).
    Unsupported,
}

/// An error with a message that names the op and shows what was expected and given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphError {
    pub kind: ErrorKind,
    pub message: String,
}

impl GraphError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        GraphError {
            kind,
            message: message.into(),
        }
    }
    pub fn shape(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Shape, message)
    }
    pub fn dtype(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::DType, message)
    }
    pub fn value(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Value, message)
    }
    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unsupported, message)
    }
    /// Prefixes the message with the op (or layer) it happened in.
    pub fn context(mut self, what: &str) -> Self {
        if !self.message.starts_with(&format!("{what}:")) {
            self.message = format!("{what}: {}", self.message);
        }
        self
    }
}

impl fmt::Display for GraphError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for GraphError {}

impl From<KernelError> for GraphError {
    fn from(e: KernelError) -> Self {
        let kind = match e {
            KernelError::ShapeMismatch { .. } | KernelError::BufferTooSmall { .. } => {
                ErrorKind::Shape
            }
            KernelError::IndexOutOfRange { .. } => ErrorKind::Index,
            KernelError::InvalidArgument { .. } => ErrorKind::Value,
        };
        GraphError::new(kind, e.to_string())
    }
}

/// Result alias of the graph crate.
pub type Result<T> = std::result::Result<T, GraphError>;
