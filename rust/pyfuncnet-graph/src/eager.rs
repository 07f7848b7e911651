//! Eager execution: one op run at once on the caller's buffers, with no graph, plan
//! or executor in between.
//!
//! A caller (the Python bindings) builds the op once ([`crate::ops::build`]), asks
//! for the output types ([`output_types`]), allocates the outputs wherever it likes
//! (numpy arrays, for the bindings) and runs [`forward`] into them. Nothing is
//! copied: inputs are read where they are and outputs are written where they will
//! stay. [`run`] does all of that into freshly allocated buffers, for Rust callers.
//!
//! Errors are prefixed with the op's name, as the executor prefixes a node's.

use crate::error::{GraphError, Result};
use crate::ops::{Ctx, Op};
use crate::tensor::{fmt_shape, Buffer, DType, DataMut, DataRef, TensorMut, TensorRef, TensorType};

/// The type of an eager input: its shape, and float32 or int32 by its storage.
pub fn input_type(t: &TensorRef) -> TensorType {
    let dtype = match t.data {
        DataRef::F32(_) => DType::F32,
        DataRef::I32(_) => DType::I32,
    };
    TensorType::new(t.shape.to_vec(), dtype)
}

/// The output types of `op` applied to `inputs`.
///
/// # Errors
/// `Shape` when an input holds more or fewer values than its shape says; the op's
/// shape and dtype errors. Both prefixed with its name.
pub fn output_types(op: &dyn Op, inputs: &[TensorRef]) -> Result<Vec<TensorType>> {
    for (i, t) in inputs.iter().enumerate() {
        let len = match t.data {
            DataRef::F32(d) => d.len(),
            DataRef::I32(d) => d.len(),
        };
        let numel: usize = t.shape.iter().product();
        if len != numel {
            return Err(GraphError::shape(format!(
                "{}: input {i} of shape {} needs {numel} values, got {len}",
                op.name(),
                fmt_shape(t.shape)
            )));
        }
    }
    let types: Vec<TensorType> = inputs.iter().map(input_type).collect();
    let refs: Vec<&TensorType> = types.iter().collect();
    op.infer(&refs).map_err(|e| e.context(op.name()))
}

/// Runs `op` on `inputs`, writing `outputs`, which must have exactly the `types`
/// that [`output_types`] gave for these inputs (any contents: the op writes every
/// element).
///
/// The op runs on the calling thread; its kernels split large work across the
/// project's pool. Either way the results are the same bits.
///
/// # Errors
/// `Value` when `outputs` do not match the op's output types (a caller bug, refused
/// before the op runs); otherwise the op's errors (out-of-range indices, ...),
/// prefixed with its name. On error the outputs hold unspecified values.
pub fn forward(
    op: &dyn Op,
    types: &[TensorType],
    inputs: &[TensorRef],
    outputs: &mut [TensorMut],
) -> Result<()> {
    check_outputs(op.name(), types, outputs)?;
    let ctx = Ctx::default();
    op.forward(&ctx, inputs, outputs)
        .map_err(|e| e.context(op.name()))
}

/// Checks every output against its type: count, shape, storage and length. Ops
/// index their outputs by the inferred sizes, so this keeps a wrong buffer from
/// reaching them.
fn check_outputs(name: &str, types: &[TensorType], outputs: &[TensorMut]) -> Result<()> {
    if outputs.len() != types.len() {
        return Err(GraphError::value(format!(
            "{name}: expected {} output buffers, got {}",
            types.len(),
            outputs.len()
        )));
    }
    for (k, (ty, out)) in types.iter().zip(outputs).enumerate() {
        let (len, storage_ok) = match &out.data {
            DataMut::F32(d) => (d.len(), ty.dtype.is_f32_storage()),
            DataMut::I32(d) => (d.len(), !ty.dtype.is_f32_storage()),
        };
        if out.shape != ty.shape.as_slice() || len != ty.numel() || !storage_ok {
            return Err(GraphError::value(format!(
                "{name}: output {k} must be {} of shape {}, got a buffer of {len} values \
                 with shape {}",
                ty.dtype.name(),
                fmt_shape(&ty.shape),
                fmt_shape(out.shape)
            )));
        }
    }
    Ok(())
}

/// Runs op `name` with attributes `attrs` on `inputs` into new buffers; returns
/// each output's type and data (bool outputs as `f32` 0.0 / 1.0).
///
/// # Errors
/// Unknown op, bad attributes, shape/dtype inference and op errors.
pub fn run(
    name: &str,
    attrs: &serde_json::Value,
    inputs: &[TensorRef],
) -> Result<Vec<(TensorType, Buffer)>> {
    let op = crate::ops::build(name, attrs)?;
    let types = output_types(op.as_ref(), inputs)?;
    let mut buffers: Vec<Buffer> = types
        .iter()
        .map(|t| Buffer::zeros(t.dtype, t.numel()))
        .collect();
    let mut outputs: Vec<TensorMut> = types
        .iter()
        .zip(buffers.iter_mut())
        .map(|(t, b)| TensorMut {
            shape: &t.shape,
            data: b.as_mut(t.numel()),
        })
        .collect();
    forward(op.as_ref(), &types, inputs, &mut outputs)?;
    Ok(types.into_iter().zip(buffers).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;
    use serde_json::json;

    fn f32s(b: &Buffer) -> &[f32] {
        match b {
            Buffer::F32(d) => d,
            Buffer::I32(_) => panic!("expected float data"),
        }
    }

    #[test]
    fn run_adds_with_broadcasting() {
        let a = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let b = [10.0, 20.0, 30.0];
        let inputs = [
            TensorRef::new_f32(&[2, 3], &a),
            TensorRef::new_f32(&[3], &b),
        ];
        let outs = run("add", &json!({}), &inputs).unwrap();
        assert_eq!(outs.len(), 1);
        assert_eq!(outs[0].0, TensorType::f32(vec![2, 3]));
        assert_eq!(f32s(&outs[0].1), &[11.0, 22.0, 33.0, 14.0, 25.0, 36.0]);
    }

    #[test]
    fn run_gives_bool_outputs_as_float_storage() {
        let a = [1.0, 5.0];
        let b = [2.0, 2.0];
        let inputs = [TensorRef::new_f32(&[2], &a), TensorRef::new_f32(&[2], &b)];
        let outs = run("greater", &json!(null), &inputs).unwrap();
        assert_eq!(outs[0].0.dtype, DType::Bool);
        assert_eq!(f32s(&outs[0].1), &[0.0, 1.0]);
    }

    #[test]
    fn run_matmul_matches_a_triple_loop() {
        const M: usize = 5;
        const K: usize = 7;
        const N: usize = 3;
        let (m, k, n) = (M, K, N);
        let a: Vec<f32> = (0..m * k).map(|i| (i % 5) as f32 - 2.0).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 3) as f32 * 0.5).collect();
        let inputs = [
            TensorRef::new_f32(&[M, K], &a),
            TensorRef::new_f32(&[K, N], &b),
        ];
        let outs = run("matmul", &json!({}), &inputs).unwrap();
        let c = f32s(&outs[0].1);
        for i in 0..m {
            for j in 0..n {
                let want: f32 = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
                assert_eq!(c[i * n + j], want, "element ({i}, {j})");
            }
        }
    }

    #[test]
    fn shape_errors_name_the_op_and_both_shapes() {
        let a = [0.0; 6];
        let b = [0.0; 4];
        let inputs = [
            TensorRef::new_f32(&[2, 3], &a),
            TensorRef::new_f32(&[4], &b),
        ];
        let err = run("add", &json!({}), &inputs).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Shape);
        assert!(err.message.starts_with("add:"), "{}", err.message);
        assert!(err.message.contains("[2, 3]") && err.message.contains("[4]"));
    }

    #[test]
    fn op_errors_name_the_op() {
        let x = [1.0, 2.0];
        let idx = [0, 7];
        let inputs = [
            TensorRef::new_f32(&[2], &x),
            TensorRef {
                shape: &[2],
                data: DataRef::I32(&idx),
            },
        ];
        let err = run("take", &json!({"axis": 0}), &inputs).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Index);
        assert!(err.message.starts_with("take:"), "{}", err.message);
    }

    #[test]
    fn inputs_must_hold_as_many_values_as_their_shape() {
        let a = [1.0; 5];
        let inputs = [TensorRef::new_f32(&[2, 3], &a)];
        let err = run("relu", &json!({}), &inputs).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Shape);
        assert!(err.message.starts_with("relu: input 0"), "{}", err.message);
    }

    #[test]
    fn unknown_ops_are_unsupported() {
        let err = run("no_such_op", &json!({}), &[]).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Unsupported);
    }

    #[test]
    fn forward_refuses_mismatched_outputs() {
        let a = [1.0, 2.0, 3.0];
        let inputs = [TensorRef::new_f32(&[3], &a)];
        let op = crate::ops::build("relu", &json!({})).unwrap();
        let types = output_types(op.as_ref(), &inputs).unwrap();
        let mut short = [0.0f32; 2];
        let mut outs = [TensorMut {
            shape: &[3],
            data: DataMut::F32(&mut short),
        }];
        let err = forward(op.as_ref(), &types, &inputs, &mut outs).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Value);
        let mut ints = [0i32; 3];
        let mut outs = [TensorMut {
            shape: &[3],
            data: DataMut::I32(&mut ints),
        }];
        assert!(forward(op.as_ref(), &types, &inputs, &mut outs).is_err());
        assert!(forward(op.as_ref(), &types, &inputs, &mut []).is_err());
    }

    #[test]
    fn forward_writes_into_the_callers_buffer() {
        let a = [-1.0, 2.0, -3.0];
        let inputs = [TensorRef::new_f32(&[3], &a)];
        let op = crate::ops::build("relu", &json!({})).unwrap();
        let types = output_types(op.as_ref(), &inputs).unwrap();
        // Garbage in the output buffer: the op overwrites every element.
        let mut out = [f32::NAN; 3];
        let mut outs = [TensorMut {
            shape: &types[0].shape,
            data: DataMut::F32(&mut out),
        }];
        forward(op.as_ref(), &types, &inputs, &mut outs).unwrap();
        assert_eq!(out, [0.0, 2.0, 0.0]);
    }
}
