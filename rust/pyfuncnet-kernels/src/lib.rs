//! Compute kernels of pyfuncnet: pure functions over slices and shapes.
//!
//! Every public entry point checks lengths and shapes and returns a
//! [`KernelError`] instead of reading out of bounds. This is the only crate of the
//! project with `unsafe` code (the SIMD micro-kernels); each `unsafe` block sits in a
//! small function with a `// SAFETY:` line, behind a safe checked wrapper, next to a
//! scalar twin that tests compare against.

pub mod alloc_count;
pub mod binary;
pub mod conv;
pub mod cpu;
pub mod embed;
pub mod error;
pub mod fpenv;
pub mod gemm;
pub mod layout;
pub mod par;
pub mod peak;
pub mod pool;
pub mod reduce;
pub mod rng;
pub mod rnn;
mod scratch;
pub mod softmax;
pub mod unary;
pub mod vmath;
pub mod window;
mod winograd;

pub use error::{KernelError, Result};
