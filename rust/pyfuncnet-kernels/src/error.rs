//! The one error type of the kernels crate.

use std::fmt;

/// Why a kernel refused its arguments. Kernels check lengths and shapes before
/// touching memory, so every invalid call ends here instead of reading out of bounds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelError {
    /// Two shapes that must agree do not (`what` names the operands).
    ShapeMismatch {
        what: String,
        expected: String,
        got: String,
    },
    /// A buffer is shorter than its shape and strides require.
    BufferTooSmall {
        what: String,
        needed: usize,
        got: usize,
    },
    /// An index (gather, one-hot, sparse label) outside `[0, limit)`.
    IndexOutOfRange {
        what: String,
        position: usize,
        value: i64,
        limit: usize,
    },
    /// An argument value outside its domain (axis, rate, negative size...).
    InvalidArgument { what: String, message: String },
}

impl fmt::Display for KernelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KernelError::ShapeMismatch {
                what,
                expected,
                got,
            } => {
                write!(f, "{what}: expected {expected}, got {got}")
            }
            KernelError::BufferTooSmall { what, needed, got } => {
                write!(
                    f,
                    "{what}: buffer holds {got} elements but {needed} are needed"
                )
            }
            KernelError::IndexOutOfRange {
                what,
                position,
                value,
                limit,
            } => write!(
                f,
                "{what}: index {value} at position {position} is out of range [0, {limit})"
            ),
            KernelError::InvalidArgument { what, message } => write!(f, "{what}: {message}"),
        }
    }
}

impl std::error::Error for KernelError {}

/// Result alias used by every checked kernel entry point.
pub type Result<T> = std::result::Result<T, KernelError>;

/// Checks that a buffer has exactly `needed` elements.
pub fn check_len(what: &str, got: usize, needed: usize) -> Result<()> {
    if got != needed {
        return Err(KernelError::ShapeMismatch {
            what: what.to_string(),
            expected: format!("{needed} elements"),
            got: format!("{got} elements"),
        });
    }
    Ok(())
}

/// [`check_len`] with the buffer named by `format_args!`, formatted only for the
/// error: kernels on a training step's path allocate nothing when all is well.
///
/// # Errors
/// As [`check_len`].
pub fn check_len_for(what: std::fmt::Arguments, got: usize, needed: usize) -> Result<()> {
    if got != needed {
        return check_len(&what.to_string(), got, needed);
    }
    Ok(())
}
