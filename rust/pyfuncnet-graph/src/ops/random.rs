//! Random ops keyed by the counter-based RNG: `dropout`, `gaussian_noise` and
//! `gaussian_dropout`.
//!
//! Each is active only in training steps (the identity otherwise) and draws its
//! numbers from the stream keyed by (program seed ^ `seed`, `stream`, step), so a
//! step's noise depends neither on the thread count nor on what ran before it, and
//! at a fixed step the op is a deterministic function of its input (its gradient can
//! be checked by finite differences).

use pyfuncnet_kernels::binary::{self as kb, Binary};
use pyfuncnet_kernels::rng;

use super::{expect_inputs, Attrs, Ctx, Op};
use crate::error::{GraphError, Result};
use crate::graph::{Graph, ValueId};
use crate::tensor::{fmt_shape, DType, TensorMut, TensorRef, TensorType};

/// Inverted dropout; active only in training steps. Outputs `[y, mask]`; the mask
/// (0 or 1/(1-rate)) is what the backward pass multiplies by.
///
/// With `noise_shape` (Keras's argument, resolved to concrete sizes: each dimension
/// the input's or 1) the mask has that shape and is broadcast over the axes of size
/// 1, so e.g. `[batch, 1, 1, channels]` drops whole feature maps. Without it the mask
/// has the input's shape. Either way element `i` of the mask is element `i` of
/// [`rng::dropout_mask`] at the mask's shape.
#[derive(Debug, Clone)]
pub struct DropoutOp {
    pub rate: f32,
    pub seed: u64,
    pub stream: u64,
    pub noise_shape: Option<Vec<usize>>,
}

/// Additive Gaussian noise, as Keras's `GaussianNoise`: `y = x + N(0, stddev)` in
/// training steps, `y = x` otherwise; `dx = dy`.
#[derive(Debug, Clone, Copy)]
pub struct GaussianNoiseOp {
    pub stddev: f32,
    pub seed: u64,
    pub stream: u64,
}

/// Multiplicative Gaussian noise, as Keras's `GaussianDropout`: `y = x * n` with
/// `n ~ N(1, sqrt(rate / (1 - rate)))` in training steps, `y = x` otherwise. Outputs
/// `[y, n]` (`n` = 1 outside training); `dx = dy * n`.
#[derive(Debug, Clone, Copy)]
pub struct GaussianDropoutOp {
    pub rate: f32,
    pub seed: u64,
    pub stream: u64,
}

fn check_rate(op: &str, rate: f32) -> Result<f32> {
    if !(0.0..1.0).contains(&rate) {
        return Err(GraphError::value(format!(
            "{op}: rate must be in [0, 1), got {rate}"
        )));
    }
    Ok(rate)
}

pub(crate) fn build(name: &str, a: &Attrs) -> Result<Option<Box<dyn Op>>> {
    let (seed, stream) = (a.u64_or("seed", 0)?, a.u64_or("stream", 0)?);
    let op: Box<dyn Op> = match name {
        "dropout" => Box::new(DropoutOp {
            rate: check_rate(name, a.f32("rate")?)?,
            seed,
            stream,
            noise_shape: if a.has("noise_shape") {
                Some(a.usize_list("noise_shape")?)
            } else {
                None
            },
        }),
        "gaussian_noise" => {
            let stddev = a.f32("stddev")?;
            if !(stddev >= 0.0 && stddev.is_finite()) {
                return Err(GraphError::value(format!(
                    "gaussian_noise: stddev must be a finite number >= 0, got {stddev}"
                )));
            }
            Box::new(GaussianNoiseOp {
                stddev,
                seed,
                stream,
            })
        }
        "gaussian_dropout" => Box::new(GaussianDropoutOp {
            rate: check_rate(name, a.f32("rate")?)?,
            seed,
            stream,
        }),
        _ => return Ok(None),
    };
    Ok(Some(op))
}

fn expect_f32(op: &str, t: &TensorType) -> Result<()> {
    if t.dtype != DType::F32 {
        return Err(GraphError::dtype(format!(
            "{op}: expected a float tensor, got {} of shape {}",
            t.dtype.name(),
            fmt_shape(&t.shape)
        )));
    }
    Ok(())
}

impl DropoutOp {
    /// The mask's shape for an input of shape `x`: `noise_shape`, checked against
    /// `x`, or `x` itself.
    fn mask_shape(&self, x: &[usize]) -> Result<Vec<usize>> {
        let Some(noise) = &self.noise_shape else {
            return Ok(x.to_vec());
        };
        let fits = noise.len() == x.len() && noise.iter().zip(x).all(|(&n, &d)| n == d || n == 1);
        if !fits {
            return Err(GraphError::shape(format!(
                "dropout: noise_shape {} does not fit an input of shape {}: it needs one \
                 entry per input dimension, each the input's size or 1",
                fmt_shape(noise),
                fmt_shape(x)
            )));
        }
        Ok(noise.clone())
    }
}

impl Op for DropoutOp {
    fn name(&self) -> &'static str {
        "dropout"
    }
    fn infer(&self, inputs: &[&TensorType]) -> Result<Vec<TensorType>> {
        expect_inputs("dropout", inputs, 1)?;
        expect_f32("dropout", inputs[0])?;
        let mask = self.mask_shape(&inputs[0].shape)?;
        Ok(vec![
            TensorType::f32(inputs[0].shape.clone()),
            TensorType::f32(mask),
        ])
    }
    fn forward(&self, ctx: &Ctx, inputs: &[TensorRef], outputs: &mut [TensorMut]) -> Result<()> {
        let x = inputs[0].f32()?;
        let (y_out, mask_out) = outputs.split_at_mut(1);
        let (y_shape, mask_shape) = (y_out[0].shape, mask_out[0].shape);
        let (y, mask) = (y_out[0].f32()?, mask_out[0].f32()?);
        if !(ctx.training && self.rate > 0.0) {
            y.copy_from_slice(x);
            mask.fill(1.0);
            return Ok(());
        }
        let seed = ctx.seed ^ self.seed;
        if mask.len() == x.len() {
            rng::dropout(seed, self.stream, ctx.step, self.rate, x, mask, y)?;
        } else {
            // Draw the small mask, then broadcast it over the input.
            rng::dropout_mask(seed, self.stream, ctx.step, self.rate, mask)?;
            kb::binary(Binary::Mul, x, y_shape, mask, mask_shape, y, y_shape)?;
        }
        Ok(())
    }
    fn backward(
        &self,
        g: &mut Graph,
        _i: &[ValueId],
        outputs: &[ValueId],
        dys: &[Option<ValueId>],
    ) -> Result<Vec<Option<ValueId>>> {
        let Some(dy) = dys[0] else {
            return Ok(vec![None]);
        };
        // A broadcast mask broadcasts again here: dy has the input's shape.
        Ok(vec![Some(g.mul(dy, outputs[1])?)])
    }
}

impl Op for GaussianNoiseOp {
    fn name(&self) -> &'static str {
        "gaussian_noise"
    }
    fn infer(&self, inputs: &[&TensorType]) -> Result<Vec<TensorType>> {
        expect_inputs("gaussian_noise", inputs, 1)?;
        expect_f32("gaussian_noise", inputs[0])?;
        Ok(vec![TensorType::f32(inputs[0].shape.clone())])
    }
    fn forward(&self, ctx: &Ctx, inputs: &[TensorRef], outputs: &mut [TensorMut]) -> Result<()> {
        let y = outputs[0].f32()?;
        y.copy_from_slice(inputs[0].f32()?);
        self.add_noise(ctx, y);
        Ok(())
    }
    /// `y` takes over `x`'s buffer: the noise is added in place.
    fn inplace_input(&self, _inputs: &[&TensorType]) -> Option<usize> {
        Some(0)
    }
    fn forward_inplace(
        &self,
        ctx: &Ctx,
        _inputs: &[TensorRef],
        _inplace: usize,
        out: &mut TensorMut,
    ) -> Result<()> {
        self.add_noise(ctx, out.f32()?);
        Ok(())
    }
    fn backward(
        &self,
        _g: &mut Graph,
        _i: &[ValueId],
        _o: &[ValueId],
        dys: &[Option<ValueId>],
    ) -> Result<Vec<Option<ValueId>>> {
        Ok(vec![dys[0]])
    }
}

impl GaussianNoiseOp {
    /// `y += N(0, stddev)` in training steps; nothing otherwise.
    fn add_noise(&self, ctx: &Ctx, y: &mut [f32]) {
        if ctx.training && self.stddev > 0.0 {
            let seed = ctx.seed ^ self.seed;
            rng::add_normal(seed, self.stream, ctx.step, self.stddev, y);
        }
    }
}

impl Op for GaussianDropoutOp {
    fn name(&self) -> &'static str {
        "gaussian_dropout"
    }
    fn infer(&self, inputs: &[&TensorType]) -> Result<Vec<TensorType>> {
        expect_inputs("gaussian_dropout", inputs, 1)?;
        expect_f32("gaussian_dropout", inputs[0])?;
        let t = TensorType::f32(inputs[0].shape.clone());
        Ok(vec![t.clone(), t])
    }
    fn forward(&self, ctx: &Ctx, inputs: &[TensorRef], outputs: &mut [TensorMut]) -> Result<()> {
        let x = inputs[0].f32()?;
        let (y_out, noise_out) = outputs.split_at_mut(1);
        let shape = y_out[0].shape;
        let (y, noise) = (y_out[0].f32()?, noise_out[0].f32()?);
        if !(ctx.training && self.rate > 0.0) {
            y.copy_from_slice(x);
            noise.fill(1.0);
            return Ok(());
        }
        // Keras: stddev = sqrt(rate / (1 - rate)), the variance of inverted dropout's
        // mask at the same rate.
        let rate = f64::from(self.rate);
        let stddev = (rate / (1.0 - rate)).sqrt() as f32;
        let seed = ctx.seed ^ self.seed;
        rng::normal(seed, self.stream, ctx.step, 1.0, stddev, noise);
        kb::binary(Binary::Mul, x, shape, noise, shape, y, shape)?;
        Ok(())
    }
    fn backward(
        &self,
        g: &mut Graph,
        _i: &[ValueId],
        outputs: &[ValueId],
        dys: &[Option<ValueId>],
    ) -> Result<Vec<Option<ValueId>>> {
        let Some(dy) = dys[0] else {
            return Ok(vec![None]);
        };
        Ok(vec![Some(g.mul(dy, outputs[1])?)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autodiff::gradients;
    use crate::exec::Executor;
    use crate::tensor::DataMut;
    use crate::ErrorKind;
    use serde_json::{json, Value};

    fn op(name: &str, attrs: Value) -> Box<dyn Op> {
        crate::ops::build(name, &attrs).unwrap()
    }

    fn training(step: u64) -> Ctx {
        Ctx {
            seed: 1234,
            step,
            training: true,
        }
    }

    /// Values in [-1, 1) from a small xorshift, so the tests need no RNG crate.
    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// Runs `op` on one input of `shape`; returns every output.
    fn run(op: &dyn Op, ctx: &Ctx, shape: &[usize], x: &[f32]) -> Vec<Vec<f32>> {
        let t = TensorType::f32(shape.to_vec());
        let types = op.infer(&[&t]).unwrap();
        let mut bufs: Vec<Vec<f32>> = types.iter().map(|t| vec![f32::NAN; t.numel()]).collect();
        let mut outs: Vec<TensorMut> = bufs
            .iter_mut()
            .zip(&types)
            .map(|(b, t)| TensorMut {
                shape: &t.shape,
                data: DataMut::F32(b),
            })
            .collect();
        op.forward(ctx, &[TensorRef::new_f32(shape, x)], &mut outs)
            .unwrap();
        drop(outs);
        bufs
    }

    fn mean_std(v: impl Iterator<Item = f64> + Clone) -> (f64, f64) {
        let n = v.clone().count() as f64;
        let mean = v.clone().sum::<f64>() / n;
        let var = v.map(|x| (x - mean).powi(2)).sum::<f64>() / n;
        (mean, var.sqrt())
    }

    #[test]
    fn gaussian_noise_adds_noise_of_the_requested_std_in_training() {
        let g = op(
            "gaussian_noise",
            json!({"stddev": 0.3, "seed": 5, "stream": 2}),
        );
        let shape = [64, 40, 40];
        let x = values(shape.iter().product(), 1);
        let y = run(g.as_ref(), &training(3), &shape, &x).remove(0);
        let noise = y.iter().zip(&x).map(|(&y, &x)| f64::from(y) - f64::from(x));
        let (mean, std) = mean_std(noise);
        assert!(mean.abs() < 0.003, "mean {mean}");
        assert!((std - 0.3).abs() < 0.003, "std {std}");
        // Exactly x + the kernel's normal numbers of (program seed ^ seed, stream, step).
        let mut want = vec![0.0f32; x.len()];
        rng::normal(1234 ^ 5, 2, 3, 0.0, 0.3, &mut want);
        assert!(y.iter().zip(&x).zip(&want).all(|((&y, &x), &n)| y == x + n));
    }

    #[test]
    fn gaussian_noise_is_the_identity_outside_training() {
        let g = op("gaussian_noise", json!({"stddev": 0.5}));
        let x = values(1000, 2);
        let ctx = Ctx {
            training: false,
            ..training(7)
        };
        assert_eq!(run(g.as_ref(), &ctx, &[10, 100], &x)[0], x);
        // stddev 0 adds nothing, in training too.
        let zero = op("gaussian_noise", json!({"stddev": 0.0}));
        assert_eq!(run(zero.as_ref(), &training(7), &[10, 100], &x)[0], x);
    }

    #[test]
    fn noise_depends_only_on_seed_stream_and_step() {
        let shape = [50, 1000];
        let x = values(50_000, 3);
        for name in ["gaussian_noise", "gaussian_dropout", "dropout"] {
            let attrs = |seed: u64, stream: u64| match name {
                "gaussian_noise" => json!({"stddev": 0.2, "seed": seed, "stream": stream}),
                _ => json!({"rate": 0.3, "seed": seed, "stream": stream}),
            };
            let first = run(op(name, attrs(1, 1)).as_ref(), &training(4), &shape, &x);
            let again = run(op(name, attrs(1, 1)).as_ref(), &training(4), &shape, &x);
            assert_eq!(first, again, "{name}: same seed, stream and step");
            for (other, what) in [
                (
                    run(op(name, attrs(2, 1)).as_ref(), &training(4), &shape, &x),
                    "seed",
                ),
                (
                    run(op(name, attrs(1, 2)).as_ref(), &training(4), &shape, &x),
                    "stream",
                ),
                (
                    run(op(name, attrs(1, 1)).as_ref(), &training(5), &shape, &x),
                    "step",
                ),
            ] {
                let same = first[0]
                    .iter()
                    .zip(&other[0])
                    .filter(|(a, b)| a == b)
                    .count();
                // Dropout keeps the same element unchanged with probability 0.7^2 + 0.3^2.
                let bound = if name == "dropout" { 30_000 } else { 50 };
                assert!(
                    same < bound,
                    "{name}: another {what} gives {same} equal values"
                );
            }
        }
    }

    #[test]
    fn gaussian_dropout_multiplies_by_noise_around_one() {
        let g = op("gaussian_dropout", json!({"rate": 0.2, "seed": 9}));
        let shape = [100, 1000];
        let x = values(100_000, 4);
        let outs = run(g.as_ref(), &training(0), &shape, &x);
        let (y, noise) = (&outs[0], &outs[1]);
        let (mean, std) = mean_std(noise.iter().map(|&n| f64::from(n)));
        let want_std = (0.2f64 / 0.8).sqrt();
        assert!((mean - 1.0).abs() < 0.005, "mean {mean}");
        assert!((std - want_std).abs() < 0.005, "std {std} vs {want_std}");
        assert!(y.iter().zip(&x).zip(noise).all(|((&y, &x), &n)| y == x * n));
        let ctx = Ctx {
            training: false,
            ..training(0)
        };
        let outs = run(g.as_ref(), &ctx, &shape, &x);
        assert_eq!(outs[0], x);
        assert!(outs[1].iter().all(|&n| n == 1.0));
    }

    #[test]
    fn dropout_with_noise_shape_drops_whole_channels() {
        let (batch, h, w, c) = (40, 6, 5, 30);
        let d = op(
            "dropout",
            json!({"rate": 0.4, "seed": 3, "stream": 8, "noise_shape": [batch, 1, 1, c]}),
        );
        let shape = [batch, h, w, c];
        let x: Vec<f32> = values(batch * h * w * c, 5)
            .iter()
            .map(|v| v + 2.0)
            .collect();
        let outs = run(d.as_ref(), &training(2), &shape, &x);
        let (y, mask) = (&outs[0], &outs[1]);
        assert_eq!(mask.len(), batch * c);
        // The small mask is the kernel's dropout mask at the noise shape.
        let mut want = vec![0.0f32; batch * c];
        rng::dropout_mask(1234 ^ 3, 8, 2, 0.4, &mut want).unwrap();
        assert_eq!(mask, &want);
        let scale = 1.0 / (1.0 - 0.4f32);
        for (i, (&y, &x)) in y.iter().zip(&x).enumerate() {
            let (b, ch) = (i / (h * w * c), i % c);
            assert_eq!(y, x * mask[b * c + ch], "element {i}");
        }
        let dropped = mask.iter().filter(|&&m| m == 0.0).count() as f64 / (batch * c) as f64;
        assert!((dropped - 0.4).abs() < 0.07, "dropped {dropped}");
        assert!(mask.iter().all(|&m| m == 0.0 || m == scale));
        // A noise shape equal to the input's is plain dropout, bit for bit.
        let full = op(
            "dropout",
            json!({"rate": 0.4, "seed": 3, "stream": 8, "noise_shape": shape}),
        );
        let plain = op("dropout", json!({"rate": 0.4, "seed": 3, "stream": 8}));
        assert_eq!(
            run(full.as_ref(), &training(2), &shape, &x),
            run(plain.as_ref(), &training(2), &shape, &x)
        );
    }

    #[test]
    fn bad_attributes_and_noise_shapes_are_refused() {
        for (name, attrs) in [
            ("gaussian_noise", json!({"stddev": -0.1})),
            ("gaussian_noise", json!({})),
            ("gaussian_dropout", json!({"rate": 1.0})),
            ("dropout", json!({"rate": -0.5})),
            ("dropout", json!({"rate": 0.5, "noise_shape": [2, -1]})),
        ] {
            let err = crate::ops::build(name, &attrs).unwrap_err();
            assert_eq!(err.kind, ErrorKind::Value, "{name} {attrs}");
            assert!(err.message.contains(name), "{}", err.message);
        }
        let d = op("dropout", json!({"rate": 0.5, "noise_shape": [4, 1, 2]}));
        for shape in [vec![4, 3, 3], vec![4, 3]] {
            let t = TensorType::f32(shape);
            let err = d.infer(&[&t]).unwrap_err();
            assert_eq!(err.kind, ErrorKind::Shape);
            assert!(err.message.contains("(4, 1, 2)"), "{}", err.message);
        }
        let ints = TensorType::new(vec![3], DType::I32);
        let err = op("gaussian_noise", json!({"stddev": 0.1}))
            .infer(&[&ints])
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::DType);
    }

    /// Autodiff's gradient of loss = sum(op(x) * w) at a fixed training step against
    /// central differences: at a fixed step the noise is a fixed function of x.
    fn check_grad(name: &str, attrs: Value, shape: &[usize]) {
        let build = || {
            let mut g = Graph::new();
            let x = g.add_input(TensorType::f32(shape.to_vec()));
            let y = g.apply(op(name, attrs.clone()), &[x]).unwrap()[0];
            let n = shape.iter().product();
            let w = g.add_const(shape.to_vec(), values(n, 77)).unwrap();
            let weighted = g.mul(y, w).unwrap();
            let loss = g.apply1(op("sum", json!({})), &[weighted]).unwrap();
            (g, loss, x)
        };
        let x = values(shape.iter().product(), 78);
        let fetch = |exec: &Executor| exec.fetch(0).f32().unwrap().to_vec();
        let (mut g, loss, input) = build();
        let dx = gradients(&mut g, loss, &[input]).unwrap()[0].expect("x gets a gradient");
        let mut exec = Executor::new(g, vec![dx]);
        exec.run(&training(6), &[TensorRef::new_f32(shape, &x)], &[])
            .unwrap();
        let analytic = fetch(&exec);
        let (g, loss, _) = build();
        let mut forward = Executor::new(g, vec![loss]);
        let mut eval = |data: &[f32]| {
            forward
                .run(&training(6), &[TensorRef::new_f32(shape, data)], &[])
                .unwrap();
            f64::from(fetch(&forward)[0])
        };
        let h = 1e-2f32;
        for e in 0..x.len() {
            let mut moved = x.clone();
            moved[e] = x[e] + h;
            let plus = eval(&moved);
            moved[e] = x[e] - h;
            let minus = eval(&moved);
            let fd = (plus - minus) / (2.0 * f64::from(h));
            let a = f64::from(analytic[e]);
            assert!(
                (a - fd).abs() <= 1e-2 * (1.0 + fd.abs()),
                "{name} {attrs}: d/dx[{e}] autodiff {a} vs finite difference {fd}"
            );
        }
    }

    #[test]
    fn gaussian_noise_grad_matches_finite_difference() {
        check_grad(
            "gaussian_noise",
            json!({"stddev": 0.5, "stream": 1}),
            &[3, 4, 5],
        );
    }

    #[test]
    fn gaussian_dropout_grad_matches_finite_difference() {
        check_grad(
            "gaussian_dropout",
            json!({"rate": 0.3, "stream": 2}),
            &[3, 4, 5],
        );
    }

    #[test]
    fn dropout_grad_matches_finite_difference() {
        check_grad("dropout", json!({"rate": 0.5, "stream": 3}), &[3, 4, 5]);
        check_grad(
            "dropout",
            json!({"rate": 0.5, "stream": 4, "noise_shape": [3, 1, 5]}),
            &[3, 4, 5],
        );
    }
}
