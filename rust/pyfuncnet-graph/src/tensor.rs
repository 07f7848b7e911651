//! Tensor types and the buffers the executor hands to ops.

use crate::error::{GraphError, Result};

/// Element types. `Bool` is stored as `f32` 0.0 / 1.0 so masks feed arithmetic directly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    I32,
    Bool,
}

impl DType {
    /// Parses the NumPy-style names Python sends ("float32", "int32", "int64", "bool").
    /// int64 is computed as int32: the bindings check that values fit.
    pub fn from_name(name: &str) -> Result<DType> {
        match name {
            "float32" | "float" | "float64" | "float16" => Ok(DType::F32),
            "int32" | "int64" | "int" | "uint8" | "int8" | "int16" => Ok(DType::I32),
            "bool" => Ok(DType::Bool),
            other => Err(GraphError::dtype(format!("unsupported dtype '{other}'"))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "float32",
            DType::I32 => "int32",
            DType::Bool => "bool",
        }
    }

    /// Whether values of this dtype live in `f32` storage.
    pub fn is_f32_storage(self) -> bool {
        !matches!(self, DType::I32)
    }
}

/// Shape and dtype of a value; all shapes are concrete in a compiled graph.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TensorType {
    pub shape: Vec<usize>,
    pub dtype: DType,
}

impl TensorType {
    pub fn new(shape: Vec<usize>, dtype: DType) -> Self {
        TensorType { shape, dtype }
    }
    pub fn f32(shape: Vec<usize>) -> Self {
        Self::new(shape, DType::F32)
    }
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn rank(&self) -> usize {
        self.shape.len()
    }
}

/// Formats a shape the way Keras prints it: `(2, 3)`.
pub fn fmt_shape(shape: &[usize]) -> String {
    match shape.len() {
        1 => format!("({},)", shape[0]),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Storage of one buffer.
#[derive(Debug, Clone, PartialEq)]
pub enum Buffer {
    F32(Vec<f32>),
    I32(Vec<i32>),
}

impl Default for Buffer {
    fn default() -> Self {
        Buffer::F32(Vec::new())
    }
}

impl Buffer {
    pub fn zeros(dtype: DType, len: usize) -> Buffer {
        if dtype.is_f32_storage() {
            Buffer::F32(vec![0.0; len])
        } else {
            Buffer::I32(vec![0; len])
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Buffer::F32(v) => v.len(),
            Buffer::I32(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Makes this buffer hold `len` elements of `dtype`, reusing its allocation when it
    /// is already big enough (steady-state steps never allocate).
    pub fn ensure(&mut self, dtype: DType, len: usize) {
        match (self, dtype.is_f32_storage()) {
            (Buffer::F32(v), true) => v.resize(len, 0.0),
            (Buffer::I32(v), false) => v.resize(len, 0),
            (b, _) => *b = Buffer::zeros(dtype, len),
        }
    }

    pub fn as_ref<'a>(&'a self, len: usize) -> DataRef<'a> {
        match self {
            Buffer::F32(v) => DataRef::F32(&v[..len]),
            Buffer::I32(v) => DataRef::I32(&v[..len]),
        }
    }

    pub fn as_mut<'a>(&'a mut self, len: usize) -> DataMut<'a> {
        match self {
            Buffer::F32(v) => DataMut::F32(&mut v[..len]),
            Buffer::I32(v) => DataMut::I32(&mut v[..len]),
        }
    }
}

/// Borrowed read-only data.
#[derive(Debug, Clone, Copy)]
pub enum DataRef<'a> {
    F32(&'a [f32]),
    I32(&'a [i32]),
}

/// Borrowed writable data.
#[derive(Debug)]
pub enum DataMut<'a> {
    F32(&'a mut [f32]),
    I32(&'a mut [i32]),
}

/// A read-only tensor handed to an op.
#[derive(Debug, Clone, Copy)]
pub struct TensorRef<'a> {
    pub shape: &'a [usize],
    pub data: DataRef<'a>,
}

impl<'a> TensorRef<'a> {
    pub fn new_f32(shape: &'a [usize], data: &'a [f32]) -> Self {
        TensorRef {
            shape,
            data: DataRef::F32(data),
        }
    }

    /// The data as `f32` (float and bool values).
    pub fn f32(&self) -> Result<&'a [f32]> {
        match self.data {
            DataRef::F32(d) => Ok(d),
            DataRef::I32(_) => Err(GraphError::dtype("expected a float tensor, got int32")),
        }
    }

    /// The data as `i32` (index values).
    pub fn i32(&self) -> Result<&'a [i32]> {
        match self.data {
            DataRef::I32(d) => Ok(d),
            DataRef::F32(_) => Err(GraphError::dtype("expected an int32 tensor, got float32")),
        }
    }
}

/// A writable tensor handed to an op as its output.
#[derive(Debug)]
pub struct TensorMut<'a> {
    pub shape: &'a [usize],
    pub data: DataMut<'a>,
}

impl<'a> TensorMut<'a> {
    pub fn f32(&mut self) -> Result<&mut [f32]> {
        match &mut self.data {
            DataMut::F32(d) => Ok(d),
            DataMut::I32(_) => Err(GraphError::dtype("expected a float output, got int32")),
        }
    }

    pub fn i32(&mut self) -> Result<&mut [i32]> {
        match &mut self.data {
            DataMut::I32(d) => Ok(d),
            DataMut::F32(_) => Err(GraphError::dtype("expected an int32 output, got float32")),
        }
    }
}

/// Runs `$body` with `$x: &[T]` and `$y: &mut [T]` bound to the data of a
/// same-dtype input and output (f32 or i32 storage); a mismatch returns a `DType`
/// error naming `$op`. For data-movement ops, which work on either element type.
macro_rules! with_same_dtype {
    ($op:expr, $input:expr, $output:expr, |$x:ident, $y:ident| $body:expr) => {
        match ($input, $output) {
            ($crate::tensor::DataRef::F32($x), $crate::tensor::DataMut::F32($y)) => $body,
            ($crate::tensor::DataRef::I32($x), $crate::tensor::DataMut::I32($y)) => $body,
            _ => {
                return Err($crate::error::GraphError::dtype(format!(
                    "{}: output dtype differs from input",
                    $op
                )))
            }
        }
    };
}
pub(crate) use with_same_dtype;
