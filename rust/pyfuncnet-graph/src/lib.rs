//! The op graph of pyfuncnet: IR with shape inference, reverse-mode autodiff,
//! memory planning, the executor and the optimizers. No Python here, no `unsafe`.

#![forbid(unsafe_code)]

pub mod autodiff;
pub mod eager;
pub mod error;
pub mod exec;
pub mod fuse;
pub mod graph;
pub mod ops;
pub mod optim;
pub mod plan;
pub mod program;
pub mod spec;
pub mod tensor;

pub use error::{ErrorKind, GraphError, Result};
