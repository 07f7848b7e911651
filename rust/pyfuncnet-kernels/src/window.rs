//! Sliding-window geometry shared by convolution and pooling.
//!
//! Tensors are channels-last: `(batch, d0, .., d{r-1}, channels)` with 1 to 3
//! spatial axes. Kernels work on three spatial axes; fewer are the same geometry
//! with leading axes of size 1 (a 1-D window of size `k` is a `1 x 1 x k` one), so
//! one code path serves Conv1D/2D/3D and the pooling layers of every rank.
//!
//! Padding follows Keras (TensorFlow's rules): `valid` adds none; `same` gives
//! `ceil(n / stride)` outputs and puts the odd element of padding after; `causal`
//! (1-D) pads `(k - 1) * dilation` before and none after.

use crate::error::{KernelError, Result};

/// The most spatial axes a window kernel handles.
pub const MAX_SPATIAL: usize = 3;

/// How the input is padded before the window slides over it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Padding {
    Valid,
    Same,
    Causal,
}

impl Padding {
    /// `"valid"`, `"same"` or `"causal"` (case-insensitive, as Keras accepts).
    pub fn from_name(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "valid" => Some(Padding::Valid),
            "same" => Some(Padding::Same),
            "causal" => Some(Padding::Causal),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Padding::Valid => "valid",
            Padding::Same => "same",
            Padding::Causal => "causal",
        }
    }
}

/// The padding and output length of one spatial axis of `input` elements under a
/// window of `size` taps spaced `dilation` apart, moved `stride` at a time:
/// `(pad_before, output)`.
///
/// # Errors
/// `InvalidArgument` for zero sizes, strides or dilations, and when a `valid`
/// window (its dilated extent) is larger than the input.
pub fn axis_output(
    what: &str,
    input: usize,
    size: usize,
    stride: usize,
    dilation: usize,
    padding: Padding,
) -> Result<(usize, usize)> {
    let invalid = |message: String| KernelError::InvalidArgument {
        what: what.to_string(),
        message,
    };
    if size == 0 || stride == 0 || dilation == 0 {
        return Err(invalid(format!(
            "window size, stride and dilation must be positive, got size {size}, stride {stride}, dilation {dilation}"
        )));
    }
    let extent = (size - 1)
        .checked_mul(dilation)
        .and_then(|e| e.checked_add(1))
        .ok_or_else(|| {
            invalid(format!(
                "window of size {size} with dilation {dilation} is too large"
            ))
        })?;
    match padding {
        Padding::Valid => {
            if extent > input {
                return Err(invalid(format!(
                    "the window (extent {extent}) is larger than the input (length {input}) with 'valid' padding"
                )));
            }
            Ok((0, (input - extent) / stride + 1))
        }
        Padding::Same => {
            let output = input.div_ceil(stride);
            let needed = (output.saturating_sub(1) * stride + extent).saturating_sub(input);
            Ok((needed / 2, output))
        }
        Padding::Causal => Ok((extent - 1, input.div_ceil(stride))),
    }
}

/// A window sliding over up to three spatial axes (leading unused axes have input,
/// output, size, stride and dilation 1 and no padding).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub input: [usize; MAX_SPATIAL],
    pub output: [usize; MAX_SPATIAL],
    pub size: [usize; MAX_SPATIAL],
    pub stride: [usize; MAX_SPATIAL],
    pub dilation: [usize; MAX_SPATIAL],
    pub pad_before: [usize; MAX_SPATIAL],
}

impl Window {
    /// The window over `input` spatial dims (1 to 3 of them); `size`, `stride` and
    /// `dilation` have one entry per spatial axis.
    ///
    /// # Errors
    /// `InvalidArgument` for a rank outside 1..=3, lists of the wrong length, zero
    /// sizes, or a window larger than a `valid` input.
    pub fn new(
        what: &str,
        input: &[usize],
        size: &[usize],
        stride: &[usize],
        dilation: &[usize],
        padding: Padding,
    ) -> Result<Self> {
        let rank = input.len();
        let invalid = |message: String| KernelError::InvalidArgument {
            what: what.to_string(),
            message,
        };
        if rank == 0 || rank > MAX_SPATIAL {
            return Err(invalid(format!(
                "1 to {MAX_SPATIAL} spatial axes are supported, got {rank}"
            )));
        }
        for (name, list) in [("size", size), ("strides", stride), ("dilation", dilation)] {
            if list.len() != rank {
                return Err(invalid(format!(
                    "{name} needs {rank} entries (one per spatial axis), got {}",
                    list.len()
                )));
            }
        }
        if padding == Padding::Causal && rank != 1 {
            return Err(invalid(
                "'causal' padding is only defined for one spatial axis".into(),
            ));
        }
        let mut w = Window {
            input: [1; MAX_SPATIAL],
            output: [1; MAX_SPATIAL],
            size: [1; MAX_SPATIAL],
            stride: [1; MAX_SPATIAL],
            dilation: [1; MAX_SPATIAL],
            pad_before: [0; MAX_SPATIAL],
        };
        let lead = MAX_SPATIAL - rank;
        for i in 0..rank {
            let (pad, out) = axis_output(what, input[i], size[i], stride[i], dilation[i], padding)?;
            let j = lead + i;
            w.input[j] = input[i];
            w.output[j] = out;
            w.size[j] = size[i];
            w.stride[j] = stride[i];
            w.dilation[j] = dilation[i];
            w.pad_before[j] = pad;
        }
        Ok(w)
    }

    /// The window over `input` with explicit padding: `before[i]` virtual zeros
    /// before axis `i` and `after[i]` after it (negative: that many trailing
    /// input elements are never read). Transposed convolutions are the adjoints
    /// of such windows.
    ///
    /// # Errors
    /// `InvalidArgument` for a rank outside 1..=3, lists of the wrong length,
    /// zero sizes, or a padded axis shorter than the window.
    pub fn explicit(
        what: &str,
        input: &[usize],
        size: &[usize],
        stride: &[usize],
        dilation: &[usize],
        before: &[usize],
        after: &[i64],
    ) -> Result<Self> {
        let rank = input.len();
        let invalid = |message: String| KernelError::InvalidArgument {
            what: what.to_string(),
            message,
        };
        if before.len() != rank || after.len() != rank {
            return Err(invalid(format!(
                "explicit padding needs {rank} entries before and after, got {} and {}",
                before.len(),
                after.len()
            )));
        }
        let mut w = Window::new(what, input, size, stride, dilation, Padding::Same)?;
        let lead = MAX_SPATIAL - rank;
        for i in 0..rank {
            let extent = (size[i] - 1) * dilation[i] + 1;
            let padded = input[i] as i64 + before[i] as i64 + after[i];
            if padded < extent as i64 {
                return Err(invalid(format!(
                    "axis {i}: the padded input (length {padded}) is shorter than the window (extent {extent})"
                )));
            }
            w.pad_before[lead + i] = before[i];
            w.output[lead + i] = (padded as usize - extent) / stride[i] + 1;
        }
        Ok(w)
    }

    /// Elements of one spatial input image (all axes, no channels).
    pub fn input_pixels(&self) -> usize {
        self.input.iter().product()
    }

    /// Elements of one spatial output image.
    pub fn output_pixels(&self) -> usize {
        self.output.iter().product()
    }

    /// Taps of the window.
    pub fn taps(&self) -> usize {
        self.size.iter().product()
    }

    /// The input coordinate along `axis` read by output position `o` at tap `t`, or
    /// `None` when it falls in the padding.
    #[inline(always)]
    pub fn source(&self, axis: usize, o: usize, t: usize) -> Option<usize> {
        let pos =
            (o * self.stride[axis] + t * self.dilation[axis]).checked_sub(self.pad_before[axis])?;
        (pos < self.input[axis]).then_some(pos)
    }

    /// The output spatial shape as the caller's rank (`rank` trailing axes).
    pub fn output_dims(&self, rank: usize) -> &[usize] {
        &self.output[MAX_SPATIAL - rank..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_padding_matches_tensorflow() {
        // in 5, k 3, s 2: out 3, total pad 2 -> (1, 1).
        assert_eq!(axis_output("t", 5, 3, 2, 1, Padding::Same).unwrap(), (1, 3));
        // in 6, k 3, s 2: out 3, total pad 1 -> the odd one after.
        assert_eq!(axis_output("t", 6, 3, 2, 1, Padding::Same).unwrap(), (0, 3));
        // in 4, k 4, s 1: total pad 3 -> 1 before, 2 after.
        assert_eq!(axis_output("t", 4, 4, 1, 1, Padding::Same).unwrap(), (1, 4));
        // dilation 2 makes a 3-tap window span 5.
        assert_eq!(
            axis_output("t", 7, 3, 1, 2, Padding::Valid).unwrap(),
            (0, 3)
        );
        assert_eq!(
            axis_output("t", 7, 3, 1, 2, Padding::Causal).unwrap(),
            (4, 7)
        );
        assert_eq!(
            axis_output("t", 7, 3, 3, 1, Padding::Causal).unwrap(),
            (2, 3)
        );
    }

    #[test]
    fn bad_windows_are_refused() {
        assert!(axis_output("t", 2, 3, 1, 1, Padding::Valid).is_err());
        assert!(axis_output("t", 5, 0, 1, 1, Padding::Valid).is_err());
        assert!(axis_output("t", 5, 2, 0, 1, Padding::Same).is_err());
        assert!(Window::new("t", &[4, 4], &[2], &[1, 1], &[1, 1], Padding::Valid).is_err());
        assert!(Window::new("t", &[4, 4], &[2, 2], &[1, 1], &[1, 1], Padding::Causal).is_err());
        assert!(Window::new("t", &[], &[], &[], &[], Padding::Valid).is_err());
    }

    #[test]
    fn explicit_padding_sets_the_output() {
        let w = Window::explicit("t", &[8], &[3], &[2], &[1], &[1], &[-1]).unwrap();
        assert_eq!((w.pad_before[2], w.output[2]), (1, 3));
        assert!(Window::explicit("t", &[2], &[3], &[1], &[1], &[0], &[0]).is_err());
    }

    #[test]
    fn fewer_axes_lead_with_ones() {
        let w = Window::new("t", &[9], &[3], &[2], &[1], Padding::Valid).unwrap();
        assert_eq!(w.input, [1, 1, 9]);
        assert_eq!(w.output, [1, 1, 4]);
        assert_eq!(w.output_dims(1), &[4]);
        assert_eq!(w.source(2, 3, 2), Some(8));
        let s = Window::new("t", &[4], &[3], &[1], &[1], Padding::Same).unwrap();
        assert_eq!(s.source(2, 0, 0), None);
        assert_eq!(s.source(2, 3, 2), None);
        assert_eq!(s.source(2, 3, 1), Some(3));
    }
}
