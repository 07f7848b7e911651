//! Convolution over 1 to 3 spatial axes, channels-last, as GEMMs over patches.
//!
//! Shapes: input `x` is `(batch, i0, i1, i2, cin)`, output `y` is
//! `(batch, o0, o1, o2, cout)` and the kernel is `(k0, k1, k2, cin / groups, cout)`,
//! Keras's layout, so the kernel read as a matrix of `taps * cin/groups` rows and
//! `cout` columns is the GEMM's B operand as it is stored (group `g` uses columns
//! `g*cout/groups..`). Fewer spatial axes are leading axes of size 1 ([`Window`]).
//!
//! Output pixels of the whole batch are the GEMM's rows. They are cut into tiles
//! of [`tile_rows`] rows, one task each. The forward pass multiplies a tile's
//! input patches by the kernel (packed into the GEMM's panels once per call) with
//! `gemm::sgemm_gathered`, which reads each patch's taps in place in the input
//! (a tap in the padding reads a row of zeros), the bias and activation fused into
//! the GEMM's epilogue; convolutions with few channels per group, whose taps are
//! too short for that, gather the tile's patches into a column buffer that stays
//! in L2 (`tile x taps*cin/groups` floats, im2col) and multiply that. The full
//! im2col matrix is never materialised. Pointwise convolutions (one tap, stride 1,
//! no padding) skip the gather: the input already is the column matrix.
//!
//! 2-D 3 x 3 convolutions with stride 1, no dilation, one group and at least 16
//! channels each side (most of a ResNet) go to the `winograd` module instead, for
//! the forward pass, the stride-1 input gradient and the kernel gradient, when
//! its estimated work is well below the direct product's.
//!
//! Backward: with stride 1, the input gradient is a forward convolution of `dy`
//! by the flipped kernel; otherwise it multiplies each tile of `dy` by the
//! transposed kernel and scatters the columns back (col2im), a task owning whole
//! images of `dx` and adding into them in row order. The kernel gradient is `columnsᵀ · dy` summed
//! over all rows: chunks of about [`WGRAD_CHUNK_ROWS`] rows (equal in size, so
//! the threads finish together) each accumulate a partial sum tile by tile, and
//! the partials are added in chunk order. Every
//! partition depends on the shapes alone, so results are bitwise identical for any
//! thread count. The `direct_*` functions are naive loops kept as the test oracle.

use crate::error::{check_len, KernelError, Result};
use crate::gemm::{self, Epilogue, MatMut, MatRef};
use crate::par;
use crate::scratch::{with_scratch, Slot};
use crate::window::{Window, MAX_SPATIAL};
use crate::winograd;

/// Fewest input channels per group whose patches a forward pass reads in place
/// (`gemm::sgemm_gathered`): with fewer, each tap's segment is too short for the
/// kernel's per-tap setup, and im2col, which copies the taps along the last axis
/// as one run, is faster (the ResNet's first layer, 3 channels: 31 against 15
/// GFLOP/s).
const MIN_GATHERED_WIDTH: usize = 16;
/// Floats of one task's column tile, which also sets the rows of a tile read in
/// place: 256 KiB, so the tile, the kernel panel and the output tile stay cached
/// through the GEMM (512 KiB measured no faster).
const COLUMN_TILE_FLOATS: usize = 1 << 16;
/// Tile rows are a multiple of this (a multiple of every micro-kernel's row count).
const TILE_ROW_GRANULE: usize = 48;
/// The most rows of one tile (tiles of very shallow convolutions stay modest).
const MAX_TILE_ROWS: usize = 1536;
/// Rows whose kernel-gradient contributions one partial sum gathers, at most: a
/// few tens of MFLOP per chunk for the usual channel counts, and enough chunks
/// for every thread even for the small feature maps of a network's last layers.
pub const WGRAD_CHUNK_ROWS: usize = 1024;
/// Elements of the final sum of partial kernel gradients one task adds up.
const SUM_GRAIN: usize = 1 << 14;

/// The geometry of one convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvShape {
    pub batch: usize,
    pub in_channels: usize,
    pub out_channels: usize,
    pub groups: usize,
    pub window: Window,
}

impl ConvShape {
    /// A convolution of `batch` images under `window`.
    ///
    /// # Errors
    /// `InvalidArgument` when `groups` is zero or does not divide both channel
    /// counts, or when the sizes overflow.
    pub fn new(
        what: &str,
        batch: usize,
        window: Window,
        in_channels: usize,
        out_channels: usize,
        groups: usize,
    ) -> Result<Self> {
        let invalid = |message: String| KernelError::InvalidArgument {
            what: what.to_string(),
            message,
        };
        if groups == 0
            || !in_channels.is_multiple_of(groups)
            || !out_channels.is_multiple_of(groups)
        {
            return Err(invalid(format!(
                "groups ({groups}) must be positive and divide both the input channels ({in_channels}) and the filters ({out_channels})"
            )));
        }
        let shape = ConvShape {
            batch,
            in_channels,
            out_channels,
            groups,
            window,
        };
        let sizes = [
            [batch, window.input_pixels(), in_channels],
            [batch, window.output_pixels(), out_channels],
            [window.taps(), in_channels, out_channels],
            [window.output_pixels(), window.taps(), in_channels],
        ];
        for dims in sizes {
            dims.iter()
                .try_fold(1usize, |acc, &d| acc.checked_mul(d))
                .ok_or_else(|| invalid("the tensor sizes overflow".into()))?;
        }
        Ok(shape)
    }

    /// Input channels per group.
    pub fn group_in(&self) -> usize {
        self.in_channels / self.groups
    }

    /// Output channels per group.
    pub fn group_out(&self) -> usize {
        self.out_channels / self.groups
    }

    /// The GEMM depth: one row of the column matrix (taps x group input channels).
    pub fn depth(&self) -> usize {
        self.window.taps() * self.group_in()
    }

    /// Output pixels of the whole batch (the GEMM's rows).
    pub fn rows(&self) -> usize {
        self.batch * self.window.output_pixels()
    }

    pub fn input_len(&self) -> usize {
        self.batch * self.window.input_pixels() * self.in_channels
    }

    pub fn output_len(&self) -> usize {
        self.rows() * self.out_channels
    }

    pub fn kernel_len(&self) -> usize {
        self.window.taps() * self.group_in() * self.out_channels
    }

    /// Multiply-adds of the forward pass, times two.
    pub fn flops(&self) -> usize {
        2 * self.rows() * self.depth() * self.out_channels
    }

    /// One tap, stride 1, no padding: output pixel `r` reads input pixel `r` only.
    fn is_pointwise(&self) -> bool {
        let w = &self.window;
        w.taps() == 1 && w.stride == [1; MAX_SPATIAL] && w.input == w.output
    }

    fn check(&self, what: &str, x: usize, kernel: usize, y: usize) -> Result<()> {
        check_len(&format!("{what} input"), x, self.input_len())?;
        check_len(&format!("{what} kernel"), kernel, self.kernel_len())?;
        check_len(&format!("{what} output"), y, self.output_len())
    }
}

/// Rows of one column tile for a GEMM of depth `depth`.
pub fn tile_rows(depth: usize) -> usize {
    let rows = COLUMN_TILE_FLOATS / depth.max(1);
    (rows / TILE_ROW_GRANULE * TILE_ROW_GRANULE).clamp(TILE_ROW_GRANULE, MAX_TILE_ROWS)
}

/// The input pixel (flattened over batch and spatial axes) each tap of output row
/// `r` reads, walked in tap order; `None` for a tap in the padding.
fn for_each_tap(shape: &ConvShape, r: usize, visit: impl FnMut(usize, Option<usize>)) {
    for_each_tap_at(shape, &OutputPixel::of(shape, r), visit);
}

/// [`for_each_tap`] for the output pixel `at`.
fn for_each_tap_at(
    shape: &ConvShape,
    at: &OutputPixel,
    mut visit: impl FnMut(usize, Option<usize>),
) {
    let w = &shape.window;
    let ([o0, o1, o2], b) = (at.position, at.image);
    let mut tap = 0;
    for t0 in 0..w.size[0] {
        let s0 = w.source(0, o0, t0);
        for t1 in 0..w.size[1] {
            let s1 = w.source(1, o1, t1);
            for t2 in 0..w.size[2] {
                let pixel = match (s0, s1, w.source(2, o2, t2)) {
                    (Some(a), Some(c), Some(d)) => {
                        Some(((b * w.input[0] + a) * w.input[1] + c) * w.input[2] + d)
                    }
                    _ => None,
                };
                visit(tap, pixel);
                tap += 1;
            }
        }
    }
}

/// An output row as its image and position in the output.
struct OutputPixel {
    image: usize,
    position: [usize; MAX_SPATIAL],
}

impl OutputPixel {
    /// Output row `r`.
    fn of(shape: &ConvShape, r: usize) -> Self {
        let out = &shape.window.output;
        let o2 = r % out[2];
        let rest = r / out[2];
        let (o1, rest) = (rest % out[1], rest / out[1]);
        OutputPixel {
            image: rest / out[0],
            position: [rest % out[0], o1, o2],
        }
    }

    /// Moves to the next row, without dividing.
    fn advance(&mut self, shape: &ConvShape) {
        let out = &shape.window.output;
        for axis in (0..MAX_SPATIAL).rev() {
            self.position[axis] += 1;
            if self.position[axis] < out[axis] {
                return;
            }
            self.position[axis] = 0;
        }
        self.image += 1;
    }
}

/// Gathers the patches of rows `r0..r0 + rows` for group `g` into `col`
/// (`rows x depth`, row-major).
fn im2col(shape: &ConvShape, x: &[f32], g: usize, r0: usize, col: &mut [f32]) {
    let (cg, cin, depth) = (shape.group_in(), shape.in_channels, shape.depth());
    let w = &shape.window;
    if shape.groups == 1 && w.dilation[2] == 1 {
        // The taps along the last axis read adjacent pixels, whose channels are
        // contiguous: one copy per run of them instead of one per tap.
        let run = w.size[2] * cin;
        let mut at = OutputPixel::of(shape, r0);
        for dst in col.chunks_exact_mut(depth) {
            let ([o0, o1, o2], b) = (at.position, at.image);
            at.advance(shape);
            // Taps t2 in lo..hi fall inside the input.
            let start = (o2 * w.stride[2]) as isize - w.pad_before[2] as isize;
            let lo = (-start).clamp(0, w.size[2] as isize) as usize;
            let hi = (w.input[2] as isize - start).clamp(lo as isize, w.size[2] as isize) as usize;
            let mut segments = dst.chunks_exact_mut(run);
            for t0 in 0..w.size[0] {
                let s0 = w.source(0, o0, t0);
                for t1 in 0..w.size[1] {
                    let Some(seg) = segments.next() else { return };
                    match (s0, w.source(1, o1, t1)) {
                        (Some(a), Some(c)) if lo < hi => {
                            let row = ((b * w.input[0] + a) * w.input[1] + c) * w.input[2];
                            let from = (row as isize + start + lo as isize) as usize;
                            seg[..lo * cin].fill(0.0);
                            seg[lo * cin..hi * cin]
                                .copy_from_slice(&x[from * cin..(from + hi - lo) * cin]);
                            seg[hi * cin..].fill(0.0);
                        }
                        _ => seg.fill(0.0),
                    }
                }
            }
        }
        return;
    }
    let mut at = OutputPixel::of(shape, r0);
    for dst in col.chunks_exact_mut(depth) {
        for_each_tap_at(shape, &at, |tap, pixel| {
            let seg = &mut dst[tap * cg..(tap + 1) * cg];
            match pixel {
                Some(p) => seg.copy_from_slice(&x[p * cin + g * cg..][..cg]),
                None => seg.fill(0.0),
            }
        });
        at.advance(shape);
    }
}

/// Adds the column gradients of rows `r0..` for group `g` back into `dx`, whose
/// first element is input pixel `pixel0`.
fn col2im(shape: &ConvShape, dcol: &[f32], g: usize, r0: usize, dx: &mut [f32], pixel0: usize) {
    let (cg, cin, depth) = (shape.group_in(), shape.in_channels, shape.depth());
    for (i, src) in dcol.chunks_exact(depth).enumerate() {
        for_each_tap(shape, r0 + i, |tap, pixel| {
            if let Some(p) = pixel {
                let dst = &mut dx[(p - pixel0) * cin + g * cg..][..cg];
                for (d, s) in dst.iter_mut().zip(&src[tap * cg..(tap + 1) * cg]) {
                    *d += *s;
                }
            }
        });
    }
}

/// Group `g`'s columns of the kernel as the `depth x cout/groups` B operand.
fn kernel_matrix<'a>(shape: &ConvShape, kernel: &'a [f32], g: usize) -> Result<MatRef<'a>> {
    let co = shape.group_out();
    MatRef::new(&kernel[g * co..], shape.depth(), co, shape.out_channels, 1)
}

/// Group `g`'s channels of rows `r0..r0 + rows` of a `(rows, channels)` matrix.
fn channel_block(
    data: &[f32],
    channels: usize,
    width: usize,
    g: usize,
    r0: usize,
    rows: usize,
) -> Result<MatRef<'_>> {
    MatRef::new(&data[r0 * channels + g * width..], rows, width, channels, 1)
}

fn channel_block_mut(
    data: &mut [f32],
    channels: usize,
    width: usize,
    g: usize,
    rows: usize,
) -> Result<MatMut<'_>> {
    MatMut::new(&mut data[g * width..], rows, width, channels)
}

/// `y = epilogue(conv(x, kernel))`; `epilogue.bias` has `out_channels` entries.
///
/// # Errors
/// `ShapeMismatch` when a buffer's length does not match `shape`, or the bias is
/// not `out_channels` long.
pub fn conv_forward(
    shape: &ConvShape,
    x: &[f32],
    kernel: &[f32],
    epilogue: &Epilogue,
    y: &mut [f32],
) -> Result<()> {
    shape.check("conv", x.len(), kernel.len(), y.len())?;
    if let Some(bias) = epilogue.bias {
        check_len("conv bias", bias.len(), shape.out_channels)?;
    }
    let (rows, co, cout) = (shape.rows(), shape.group_out(), shape.out_channels);
    if rows == 0 || cout == 0 {
        return Ok(());
    }
    let group_epilogue = |g: usize| Epilogue {
        bias: epilogue.bias.map(|b| &b[g * co..(g + 1) * co]),
        activation: epilogue.activation,
    };
    if shape.depth() == 0 {
        // No input channels: the output is the epilogue of zero.
        for g in 0..shape.groups {
            let a = MatRef::row_major(&[], rows, 0)?;
            let b = MatRef::row_major(&[], 0, co)?;
            gemm::sgemm(
                1.0,
                a,
                b,
                0.0,
                channel_block_mut(y, cout, co, g, rows)?,
                &group_epilogue(g),
            )?;
        }
        return Ok(());
    }
    if shape.is_pointwise() {
        for g in 0..shape.groups {
            let a = channel_block(x, shape.in_channels, shape.group_in(), g, 0, rows)?;
            let c = channel_block_mut(y, cout, co, g, rows)?;
            gemm::sgemm(
                1.0,
                a,
                kernel_matrix(shape, kernel, g)?,
                0.0,
                c,
                &group_epilogue(g),
            )?;
        }
        return Ok(());
    }
    if let Some(plan) = winograd::Plan::for_shape(shape) {
        return winograd::forward(&plan, shape, x, kernel, epilogue, y);
    }
    let (tile, taps, cg, depth) = (
        tile_rows(shape.depth()),
        shape.window.taps(),
        shape.group_in(),
        shape.depth(),
    );
    let tap_offsets = TapOffsets::new(shape);
    with_packed_kernel(shape, kernel, false, |packed| {
        par::try_for_each_chunk_mut(y, tile * cout, |t, y_tile| {
            let (r0, n) = (t * tile, y_tile.len() / cout);
            if cg < MIN_GATHERED_WIDTH {
                return with_scratch(Slot::Columns, n * depth, |col| {
                    for g in 0..shape.groups {
                        im2col(shape, x, g, r0, col);
                        let a = MatRef::row_major(col, n, depth)?;
                        let c = channel_block_mut(y_tile, cout, co, g, n)?;
                        let b = packed.group(g)?;
                        gemm::sgemm_packed(1.0, a, &b, 0.0, c, &group_epilogue(g))?;
                    }
                    Ok(())
                });
            }
            for g in 0..shape.groups {
                let patches = gemm::GatheredRows {
                    source: x,
                    rows: n,
                    taps,
                    width: cg,
                    offsets: |i: usize, out: &mut [usize]| {
                        patch_offsets(shape, &tap_offsets, g, r0 + i, out)
                    },
                };
                let c = channel_block_mut(y_tile, cout, co, g, n)?;
                gemm::sgemm_gathered(&patches, &packed.group(g)?, 0.0, c, &group_epilogue(g))?;
            }
            Ok(())
        })
    })
}

/// Each tap's offset in `x` from the first pixel of its window, for windows of up
/// to [`TapOffsets::MAX_TAPS`] taps (worked out once per convolution call).
struct TapOffsets {
    relative: [usize; TapOffsets::MAX_TAPS],
    known: bool,
}

impl TapOffsets {
    const MAX_TAPS: usize = 32;

    fn new(shape: &ConvShape) -> Self {
        let (w, cin) = (&shape.window, shape.in_channels);
        let mut relative = [0usize; Self::MAX_TAPS];
        let known = w.taps() <= Self::MAX_TAPS;
        if known {
            let mut tap = 0;
            for t0 in 0..w.size[0] {
                for t1 in 0..w.size[1] {
                    for t2 in 0..w.size[2] {
                        let pixel = (t0 * w.dilation[0] * w.input[1] + t1 * w.dilation[1])
                            * w.input[2]
                            + t2 * w.dilation[2];
                        relative[tap] = pixel * cin;
                        tap += 1;
                    }
                }
            }
        }
        TapOffsets { relative, known }
    }
}

/// Where the input segments of the output rows from `first` on start in `x`,
/// for group `g`: `out` holds one row's taps after another ([`gemm::GATHER_ZEROS`]
/// for a tap in the padding). A window wholly inside the input (every row of a
/// 'valid' convolution, most of a 'same' one) adds `taps`' offsets to its first
/// pixel's without checking each.
fn patch_offsets(shape: &ConvShape, taps: &TapOffsets, g: usize, first: usize, out: &mut [usize]) {
    let (w, cin, cg) = (&shape.window, shape.in_channels, shape.group_in());
    let mut at = OutputPixel::of(shape, first);
    for row in out.chunks_exact_mut(w.taps()) {
        let start = |axis: usize| {
            let last_tap = (w.size[axis] - 1) * w.dilation[axis];
            let start = (at.position[axis] * w.stride[axis]).checked_sub(w.pad_before[axis])?;
            (start + last_tap < w.input[axis]).then_some(start)
        };
        match (start(0), start(1), start(2)) {
            (Some(s0), Some(s1), Some(s2)) if taps.known => {
                let corner = ((at.image * w.input[0] + s0) * w.input[1] + s1) * w.input[2] + s2;
                let base = corner * cin + g * cg;
                for (o, &r) in row.iter_mut().zip(&taps.relative) {
                    *o = base + r;
                }
            }
            _ => for_each_tap_at(shape, &at, |tap, pixel| {
                row[tap] = pixel.map_or(gemm::GATHER_ZEROS, |p| p * cin + g * cg);
            }),
        }
        at.advance(shape);
    }
}

/// The kernel of every group packed once per call as its products' B operand
/// (transposed for an input gradient): each tile's product would pack it again,
/// and read in place its rows lie `out_channels` floats apart (256 bytes for 64
/// channels) and fall into a few L1 sets.
struct PackedKernel<'a> {
    shape: &'a ConvShape,
    kernel: &'a [f32],
    transposed: bool,
    level: crate::cpu::SimdLevel,
    group_len: usize,
    panels: &'a [f32],
}

impl PackedKernel<'_> {
    /// Group `g`'s packed operand.
    fn group(&self, g: usize) -> Result<gemm::PackedB<'_>> {
        let b = group_operand(self.shape, self.kernel, g, self.transposed)?;
        let panels = &self.panels[g * self.group_len..];
        Ok(gemm::PackedB::from_panels(self.level, b, panels))
    }
}

/// Group `g`'s kernel matrix, transposed with `transposed`.
fn group_operand<'a>(
    shape: &ConvShape,
    kernel: &'a [f32],
    g: usize,
    transposed: bool,
) -> Result<MatRef<'a>> {
    let b = kernel_matrix(shape, kernel, g)?;
    Ok(if transposed { b.t() } else { b })
}

/// Runs `f` with the kernel packed ([`PackedKernel`]).
fn with_packed_kernel(
    shape: &ConvShape,
    kernel: &[f32],
    transposed: bool,
    f: impl FnOnce(&PackedKernel) -> Result<()>,
) -> Result<()> {
    let level = crate::cpu::active();
    let b0 = group_operand(shape, kernel, 0, transposed)?;
    let group_len = gemm::PackedB::buffer_len(level, b0.rows, b0.cols);
    let total =
        group_len
            .checked_mul(shape.groups)
            .ok_or_else(|| KernelError::InvalidArgument {
                what: "conv".into(),
                message: "the packed kernel's size overflows".into(),
            })?;
    with_scratch(Slot::PackedKernel, total, |buf| {
        for g in 0..shape.groups {
            let b = group_operand(shape, kernel, g, transposed)?;
            gemm::PackedB::new(level, b, &mut buf[g * group_len..(g + 1) * group_len])?;
        }
        f(&PackedKernel {
            shape,
            kernel,
            transposed,
            level,
            group_len,
            panels: buf,
        })
    })
}

/// `dx`, the gradient of the input, from `dy`, the gradient of the (pre-epilogue)
/// output.
///
/// # Errors
/// `ShapeMismatch` when a buffer's length does not match `shape`.
pub fn conv_backward_input(
    shape: &ConvShape,
    dy: &[f32],
    kernel: &[f32],
    dx: &mut [f32],
) -> Result<()> {
    shape.check("conv input gradient", dx.len(), kernel.len(), dy.len())?;
    let (cin, cout, co, cg) = (
        shape.in_channels,
        shape.out_channels,
        shape.group_out(),
        shape.group_in(),
    );
    if dx.is_empty() {
        return Ok(());
    }
    if shape.is_pointwise() {
        let rows = shape.rows();
        for g in 0..shape.groups {
            let a = channel_block(dy, cout, co, g, 0, rows)?;
            let c = channel_block_mut(dx, cin, cg, g, rows)?;
            gemm::sgemm(
                1.0,
                a,
                kernel_matrix(shape, kernel, g)?.t(),
                0.0,
                c,
                &Epilogue::default(),
            )?;
        }
        return Ok(());
    }
    if let Some(adjoint) = stride_one_adjoint(shape) {
        // dx is the convolution of dy by the kernel flipped in space with its
        // channel axes swapped: a forward pass, with no scatter.
        return with_scratch(Slot::FlippedKernel, kernel.len(), |flipped| {
            flip_kernel(shape, kernel, flipped);
            conv_forward(&adjoint, dy, flipped, &Epilogue::default(), dx)
        });
    }
    let w = &shape.window;
    let (in_pixels, out_pixels, depth) = (w.input_pixels(), w.output_pixels(), shape.depth());
    let tile = tile_rows(depth);
    // Whole images per task, enough of them for a task to be worth handing out.
    let image_flops = 2 * out_pixels * depth * cout;
    let images = (gemm::MIN_TASK_FLOPS / image_flops.max(1)).clamp(1, shape.batch.max(1));
    with_packed_kernel(shape, kernel, true, |packed| {
        par::try_for_each_chunk_mut(dx, images * in_pixels * cin, |t, dx_part| {
            dx_part.fill(0.0);
            let (b0, nb) = (t * images, dx_part.len() / (in_pixels * cin));
            with_scratch(Slot::Columns, tile.min(out_pixels) * depth, |dcol| {
                for b in b0..b0 + nb {
                    let (first, end) = (b * out_pixels, (b + 1) * out_pixels);
                    for r0 in (first..end).step_by(tile) {
                        let n = tile.min(end - r0);
                        let dcol = &mut dcol[..n * depth];
                        for g in 0..shape.groups {
                            let a = channel_block(dy, cout, co, g, r0, n)?;
                            let c = MatMut::row_major(dcol, n, depth)?;
                            let b = packed.group(g)?;
                            gemm::sgemm_packed(1.0, a, &b, 0.0, c, &Epilogue::default())?;
                            col2im(shape, dcol, g, r0, dx_part, b0 * in_pixels);
                        }
                    }
                }
                Ok(())
            })
        })
    })
}

/// For a convolution with stride 1 and no groups, the convolution of `dy` that
/// gives `dx`: the same window reversed, padded so each output sees exactly the
/// taps that read it.
fn stride_one_adjoint(shape: &ConvShape) -> Option<ConvShape> {
    let w = &shape.window;
    if shape.groups != 1 || w.stride != [1; MAX_SPATIAL] {
        return None;
    }
    let mut before = [0usize; MAX_SPATIAL];
    let mut after = [0i64; MAX_SPATIAL];
    for i in 0..MAX_SPATIAL {
        let extent = (w.size[i] - 1) * w.dilation[i] + 1;
        before[i] = (extent - 1).checked_sub(w.pad_before[i])?;
        after[i] = (w.input[i] + extent) as i64 - 1 - w.output[i] as i64 - before[i] as i64;
    }
    let what = "conv input gradient";
    let window = Window::explicit(
        what,
        &w.output,
        &w.size,
        &w.stride,
        &w.dilation,
        &before,
        &after,
    )
    .ok()?;
    if window.output != w.input {
        return None;
    }
    ConvShape::new(
        what,
        shape.batch,
        window,
        shape.out_channels,
        shape.in_channels,
        1,
    )
    .ok()
}

/// `flipped[t'][o][c] = kernel[taps-1-t'][c][o]`: reversed taps (which reverses every
/// spatial axis), input and output channels swapped.
fn flip_kernel(shape: &ConvShape, kernel: &[f32], flipped: &mut [f32]) {
    let (taps, cin, cout) = (shape.window.taps(), shape.in_channels, shape.out_channels);
    for t in 0..taps {
        let src = &kernel[(taps - 1 - t) * cin * cout..][..cin * cout];
        let dst = &mut flipped[t * cin * cout..][..cin * cout];
        for c in 0..cin {
            for o in 0..cout {
                dst[o * cin + c] = src[c * cout + o];
            }
        }
    }
}

/// Adds `columns(rows r0..r0+n)ᵀ · dy(rows)` of every group into `dk` (`beta` 0
/// overwrites, 1 accumulates).
fn accumulate_kernel_grad(
    shape: &ConvShape,
    x: &[f32],
    dy: &[f32],
    r0: usize,
    n: usize,
    beta: f32,
    col: &mut [f32],
    dk: &mut [f32],
) -> Result<()> {
    let (cin, cg, cout, co, depth) = (
        shape.in_channels,
        shape.group_in(),
        shape.out_channels,
        shape.group_out(),
        shape.depth(),
    );
    for g in 0..shape.groups {
        let a = if shape.is_pointwise() {
            channel_block(x, cin, cg, g, r0, n)?.t()
        } else {
            im2col(shape, x, g, r0, &mut col[..n * depth]);
            MatRef::row_major(&col[..n * depth], n, depth)?.t()
        };
        let b = channel_block(dy, cout, co, g, r0, n)?;
        let c = channel_block_mut(dk, cout, co, g, depth)?;
        gemm::sgemm(1.0, a, b, beta, c, &Epilogue::default())?;
    }
    Ok(())
}

/// `dkernel`, the gradient of the kernel, from the input and `dy`.
///
/// # Errors
/// `ShapeMismatch` when a buffer's length does not match `shape`.
pub fn conv_backward_kernel(
    shape: &ConvShape,
    x: &[f32],
    dy: &[f32],
    dkernel: &mut [f32],
) -> Result<()> {
    shape.check("conv kernel gradient", x.len(), dkernel.len(), dy.len())?;
    let rows = shape.rows();
    if rows == 0 {
        dkernel.fill(0.0);
        return Ok(());
    }
    if dkernel.is_empty() {
        return Ok(());
    }
    if let Some(plan) = winograd::Plan::for_shape(shape) {
        return winograd::backward_kernel(&plan, shape, x, dy, dkernel);
    }
    let tile = tile_rows(shape.depth());
    // Equal chunks of at most WGRAD_CHUNK_ROWS rows.
    let chunk_rows = rows.div_ceil(rows.div_ceil(WGRAD_CHUNK_ROWS));
    let col_len = if shape.is_pointwise() {
        0
    } else {
        tile * shape.depth()
    };
    // One chunk's partial sum: its rows, tile by tile, the first tile overwriting.
    let chunk_sum = |c: usize, out: &mut [f32]| -> Result<()> {
        let (first, end) = (c * chunk_rows, ((c + 1) * chunk_rows).min(rows));
        with_scratch(Slot::Columns, col_len, |col| {
            for r0 in (first..end).step_by(tile) {
                let beta = if r0 == first { 0.0 } else { 1.0 };
                accumulate_kernel_grad(shape, x, dy, r0, tile.min(end - r0), beta, col, out)?;
            }
            Ok(())
        })
    };
    let chunks = rows.div_ceil(chunk_rows);
    if chunks == 1 {
        return chunk_sum(0, dkernel);
    }
    let len = dkernel.len();
    with_scratch(Slot::Partials, chunks * len, |partials| {
        par::try_for_each_chunk_mut(partials, len, chunk_sum)?;
        sum_partials(partials, dkernel);
        Ok(())
    })
}

/// `out = Σ_c partials[c]`, the partials being consecutive runs of `out.len()`
/// floats, added in order (the same bits for any thread count), in parallel
/// over ranges of `out`.
pub(crate) fn sum_partials(partials: &[f32], out: &mut [f32]) {
    let len = out.len();
    par::for_each_chunk_mut(out, SUM_GRAIN, |i, out| {
        let start = i * SUM_GRAIN;
        out.copy_from_slice(&partials[start..start + out.len()]);
        for part in partials.chunks_exact(len).skip(1) {
            for (o, p) in out.iter_mut().zip(&part[start..]) {
                *o += *p;
            }
        }
    });
}

/// Naive direct convolution (the test oracle), accumulating in f64.
///
/// # Errors
/// As [`conv_forward`].
pub fn direct_forward(
    shape: &ConvShape,
    x: &[f32],
    kernel: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
) -> Result<()> {
    shape.check("direct conv", x.len(), kernel.len(), y.len())?;
    let (cin, cg, cout, co) = (
        shape.in_channels,
        shape.group_in(),
        shape.out_channels,
        shape.group_out(),
    );
    for r in 0..shape.rows() {
        for o in 0..cout {
            let g = o / co;
            let mut acc = bias.map_or(0.0, |b| f64::from(b[o]));
            for_each_tap(shape, r, |tap, pixel| {
                if let Some(p) = pixel {
                    for c in 0..cg {
                        let xv = f64::from(x[p * cin + g * cg + c]);
                        acc += xv * f64::from(kernel[(tap * cg + c) * cout + o]);
                    }
                }
            });
            y[r * cout + o] = acc as f32;
        }
    }
    Ok(())
}

/// Naive input gradient (the test oracle), accumulating in f64.
///
/// # Errors
/// As [`conv_backward_input`].
pub fn direct_backward_input(
    shape: &ConvShape,
    dy: &[f32],
    kernel: &[f32],
    dx: &mut [f32],
) -> Result<()> {
    shape.check(
        "direct conv input gradient",
        dx.len(),
        kernel.len(),
        dy.len(),
    )?;
    let (cin, cg, cout, co) = (
        shape.in_channels,
        shape.group_in(),
        shape.out_channels,
        shape.group_out(),
    );
    let mut acc = vec![0.0f64; dx.len()];
    for r in 0..shape.rows() {
        for_each_tap(shape, r, |tap, pixel| {
            let Some(p) = pixel else { return };
            for ci in 0..cin {
                let g = ci / cg;
                for o in g * co..(g + 1) * co {
                    acc[p * cin + ci] += f64::from(dy[r * cout + o])
                        * f64::from(kernel[(tap * cg + ci % cg) * cout + o]);
                }
            }
        });
    }
    for (d, a) in dx.iter_mut().zip(acc) {
        *d = a as f32;
    }
    Ok(())
}

/// Naive kernel gradient (the test oracle), accumulating in f64.
///
/// # Errors
/// As [`conv_backward_kernel`].
pub fn direct_backward_kernel(
    shape: &ConvShape,
    x: &[f32],
    dy: &[f32],
    dkernel: &mut [f32],
) -> Result<()> {
    shape.check(
        "direct conv kernel gradient",
        x.len(),
        dkernel.len(),
        dy.len(),
    )?;
    let (cin, cg, cout, co) = (
        shape.in_channels,
        shape.group_in(),
        shape.out_channels,
        shape.group_out(),
    );
    let mut acc = vec![0.0f64; dkernel.len()];
    for r in 0..shape.rows() {
        for_each_tap(shape, r, |tap, pixel| {
            let Some(p) = pixel else { return };
            for o in 0..cout {
                let g = o / co;
                for c in 0..cg {
                    acc[(tap * cg + c) * cout + o] +=
                        f64::from(x[p * cin + g * cg + c]) * f64::from(dy[r * cout + o]);
                }
            }
        });
    }
    for (d, a) in dkernel.iter_mut().zip(acc) {
        *d = a as f32;
    }
    Ok(())
}
