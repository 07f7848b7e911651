//! Max and average pooling over channels-last tensors, and their gradients.
//!
//! `x` is `(batch, in0, in1, in2, channels)` and `y` is `(batch, out0, out1, out2,
//! channels)`, both contiguous, with the geometry of a [`Window`] (1-D and 2-D
//! pooling are the same geometry with leading axes of size 1). An output pixel is
//! computed from the rows of `channels` values its window reads, so every inner
//! loop runs over the contiguous channel axis.
//!
//! Padding never takes part in a result, as in TensorFlow: max pooling treats it as
//! -inf and average pooling divides by the number of taps that read the input. A
//! window that reads no input at all (possible only with a hand-built [`Window`])
//! gives 0 and receives no gradient.
//!
//! The forward kernels split the output into groups of rows (each element written
//! by one task); the gradients add overlapping windows into `dx`, so each of their
//! tasks owns whole images of `dx` and visits the windows in a fixed order. Both
//! partitions depend on the problem size alone, so results are bitwise identical
//! for any thread count.

use crate::error::{check_len, KernelError, Result};
use crate::par;
use crate::window::{Window, MAX_SPATIAL};

/// Fewest units of work (elements read or written) one parallel task gets: tens
/// of microseconds, well above the cost of handing a task to another thread. A
/// call with no more work than this runs as one task.
pub const TASK_WORK: usize = 1 << 14;

/// Channels handled together by [`max_pool_grad`], which keeps a stack flag per
/// channel for "this window's maximum was already found".
const CHANNEL_BLOCK: usize = 64;

/// The problem a pooling kernel solves: `batch` images of `channels` channels under
/// `window` (whose dilation is 1 for Keras pooling; other dilations also work).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolShape {
    pub batch: usize,
    pub channels: usize,
    pub window: Window,
}

/// Element counts of one problem, checked against overflow.
struct Sizes {
    /// Elements of one input image (`in0 * in1 * in2 * channels`).
    x_image: usize,
    /// Elements of one output image.
    y_image: usize,
    x: usize,
    y: usize,
}

impl PoolShape {
    /// Validates the geometry and returns its element counts.
    ///
    /// Beyond the buffer sizes, this makes sure that no coordinate a window reaches
    /// (`o * stride + t * dilation`) overflows, so [`Window::source`] cannot.
    fn sizes(&self, what: &str) -> Result<Sizes> {
        let w = &self.window;
        let invalid = |message: String| KernelError::InvalidArgument {
            what: what.to_string(),
            message,
        };
        for a in 0..MAX_SPATIAL {
            if w.size[a] == 0 || w.stride[a] == 0 || w.dilation[a] == 0 {
                return Err(invalid(format!(
                    "window sizes, strides and dilations must be positive, got size {:?}, stride {:?}, dilation {:?}",
                    w.size, w.stride, w.dilation
                )));
            }
            let reach = w.output[a]
                .saturating_sub(1)
                .checked_mul(w.stride[a])
                .zip((w.size[a] - 1).checked_mul(w.dilation[a]))
                .and_then(|(o, t)| o.checked_add(t));
            if reach.is_none() {
                return Err(invalid(format!(
                    "window positions overflow along axis {a} (output {}, stride {}, size {}, dilation {})",
                    w.output[a], w.stride[a], w.size[a], w.dilation[a]
                )));
            }
        }
        let too_big = || {
            invalid(format!(
                "batch {}, channels {}, input {:?} and output {:?} have more elements than fit in memory",
                self.batch, self.channels, w.input, w.output
            ))
        };
        let image = |pixels: &[usize; MAX_SPATIAL]| {
            pixels
                .iter()
                .try_fold(self.channels, |acc, &d| acc.checked_mul(d))
        };
        let x_image = image(&w.input).ok_or_else(too_big)?;
        let y_image = image(&w.output).ok_or_else(too_big)?;
        Ok(Sizes {
            x_image,
            y_image,
            x: x_image.checked_mul(self.batch).ok_or_else(too_big)?,
            y: y_image.checked_mul(self.batch).ok_or_else(too_big)?,
        })
    }

    /// Work per output element: reading its taps and writing it.
    fn output_work(&self) -> usize {
        self.window
            .size
            .iter()
            .fold(1usize, |acc, &s| acc.saturating_mul(s))
            .saturating_add(1)
    }

    /// Output rows (of `out2 * channels` elements) per forward task.
    fn rows_per_task(&self) -> usize {
        let row = self.window.output[2].saturating_mul(self.channels);
        TASK_WORK.div_ceil(row.saturating_mul(self.output_work()).max(1))
    }

    /// Images per gradient task: zeroing its `dx` and scattering its windows.
    fn images_per_task(&self) -> usize {
        let w = &self.window;
        let pixels = |p: &[usize; MAX_SPATIAL]| p.iter().fold(1usize, |a, &d| a.saturating_mul(d));
        let image_work = pixels(&w.output)
            .saturating_mul(self.channels)
            .saturating_mul(self.output_work())
            .saturating_add(pixels(&w.input).saturating_mul(self.channels));
        TASK_WORK.div_ceil(image_work.max(1))
    }

    /// How many parallel tasks [`max_pool`] and [`avg_pool`] split this problem
    /// into (0 for an empty output, 1 for a small one).
    pub fn forward_tasks(&self) -> usize {
        if self.window.output[2] == 0 || self.channels == 0 {
            return 0;
        }
        let out = &self.window.output;
        let rows = self.batch.saturating_mul(out[0].saturating_mul(out[1]));
        rows.div_ceil(self.rows_per_task())
    }

    /// How many parallel tasks [`max_pool_grad`] and [`avg_pool_grad`] split this
    /// problem into (0 for an empty `dx`, 1 for a small one or a batch of one).
    pub fn grad_tasks(&self) -> usize {
        let empty = self.channels == 0 || self.window.input.contains(&0);
        if empty {
            return 0;
        }
        self.batch.div_ceil(self.images_per_task())
    }
}

/// Calls `f(pixel)` for each tap of the window at output position `o` that reads
/// the input, in scan order (axis 0 outermost); `pixel` indexes the spatial
/// positions of one input image.
#[inline(always)]
fn for_each_tap(w: &Window, o: [usize; MAX_SPATIAL], mut f: impl FnMut(usize)) {
    for t0 in 0..w.size[0] {
        let Some(i0) = w.source(0, o[0], t0) else {
            continue;
        };
        for t1 in 0..w.size[1] {
            let Some(i1) = w.source(1, o[1], t1) else {
                continue;
            };
            let row = (i0 * w.input[1] + i1) * w.input[2];
            for t2 in 0..w.size[2] {
                if let Some(i2) = w.source(2, o[2], t2) {
                    f(row + i2);
                }
            }
        }
    }
}

/// Number of taps of the window at `o` that read the input (not the padding).
fn valid_taps(w: &Window, o: [usize; MAX_SPATIAL]) -> usize {
    (0..MAX_SPATIAL)
        .map(|a| {
            (0..w.size[a])
                .filter(|&t| w.source(a, o[a], t).is_some())
                .count()
        })
        .product()
}

/// Runs `f(image, o0, o1, row)` for every output row (`out2 * channels` elements of
/// `y` at one `(image, o0, o1)`), in parallel over fixed groups of rows.
fn for_each_output_row(
    s: &PoolShape,
    y: &mut [f32],
    f: impl Fn(usize, usize, usize, &mut [f32]) + Sync + Send,
) {
    let w = &s.window;
    let row_len = w.output[2] * s.channels;
    if row_len == 0 {
        return;
    }
    let per_task = s.rows_per_task();
    par::for_each_chunk_mut(y, per_task.saturating_mul(row_len), |ci, chunk| {
        let first = ci * per_task;
        for (i, row) in chunk.chunks_exact_mut(row_len).enumerate() {
            let r = first + i;
            let o1 = r % w.output[1];
            let o0 = (r / w.output[1]) % w.output[0];
            f(r / (w.output[0] * w.output[1]), o0, o1, row);
        }
    });
}

/// Zeroes `dx` and runs `f(image, dx_image)` for every image, in parallel over
/// fixed groups of whole images (so each `dx` element is summed by one task).
fn for_each_dx_image(
    s: &PoolShape,
    x_image: usize,
    dx: &mut [f32],
    f: impl Fn(usize, &mut [f32]) + Sync + Send,
) {
    if x_image == 0 {
        return;
    }
    let per_task = s.images_per_task();
    par::for_each_chunk_mut(dx, per_task.saturating_mul(x_image), |ci, chunk| {
        chunk.fill(0.0);
        for (i, image) in chunk.chunks_exact_mut(x_image).enumerate() {
            f(ci * per_task + i, image);
        }
    });
}

/// Output positions of one image in order, each with its pixel index.
fn output_pixels(w: &Window) -> impl Iterator<Item = (usize, [usize; MAX_SPATIAL])> + '_ {
    let (n1, n2) = (w.output[1], w.output[2]);
    (0..w.output_pixels()).map(move |p| (p, [p / (n1 * n2), (p / n2) % n1, p % n2]))
}

/// Whether `x` is the maximum `y` of its window: equal, or both NaN (a NaN
/// maximum came from a NaN input).
#[inline(always)]
fn is_max(x: f32, y: f32) -> bool {
    x == y || (x.is_nan() && y.is_nan())
}

/// Max pooling: `y` = the maximum of each window's taps that read `x` (padding
/// never wins); NaN if any of them is NaN.
///
/// # Errors
/// `InvalidArgument` for zero sizes, strides or dilations and for sizes that
/// overflow; `ShapeMismatch` when `x` or `y` does not hold the shape's element
/// count.
pub fn max_pool(shape: &PoolShape, x: &[f32], y: &mut [f32]) -> Result<()> {
    let sizes = shape.sizes("max_pool")?;
    check_len("max_pool x", x.len(), sizes.x)?;
    check_len("max_pool y", y.len(), sizes.y)?;
    let (w, c) = (&shape.window, shape.channels);
    for_each_output_row(shape, y, |b, o0, o1, row| {
        let x_img = &x[b * sizes.x_image..(b + 1) * sizes.x_image];
        for (o2, out) in row.chunks_exact_mut(c).enumerate() {
            let o = [o0, o1, o2];
            if valid_taps(w, o) == 0 {
                out.fill(0.0);
                continue;
            }
            out.fill(f32::NEG_INFINITY);
            for_each_tap(w, o, |p| {
                for (m, &v) in out.iter_mut().zip(&x_img[p * c..(p + 1) * c]) {
                    *m = if v > *m || v.is_nan() { v } else { *m };
                }
            });
        }
    });
    Ok(())
}

/// Gradient of [`max_pool`]: `dx` = 0, then each window's `dy` is added at the
/// first tap in scan order (axis 0, 1, 2 of the window) whose `x` equals that
/// window's `y`, as TensorFlow does. Windows of an image are added in output order.
///
/// # Errors
/// As [`max_pool`], for `x`, `y`, `dy` and `dx`.
pub fn max_pool_grad(
    shape: &PoolShape,
    x: &[f32],
    y: &[f32],
    dy: &[f32],
    dx: &mut [f32],
) -> Result<()> {
    let sizes = shape.sizes("max_pool_grad")?;
    check_len("max_pool_grad x", x.len(), sizes.x)?;
    check_len("max_pool_grad y", y.len(), sizes.y)?;
    check_len("max_pool_grad dy", dy.len(), sizes.y)?;
    check_len("max_pool_grad dx", dx.len(), sizes.x)?;
    let (w, c) = (&shape.window, shape.channels);
    for_each_dx_image(shape, sizes.x_image, dx, |b, dx_img| {
        let x_img = &x[b * sizes.x_image..(b + 1) * sizes.x_image];
        let y_img = &y[b * sizes.y_image..(b + 1) * sizes.y_image];
        let dy_img = &dy[b * sizes.y_image..(b + 1) * sizes.y_image];
        for (p, o) in output_pixels(w) {
            for c0 in (0..c).step_by(CHANNEL_BLOCK) {
                let n = CHANNEL_BLOCK.min(c - c0);
                let y_pix = &y_img[p * c + c0..p * c + c0 + n];
                let dy_pix = &dy_img[p * c + c0..p * c + c0 + n];
                let mut found = [false; CHANNEL_BLOCK];
                for_each_tap(w, o, |q| {
                    let at = q * c + c0;
                    let taps = dx_img[at..at + n].iter_mut().zip(&x_img[at..at + n]);
                    for ((((d, &xv), &yv), &g), f) in
                        taps.zip(y_pix).zip(dy_pix).zip(&mut found[..n])
                    {
                        let hit = !*f && is_max(xv, yv);
                        *d = if hit { *d + g } else { *d };
                        *f |= hit;
                    }
                });
            }
        }
    });
    Ok(())
}

/// Average pooling: `y` = the mean of each window's taps that read `x` (the sum
/// divided by their count: padding is excluded, as TensorFlow's 'same' does).
///
/// # Errors
/// As [`max_pool`].
pub fn avg_pool(shape: &PoolShape, x: &[f32], y: &mut [f32]) -> Result<()> {
    let sizes = shape.sizes("avg_pool")?;
    check_len("avg_pool x", x.len(), sizes.x)?;
    check_len("avg_pool y", y.len(), sizes.y)?;
    let (w, c) = (&shape.window, shape.channels);
    for_each_output_row(shape, y, |b, o0, o1, row| {
        let x_img = &x[b * sizes.x_image..(b + 1) * sizes.x_image];
        for (o2, out) in row.chunks_exact_mut(c).enumerate() {
            let o = [o0, o1, o2];
            out.fill(0.0);
            let taps = valid_taps(w, o);
            if taps == 0 {
                continue;
            }
            for_each_tap(w, o, |p| {
                for (s, &v) in out.iter_mut().zip(&x_img[p * c..(p + 1) * c]) {
                    *s += v;
                }
            });
            let inv = 1.0 / taps as f32;
            out.iter_mut().for_each(|s| *s *= inv);
        }
    });
    Ok(())
}

/// Gradient (the adjoint) of [`avg_pool`]: `dx` = 0, then each window's `dy`
/// divided by its count of input taps is added at each of those taps. Windows of
/// an image are added in output order.
///
/// # Errors
/// As [`max_pool`], for `dy` (the output's shape) and `dx` (the input's).
pub fn avg_pool_grad(shape: &PoolShape, dy: &[f32], dx: &mut [f32]) -> Result<()> {
    let sizes = shape.sizes("avg_pool_grad")?;
    check_len("avg_pool_grad dy", dy.len(), sizes.y)?;
    check_len("avg_pool_grad dx", dx.len(), sizes.x)?;
    let (w, c) = (&shape.window, shape.channels);
    for_each_dx_image(shape, sizes.x_image, dx, |b, dx_img| {
        let dy_img = &dy[b * sizes.y_image..(b + 1) * sizes.y_image];
        for (p, o) in output_pixels(w) {
            let taps = valid_taps(w, o);
            if taps == 0 {
                continue;
            }
            let inv = 1.0 / taps as f32;
            let dy_pix = &dy_img[p * c..(p + 1) * c];
            for_each_tap(w, o, |q| {
                for (d, &g) in dx_img[q * c..(q + 1) * c].iter_mut().zip(dy_pix) {
                    *d += g * inv;
                }
            });
        }
    });
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::window::Padding;

    /// Deterministic values in [-1, 1) (also the Winograd tests' inputs).
    pub(crate) fn values(len: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// One pooling case: input spatial dims, pool size, strides, padding.
    struct Case {
        input: Vec<usize>,
        size: Vec<usize>,
        stride: Vec<usize>,
        dilation: Vec<usize>,
        padding: Padding,
    }

    fn case(input: &[usize], size: &[usize], stride: &[usize], padding: Padding) -> Case {
        Case {
            input: input.to_vec(),
            size: size.to_vec(),
            stride: stride.to_vec(),
            dilation: vec![1; input.len()],
            padding,
        }
    }

    /// Every case the reference tests run: 1-3 axes, valid and same (symmetric and
    /// asymmetric padding), stride above, equal to and below the size, size 1.
    fn cases() -> Vec<Case> {
        use Padding::{Same, Valid};
        let mut dilated = case(&[9], &[3], &[1], Valid);
        dilated.dilation = vec![2];
        vec![
            case(&[9], &[3], &[2], Valid),
            case(&[9], &[3], &[2], Same),
            case(&[7], &[2], &[3], Valid),
            case(&[7], &[2], &[3], Same),
            case(&[6], &[3], &[1], Same),
            case(&[5, 6], &[2, 3], &[2, 2], Same),
            case(&[4, 4], &[4, 4], &[1, 1], Same),
            case(&[5, 4], &[3, 2], &[1, 1], Valid),
            case(&[5, 5], &[1, 1], &[1, 1], Valid),
            case(&[5, 5], &[1, 1], &[2, 2], Same),
            case(&[4, 5, 3], &[2, 3, 2], &[1, 2, 1], Valid),
            case(&[4, 5, 3], &[2, 3, 2], &[2, 2, 3], Same),
            case(&[3, 3, 3], &[3, 3, 3], &[1, 1, 1], Same),
            dilated,
        ]
    }

    /// The geometry by Keras's rules, computed independently of `window.rs`:
    /// per axis (output length, padding before).
    fn keras_geometry(c: &Case) -> Vec<(usize, usize)> {
        (0..c.input.len())
            .map(|a| {
                let (n, k, s) = (c.input[a], c.size[a], c.stride[a]);
                let extent = (k - 1) * c.dilation[a] + 1;
                match c.padding {
                    Padding::Valid => ((n - extent) / s + 1, 0),
                    _ => {
                        let out = n.div_ceil(s);
                        let total = ((out - 1) * s + extent).saturating_sub(n);
                        (out, total / 2)
                    }
                }
            })
            .collect()
    }

    fn shape_of(c: &Case, batch: usize, channels: usize) -> PoolShape {
        let window =
            Window::new("test", &c.input, &c.size, &c.stride, &c.dilation, c.padding).unwrap();
        PoolShape {
            batch,
            channels,
            window,
        }
    }

    /// What the reference computes.
    #[derive(Clone, Copy, PartialEq)]
    enum Ref {
        Max,
        Avg,
    }

    /// Plain f64 loops over (batch, output position, channel, tap). Returns y and,
    /// given `dy`, the gradient with respect to `x` (max: to the first maximal tap).
    fn reference(
        c: &Case,
        batch: usize,
        channels: usize,
        x: &[f32],
        dy: &[f32],
        kind: Ref,
    ) -> (Vec<f64>, Vec<f64>) {
        let geo = keras_geometry(c);
        let rank = c.input.len();
        let in_pixels: usize = c.input.iter().product();
        let out_dims: Vec<usize> = geo.iter().map(|g| g.0).collect();
        let out_pixels: usize = out_dims.iter().product();
        let mut y = vec![0.0f64; batch * out_pixels * channels];
        let mut dx = vec![0.0f64; batch * in_pixels * channels];
        let taps: usize = c.size.iter().product();
        for b in 0..batch {
            for op in 0..out_pixels {
                // Row-major decomposition of the output pixel.
                let mut o = vec![0; rank];
                let mut rest = op;
                for a in (0..rank).rev() {
                    o[a] = rest % out_dims[a];
                    rest /= out_dims[a];
                }
                // The input pixels this window reads, in scan order.
                let mut read = Vec::new();
                for tap in 0..taps {
                    let mut t = vec![0; rank];
                    let mut rest = tap;
                    for a in (0..rank).rev() {
                        t[a] = rest % c.size[a];
                        rest /= c.size[a];
                    }
                    let mut pixel = 0i64;
                    let mut inside = true;
                    for a in 0..rank {
                        let pos =
                            (o[a] * c.stride[a] + t[a] * c.dilation[a]) as i64 - geo[a].1 as i64;
                        inside &= pos >= 0 && pos < c.input[a] as i64;
                        pixel = pixel * c.input[a] as i64 + pos;
                    }
                    if inside {
                        read.push(pixel as usize);
                    }
                }
                for ch in 0..channels {
                    let xv = |p: usize| f64::from(x[(b * in_pixels + p) * channels + ch]);
                    let yi = (b * out_pixels + op) * channels + ch;
                    let g = dy.get(yi).map_or(0.0, |&g| f64::from(g));
                    let di = |p: usize| (b * in_pixels + p) * channels + ch;
                    match kind {
                        Ref::Max => {
                            let m = read.iter().map(|&p| xv(p)).fold(f64::MIN, f64::max);
                            y[yi] = m;
                            if let Some(&p) = read.iter().find(|&&p| xv(p) == m) {
                                dx[di(p)] += g;
                            }
                        }
                        Ref::Avg => {
                            let n = read.len() as f64;
                            y[yi] = read.iter().map(|&p| xv(p)).sum::<f64>() / n;
                            for &p in &read {
                                dx[di(p)] += g / n;
                            }
                        }
                    }
                }
            }
        }
        (y, dx)
    }

    fn close(got: &[f32], want: &[f64], what: &str) {
        assert_eq!(got.len(), want.len(), "{what}: length");
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            assert!(
                (f64::from(g) - w).abs() <= 1e-5 * (1.0 + w.abs()),
                "{what}: element {i} is {g}, expected {w}"
            );
        }
    }

    fn describe(c: &Case, batch: usize, channels: usize) -> String {
        format!(
            "input {:?} size {:?} stride {:?} dilation {:?} {:?}, batch {batch}, channels {channels}",
            c.input, c.size, c.stride, c.dilation, c.padding
        )
    }

    #[test]
    fn window_geometry_matches_keras_rules() {
        for c in cases() {
            let w = shape_of(&c, 1, 1).window;
            let lead = MAX_SPATIAL - c.input.len();
            for (a, &(out, pad)) in keras_geometry(&c).iter().enumerate() {
                assert_eq!(w.output[lead + a], out, "{}", describe(&c, 1, 1));
                assert_eq!(w.pad_before[lead + a], pad, "{}", describe(&c, 1, 1));
            }
        }
    }

    #[test]
    fn max_pool_and_its_grad_match_reference() {
        for (seed, c) in cases().iter().enumerate() {
            for (batch, channels) in [(2, 1), (1, 17), (2, 70)] {
                let s = shape_of(c, batch, channels);
                let what = describe(c, batch, channels);
                let x = values(batch * s.window.input_pixels() * channels, seed as u64);
                let n_out = batch * s.window.output_pixels() * channels;
                let dy = values(n_out, 100 + seed as u64);
                let (want_y, want_dx) = reference(c, batch, channels, &x, &dy, Ref::Max);
                let mut y = vec![f32::NAN; n_out];
                max_pool(&s, &x, &mut y).unwrap();
                close(&y, &want_y, &format!("max_pool {what}"));
                let mut dx = vec![f32::NAN; x.len()];
                max_pool_grad(&s, &x, &y, &dy, &mut dx).unwrap();
                close(&dx, &want_dx, &format!("max_pool_grad {what}"));
            }
        }
    }

    #[test]
    fn avg_pool_and_its_grad_match_reference() {
        for (seed, c) in cases().iter().enumerate() {
            for (batch, channels) in [(2, 1), (1, 17), (2, 70)] {
                let s = shape_of(c, batch, channels);
                let what = describe(c, batch, channels);
                let x = values(batch * s.window.input_pixels() * channels, seed as u64);
                let n_out = batch * s.window.output_pixels() * channels;
                let dy = values(n_out, 100 + seed as u64);
                let (want_y, want_dx) = reference(c, batch, channels, &x, &dy, Ref::Avg);
                let mut y = vec![f32::NAN; n_out];
                avg_pool(&s, &x, &mut y).unwrap();
                close(&y, &want_y, &format!("avg_pool {what}"));
                let mut dx = vec![f32::NAN; x.len()];
                avg_pool_grad(&s, &dy, &mut dx).unwrap();
                close(&dx, &want_dx, &format!("avg_pool_grad {what}"));
            }
        }
    }

    #[test]
    fn avg_pool_grad_is_the_adjoint() {
        for (seed, c) in cases().iter().enumerate() {
            let s = shape_of(c, 3, 5);
            let x = values(3 * s.window.input_pixels() * 5, seed as u64);
            let dy = values(3 * s.window.output_pixels() * 5, 50 + seed as u64);
            let mut y = vec![0.0; dy.len()];
            avg_pool(&s, &x, &mut y).unwrap();
            let mut dx = vec![0.0; x.len()];
            avg_pool_grad(&s, &dy, &mut dx).unwrap();
            let dot = |a: &[f32], b: &[f32]| {
                a.iter()
                    .zip(b)
                    .map(|(&p, &q)| f64::from(p) * f64::from(q))
                    .sum::<f64>()
            };
            let (lhs, rhs) = (dot(&y, &dy), dot(&x, &dx));
            assert!(
                (lhs - rhs).abs() <= 1e-5 * (1.0 + lhs.abs()),
                "{}: <avg_pool(x), dy> = {lhs}, <x, avg_pool_grad(dy)> = {rhs}",
                describe(c, 3, 5)
            );
        }
    }

    #[test]
    fn max_pool_grad_gives_ties_to_the_first_tap_in_scan_order() {
        // Values from {0, 1, 2}: most windows hold their maximum several times.
        for (seed, c) in cases().iter().enumerate() {
            let s = shape_of(c, 2, 3);
            let x: Vec<f32> = values(2 * s.window.input_pixels() * 3, seed as u64)
                .iter()
                .map(|v| (v * 1.5 + 1.5).floor().min(2.0))
                .collect();
            let dy = values(2 * s.window.output_pixels() * 3, 7 + seed as u64);
            let (_, want_dx) = reference(c, 2, 3, &x, &dy, Ref::Max);
            let mut y = vec![0.0; dy.len()];
            max_pool(&s, &x, &mut y).unwrap();
            let mut dx = vec![0.0; x.len()];
            max_pool_grad(&s, &x, &y, &dy, &mut dx).unwrap();
            close(&dx, &want_dx, &format!("ties {}", describe(c, 2, 3)));
        }
        // One 2x2 window of equal values: all of dy goes to its top-left tap.
        let c = case(&[2, 2], &[2, 2], &[1, 1], Padding::Valid);
        let s = shape_of(&c, 1, 1);
        let mut dx = [9.0; 4];
        max_pool_grad(&s, &[1.0; 4], &[1.0], &[3.0], &mut dx).unwrap();
        assert_eq!(dx, [3.0, 0.0, 0.0, 0.0]);
    }

    #[test]
    fn padding_never_wins_a_max() {
        // All inputs negative: a zero from the padding would be the max.
        let c = case(&[3, 3], &[3, 3], &[1, 1], Padding::Same);
        let s = shape_of(&c, 1, 2);
        let x: Vec<f32> = (0..18).map(|i| -1.0 - i as f32).collect();
        let mut y = vec![0.0; 18];
        max_pool(&s, &x, &mut y).unwrap();
        assert!(y.iter().all(|&v| v < 0.0), "{y:?}");
        // Corner (0, 0) sees pixels (0,0), (0,1), (1,0), (1,1); channel 0 is -1 - 2p.
        assert_eq!(y[0], -1.0);
        assert_eq!(y[2 * 8], -1.0 - 2.0 * 4.0);
    }

    #[test]
    fn nan_propagates_through_max_pool_and_gets_the_gradient() {
        let c = case(&[4], &[2], &[2], Padding::Valid);
        let s = shape_of(&c, 1, 1);
        let x = [1.0, f32::NAN, 3.0, 2.0];
        let mut y = [0.0; 2];
        max_pool(&s, &x, &mut y).unwrap();
        assert!(y[0].is_nan());
        assert_eq!(y[1], 3.0);
        let mut dx = [0.0; 4];
        max_pool_grad(&s, &x, &y, &[1.0, 2.0], &mut dx).unwrap();
        assert_eq!(dx, [0.0, 1.0, 2.0, 0.0]);
    }

    #[test]
    fn empty_problems_write_nothing_and_succeed() {
        let c = case(&[4, 4], &[2, 2], &[2, 2], Padding::Valid);
        for (batch, channels) in [(0, 3), (2, 0)] {
            let s = shape_of(&c, batch, channels);
            assert_eq!(s.forward_tasks(), 0);
            assert_eq!(s.grad_tasks(), 0);
            max_pool(&s, &[], &mut []).unwrap();
            avg_pool(&s, &[], &mut []).unwrap();
            max_pool_grad(&s, &[], &[], &[], &mut []).unwrap();
            avg_pool_grad(&s, &[], &mut []).unwrap();
        }
        // 'same' over an empty axis has no outputs.
        let s = shape_of(&case(&[0, 3], &[2, 2], &[1, 1], Padding::Same), 2, 3);
        assert_eq!(s.window.output_pixels(), 0);
        avg_pool(&s, &[], &mut []).unwrap();
        avg_pool_grad(&s, &[], &mut []).unwrap();
    }

    #[test]
    fn windows_that_read_only_padding_give_zero() {
        // Hand-built: the second window starts past the input.
        let mut w = shape_of(&case(&[2], &[2], &[2], Padding::Valid), 1, 1).window;
        w.output[2] = 2;
        let s = PoolShape {
            batch: 1,
            channels: 1,
            window: w,
        };
        let mut y = [7.0; 2];
        max_pool(&s, &[-1.0, -2.0], &mut y).unwrap();
        assert_eq!(y, [-1.0, 0.0]);
        avg_pool(&s, &[-1.0, -2.0], &mut y).unwrap();
        assert_eq!(y, [-1.5, 0.0]);
        let mut dx = [7.0; 2];
        avg_pool_grad(&s, &[2.0, 5.0], &mut dx).unwrap();
        assert_eq!(dx, [1.0, 1.0]);
        max_pool_grad(&s, &[-1.0, -2.0], &[-1.0, 0.0], &[2.0, 5.0], &mut dx).unwrap();
        assert_eq!(dx, [2.0, 0.0]);
    }

    #[test]
    fn wrong_lengths_and_bad_geometry_are_refused() {
        let c = case(&[4, 4], &[2, 2], &[2, 2], Padding::Valid);
        let s = shape_of(&c, 2, 3);
        let (nx, ny) = (2 * 16 * 3, 2 * 4 * 3);
        let (x, y, dy) = (vec![0.0; nx], vec![0.0; ny], vec![0.0; ny]);
        let mut out_y = vec![0.0; ny];
        let mut dx = vec![0.0; nx];
        assert!(max_pool(&s, &x[1..], &mut out_y).is_err());
        assert!(max_pool(&s, &x, &mut out_y[1..]).is_err());
        assert!(avg_pool(&s, &x[1..], &mut out_y).is_err());
        assert!(avg_pool(&s, &x, &mut out_y[1..]).is_err());
        assert!(max_pool_grad(&s, &x[1..], &y, &dy, &mut dx).is_err());
        assert!(max_pool_grad(&s, &x, &y[1..], &dy, &mut dx).is_err());
        assert!(max_pool_grad(&s, &x, &y, &dy[1..], &mut dx).is_err());
        assert!(max_pool_grad(&s, &x, &y, &dy, &mut dx[1..]).is_err());
        assert!(avg_pool_grad(&s, &dy[1..], &mut dx).is_err());
        assert!(avg_pool_grad(&s, &dy, &mut dx[1..]).is_err());

        let mut zero_stride = s;
        zero_stride.window.stride[1] = 0;
        assert!(max_pool(&zero_stride, &x, &mut out_y).is_err());
        let mut far = s;
        far.window.output[2] = usize::MAX;
        far.window.stride[2] = 2;
        assert!(avg_pool(&far, &x, &mut out_y).is_err());
        let mut huge = s;
        huge.window.input = [usize::MAX, 2, 1];
        assert!(avg_pool_grad(&huge, &dy, &mut dx).is_err());
        let huge_batch = PoolShape {
            batch: usize::MAX,
            ..s
        };
        assert!(max_pool(&huge_batch, &x, &mut out_y).is_err());
    }

    #[test]
    fn tiny_problems_are_one_task_and_big_ones_split() {
        let c = case(&[8, 8], &[2, 2], &[2, 2], Padding::Valid);
        let tiny = shape_of(&c, 2, 4);
        assert_eq!((tiny.forward_tasks(), tiny.grad_tasks()), (1, 1));
        let c = case(&[32, 32], &[3, 3], &[2, 2], Padding::Same);
        let big = shape_of(&c, 8, 16);
        assert!(big.forward_tasks() > 1 && big.grad_tasks() > 1);
        // A single image is one gradient task however big it is.
        let one = shape_of(&c, 1, 256);
        assert_eq!(one.grad_tasks(), 1);
    }
}
