//! Winograd convolution `F(m x m, 3 x 3)`: 2-D 3 x 3 windows with stride 1, no
//! dilation and one group, channels-last, any padding.
//!
//! The output is cut into `m x m` tiles; tile `d`, the `alpha x alpha` input patch
//! under it (`alpha = m + 2`, zeros in the padding), gives
//!
//! ```text
//! Y = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A        for each pair of channels
//! ```
//!
//! With channels, the element-wise product becomes `alpha²` matrix products: at
//! each of the `alpha²` points, the transformed patches of a block of tiles
//! (`tiles x cin`) times the transformed kernel (`cin x cout`), through the
//! project's GEMM. That is `alpha² / m²` multiplies per output against the direct
//! convolution's 9: 4 for `m = 2`, 2.8 for `m = 3`, 2.25 for `m = 4`, plus the
//! transforms, which are additions and small multiples along the channel axis.
//! A convolution's `m` is the one with the least estimated work for its output
//! size (a 9 x 9 output fits three tiles of 3, a 28 x 28 one seven of 4); shapes
//! where none saves enough over the direct product keep it.
//!
//! The transforms are those of Toom-Cook interpolation at the points 0, ±1 (and
//! 2 for `m = 3`, 1/2 and -2 for `m = 4`, a third of the rounding error of ±2)
//! and infinity: Aᵀ evaluates, G evaluates the kernel, Bᵀ is the transposed
//! inverse of the evaluation matrix, each of its rows scaled to small integers
//! with the inverse scale moved into G (applied once per call, to the kernel).
//! They are constants here ([`Tiling`]), so the unrolled transforms skip the
//! zero coefficients; the tests build them from the points in f64 and compare.
//! Rounding differs from the direct product's; the error stays within the few
//! units in the last place per term that the tests allow. A NaN or infinity in
//! a patch spreads to its whole output tile, as with any Winograd convolution.
//!
//! The transforms run on blocks of 16 channels held in registers (one `zmm`,
//! two `ymm`, or a plain array at the portable level; [`Vector`]), with a
//! multiply then an add, never fused, so they give the same bits at every level.
//!
//! Work is split by whole images, a fixed number per task from the shapes alone,
//! and every output element is computed by one task in one order: results are
//! bitwise identical for any thread count.

use std::mem::MaybeUninit;

use crate::conv::{sum_partials, ConvShape};
use crate::cpu::{self, SimdBody, SimdLevel};
use crate::error::Result;
use crate::gemm::{self, Epilogue, MatMut, MatRef, PackedB};
use crate::par;
use crate::scratch::{with_scratch, Slot};

/// Largest tile edge `m` and patch edge `alpha = m + 2` built.
const MAX_M: usize = 4;
const MAX_ALPHA: usize = MAX_M + 2;
/// Kernel edge.
const R: usize = 3;
/// Fewest channels on either side: with fewer, the per-point products are too
/// thin for the GEMM and the transforms cost more than they save.
const MIN_CHANNELS: usize = 16;
/// Floats of one block's transformed patches and products together (384 KiB):
/// they stay in L2 between the transform that writes them and the product or
/// transform that reads them.
const BLOCK_FLOATS: usize = 96 * 1024;
/// Tiles of one block are a multiple of this (of every micro-kernel's rows).
const BLOCK_GRANULE: usize = 12;
/// Fewest tiles a task is given (small images go several to a task).
const MIN_TASK_TILES: usize = 24;
/// Cost of one multiply-add of a transform relative to one of the GEMM, in the
/// work estimate that picks `m` (transforms stream their operands once).
const TRANSFORM_COST: usize = 2;
/// Winograd is used when its estimated work is below this fraction (in
/// percent) of the direct product's.
const MAX_WORK_PERCENT: usize = 75;

/// How one convolution runs: its tile size and tiling.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Plan {
    /// Tile edge `m` of `F(m x m, 3 x 3)`.
    m: usize,
    /// Tiles down and across one image.
    tiles: [usize; 2],
}

impl Plan {
    /// The plan for `shape`, or `None` when Winograd does not apply (another
    /// window, stride, dilation or group count, too few channels) or would save
    /// too little.
    pub(crate) fn for_shape(shape: &ConvShape) -> Option<Plan> {
        let w = &shape.window;
        let eligible = shape.groups == 1
            && w.size == [1, R, R]
            && w.stride == [1; 3]
            && w.dilation == [1; 3]
            && w.input[0] == 1
            && w.pad_before[0] == 0
            && shape.in_channels >= MIN_CHANNELS
            && shape.out_channels >= MIN_CHANNELS
            && w.output[1] > 0
            && w.output[2] > 0;
        if !eligible {
            return None;
        }
        Self::best(shape, 2..=MAX_M)
    }

    /// The plan with the least estimated work among tile sizes `ms`, if it saves
    /// enough over the direct product.
    fn best(shape: &ConvShape, ms: impl Iterator<Item = usize>) -> Option<Plan> {
        let (cin, cout) = (shape.in_channels, shape.out_channels);
        let (oh, ow) = (shape.window.output[1], shape.window.output[2]);
        let direct = oh * ow * R * R * cin * cout;
        ms.map(|m| {
            let alpha = m + R - 1;
            let tiles = [oh.div_ceil(m), ow.div_ceil(m)];
            let per_tile = alpha * alpha * cin * cout
                + TRANSFORM_COST
                    * (2 * alpha * alpha * alpha * cin + (alpha + m) * alpha * m * cout);
            (tiles[0] * tiles[1] * per_tile, Plan { m, tiles })
        })
        .min_by_key(|&(work, _)| work)
        .filter(|&(work, _)| work * 100 < direct * MAX_WORK_PERCENT)
        .map(|(_, plan)| plan)
    }

    /// The plan with tile size `m`, whether or not it saves work (for tests).
    #[cfg(test)]
    fn with_m(shape: &ConvShape, m: usize) -> Plan {
        let (oh, ow) = (shape.window.output[1], shape.window.output[2]);
        Plan {
            m,
            tiles: [oh.div_ceil(m), ow.div_ceil(m)],
        }
    }

    fn points(&self) -> usize {
        (self.m + R - 1) * (self.m + R - 1)
    }

    fn tiles_per_image(&self) -> usize {
        self.tiles[0] * self.tiles[1]
    }
}

/// `y = epilogue(conv(x, kernel))` by `plan`; the caller has checked the lengths.
pub(crate) fn forward(
    plan: &Plan,
    shape: &ConvShape,
    x: &[f32],
    kernel: &[f32],
    epilogue: &Epilogue,
    y: &mut [f32],
) -> Result<()> {
    forward_at(cpu::active(), plan, shape, x, kernel, epilogue, y)
}

/// [`forward`] at SIMD level `level` (an error if the CPU lacks it: packing the
/// kernel checks).
fn forward_at(
    level: SimdLevel,
    plan: &Plan,
    shape: &ConvShape,
    x: &[f32],
    kernel: &[f32],
    epilogue: &Epilogue,
    y: &mut [f32],
) -> Result<()> {
    let (cin, cout, points) = (shape.in_channels, shape.out_channels, plan.points());
    let panel_len = PackedB::buffer_len(level, cin, cout);
    with_scratch(Slot::WinogradKernel, points * cin * cout, |u| {
        match plan.m {
            2 => transform_kernel::<F2>(kernel, cin, cout, u),
            3 => transform_kernel::<F3>(kernel, cin, cout, u),
            _ => transform_kernel::<F4>(kernel, cin, cout, u),
        }
        let u: &[f32] = u;
        with_scratch(Slot::PackedKernel, points * panel_len, |panels| {
            for (p, panel) in panels.chunks_exact_mut(panel_len).enumerate() {
                let b = MatRef::row_major(&u[p * cin * cout..][..cin * cout], cin, cout)?;
                PackedB::new(level, b, panel)?;
            }
            let kernels = Kernels {
                level,
                u,
                panels,
                panel_len,
                cin,
                cout,
            };
            let per_image = plan.tiles_per_image();
            let images = MIN_TASK_TILES.div_ceil(per_image).clamp(1, shape.batch);
            let image_len = shape.window.output_pixels() * cout;
            let block = block_tiles(points, cin, cout).min(images * per_image);
            let buf_len = block * points * (cin + cout);
            par::try_for_each_chunk_mut(y, images * image_len, |t, y_part| {
                with_scratch(Slot::Columns, buf_len, |buf| {
                    let mut task = Task {
                        plan,
                        shape,
                        x,
                        kernels: &kernels,
                        epilogue,
                        image0: t * images,
                        y: y_part,
                        buf,
                        block,
                        result: Ok(()),
                    };
                    cpu::run_at(level, &mut task);
                    task.result
                })
            })
        })
    })
}

/// The transformed kernel, one `cin x cout` matrix per point, and its packed
/// panels.
struct Kernels<'a> {
    level: SimdLevel,
    u: &'a [f32],
    panels: &'a [f32],
    panel_len: usize,
    cin: usize,
    cout: usize,
}

impl Kernels<'_> {
    /// Point `p`'s matrix as the GEMM's packed B.
    fn packed(&self, p: usize) -> Result<PackedB<'_>> {
        let plane = self.cin * self.cout;
        let b = MatRef::row_major(&self.u[p * plane..][..plane], self.cin, self.cout)?;
        let panels = &self.panels[p * self.panel_len..][..self.panel_len];
        Ok(PackedB::from_panels(self.level, b, panels))
    }
}

/// Tiles of one block for `points` products of `cin` by `cout`.
fn block_tiles(points: usize, cin: usize, cout: usize) -> usize {
    let fit = BLOCK_FLOATS / (points * (cin + cout));
    (fit / BLOCK_GRANULE * BLOCK_GRANULE).max(BLOCK_GRANULE)
}

/// `u[p][ci][co] = (G g Gᵀ)[p]` for every pair of channels, `p = i*alpha + j`,
/// from the kernel `(3, 3, cin, cout)`.
fn transform_kernel<T: Tiling>(kernel: &[f32], cin: usize, cout: usize, u: &mut [f32]) {
    let alpha = T::M + R - 1;
    let plane = cin * cout;
    let tap = |ky: usize, kx: usize| &kernel[(ky * R + kx) * plane..][..plane];
    for i in 0..alpha {
        for j in 0..alpha {
            let out = &mut u[(i * alpha + j) * plane..][..plane];
            out.fill(0.0);
            for ky in 0..R {
                for kx in 0..R {
                    let coef = T::G[i][ky] * T::G[j][kx];
                    if coef != 0.0 {
                        for (o, v) in out.iter_mut().zip(tap(ky, kx)) {
                            *o += coef * *v;
                        }
                    }
                }
            }
        }
    }
}

/// One task: whole images from `image0` on, whose outputs are `y`.
struct Task<'a> {
    plan: &'a Plan,
    shape: &'a ConvShape,
    x: &'a [f32],
    kernels: &'a Kernels<'a>,
    epilogue: &'a Epilogue<'a>,
    image0: usize,
    y: &'a mut [f32],
    /// A block's transformed patches, then its products.
    buf: &'a mut [f32],
    block: usize,
    result: Result<()>,
}

impl SimdBody for Task<'_> {
    #[inline(always)]
    fn run(&mut self) {
        // SAFETY: the kernels' level is one the CPU supports (`PackedB::new`
        // refused any other before the tasks started).
        self.result = unsafe { dispatch(self.kernels.level, self.plan.m, self) };
    }
}

/// A task whose blocks run with the vector type of a SIMD level and the
/// transforms' sizes as constants.
trait Blocks {
    /// Runs the task.
    ///
    /// # Safety
    /// The CPU supports `V`'s instruction set.
    unsafe fn run_blocks<V: Vector, T: Tiling, const A: usize, const M: usize>(
        &mut self,
    ) -> Result<()>;
}

/// Runs `task`'s blocks with the vector type of `level` and the tile size `m`
/// (the caller runs it at `level`, see [`cpu::run_at`]).
///
/// # Safety
/// The CPU supports `level`.
#[inline(always)]
unsafe fn dispatch<B: Blocks>(level: SimdLevel, m: usize, task: &mut B) -> Result<()> {
    /// # Safety
    /// The CPU supports `V`'s instruction set.
    #[inline(always)]
    unsafe fn with<V: Vector, B: Blocks>(m: usize, task: &mut B) -> Result<()> {
        // SAFETY (every arm): forwarded.
        unsafe {
            match m {
                2 => task.run_blocks::<V, F2, 4, 2>(),
                3 => task.run_blocks::<V, F3, 5, 3>(),
                _ => task.run_blocks::<V, F4, 6, 4>(),
            }
        }
    }
    // SAFETY (every arm): `V` is `level`'s vector type, which the CPU supports.
    unsafe {
        match level {
            #[cfg(target_arch = "x86_64")]
            SimdLevel::Avx512 => with::<vectors::Avx512, B>(m, task),
            #[cfg(target_arch = "x86_64")]
            SimdLevel::Avx2Fma => with::<vectors::Avx2, B>(m, task),
            _ => with::<vectors::Portable, B>(m, task),
        }
    }
}

impl Blocks for Task<'_> {
    /// Block by block: the patches transformed, one product per point, the
    /// products transformed back into the output.
    #[inline(always)]
    unsafe fn run_blocks<V: Vector, T: Tiling, const A: usize, const M: usize>(
        &mut self,
    ) -> Result<()> {
        let (cin, cout, block) = (self.shape.in_channels, self.shape.out_channels, self.block);
        let points = A * A;
        let image_len = self.shape.window.output_pixels() * cout;
        let tiles = self.y.len() / image_len * self.plan.tiles_per_image();
        let (v, prod) = self.buf.split_at_mut(block * points * cin);
        let mut partial = [[0.0; LANES]; MAX_ALPHA * MAX_ALPHA];
        for first in (0..tiles).step_by(block) {
            let n = block.min(tiles - first);
            for q in 0..n {
                let at = (self.image0, first + q);
                // SAFETY: the CPU supports `V`'s set (the contract).
                unsafe {
                    input_tile::<V, T, A>(
                        self.plan,
                        self.shape,
                        self.x,
                        at,
                        (v, block, q),
                        &mut partial,
                    )
                };
            }
            for p in 0..points {
                let a = MatRef::row_major(&v[p * block * cin..][..n * cin], n, cin)?;
                let c = MatMut::row_major(&mut prod[p * block * cout..][..n * cout], n, cout)?;
                let b = self.kernels.packed(p)?;
                gemm::sgemm_packed(1.0, a, &b, 0.0, c, &Epilogue::default())?;
            }
            for q in 0..n {
                let (tile, dst) = (first + q, (&mut *self.y, self.epilogue));
                // SAFETY: as above.
                unsafe {
                    output_tile::<V, T, A, M>(
                        self.plan,
                        self.shape,
                        tile,
                        (prod, block, q),
                        dst,
                        &mut partial,
                    )
                };
            }
        }
        Ok(())
    }
}

/// The transform matrices of one tile size as constants, so that the
/// transforms, unrolled, multiply by the nonzero coefficients only (and by 1 not
/// at all). They are the Toom-Cook matrices that the tests build from the points
/// in f64 (`tests::Transform::new`) and compare with these.
trait Tiling {
    /// The tile edge.
    const M: usize;
    /// `Bᵀ`, `alpha x alpha` (the rest zeros).
    const BT: [[f32; MAX_ALPHA]; MAX_ALPHA];
    /// `Aᵀ`, `m x alpha`.
    const AT: [[f32; MAX_ALPHA]; MAX_M];
    /// `G`, `alpha x 3`.
    const G: [[f32; R]; MAX_ALPHA];
    /// For the kernel gradient (`F(3, m)` at the same points, with the same
    /// `Bᵀ`): `Gd`, `alpha x m`, which transforms a tile of `dy`.
    const GD: [[f32; MAX_ALPHA]; MAX_ALPHA];
    /// And `Aw`, `3 x alpha`, which takes the sums back to the kernel.
    const AW: [[f32; MAX_ALPHA]; R];
}

/// `F(2, 3)`: points 0, ±1.
struct F2;
/// `F(3, 3)`: points 0, ±1, 2.
struct F3;
/// `F(4, 3)`: points 0, ±1, 1/2, -2.
struct F4;

impl Tiling for F2 {
    const M: usize = 2;
    const BT: [[f32; MAX_ALPHA]; MAX_ALPHA] = [
        [1.0, 0.0, -1.0, 0.0, 0.0, 0.0],
        [0.0, 1.0, 1.0, 0.0, 0.0, 0.0],
        [0.0, -1.0, 1.0, 0.0, 0.0, 0.0],
        [0.0, -1.0, 0.0, 1.0, 0.0, 0.0],
        [0.0; MAX_ALPHA],
        [0.0; MAX_ALPHA],
    ];
    const AT: [[f32; MAX_ALPHA]; MAX_M] = [
        [1.0, 1.0, 1.0, 0.0, 0.0, 0.0],
        [0.0, 1.0, -1.0, 1.0, 0.0, 0.0],
        [0.0; MAX_ALPHA],
        [0.0; MAX_ALPHA],
    ];
    const G: [[f32; R]; MAX_ALPHA] = [
        [1.0, 0.0, 0.0],
        [0.5, 0.5, 0.5],
        [0.5, -0.5, 0.5],
        [0.0, 0.0, 1.0],
        [0.0; R],
        [0.0; R],
    ];
    const GD: [[f32; MAX_ALPHA]; MAX_ALPHA] = [
        [1.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        [0.5, 0.5, 0.0, 0.0, 0.0, 0.0],
        [0.5, -0.5, 0.0, 0.0, 0.0, 0.0],
        [0.0, 1.0, 0.0, 0.0, 0.0, 0.0],
        [0.0; MAX_ALPHA],
        [0.0; MAX_ALPHA],
    ];
    const AW: [[f32; MAX_ALPHA]; R] = [
        [1.0, 1.0, 1.0, 0.0, 0.0, 0.0],
        [0.0, 1.0, -1.0, 0.0, 0.0, 0.0],
        [0.0, 1.0, 1.0, 1.0, 0.0, 0.0],
    ];
}

impl Tiling for F3 {
    const M: usize = 3;
    const BT: [[f32; MAX_ALPHA]; MAX_ALPHA] = [
        [2.0, -1.0, -2.0, 1.0, 0.0, 0.0],
        [0.0, 2.0, 1.0, -1.0, 0.0, 0.0],
        [0.0, -2.0, 3.0, -1.0, 0.0, 0.0],
        [0.0, -1.0, 0.0, 1.0, 0.0, 0.0],
        [0.0, 2.0, -1.0, -2.0, 1.0, 0.0],
        [0.0; MAX_ALPHA],
    ];
    const AT: [[f32; MAX_ALPHA]; MAX_M] = [
        [1.0, 1.0, 1.0, 1.0, 0.0, 0.0],
        [0.0, 1.0, -1.0, 2.0, 0.0, 0.0],
        [0.0, 1.0, 1.0, 4.0, 1.0, 0.0],
        [0.0; MAX_ALPHA],
    ];
    const G: [[f32; R]; MAX_ALPHA] = [
        [0.5, 0.0, 0.0],
        [0.5, 0.5, 0.5],
        [0.16666667, -0.16666667, 0.16666667],
        [0.16666667, 0.33333334, 0.6666667],
        [0.0, 0.0, 1.0],
        [0.0; R],
    ];
    const GD: [[f32; MAX_ALPHA]; MAX_ALPHA] = [
        [0.5, 0.0, 0.0, 0.0, 0.0, 0.0],
        [0.5, 0.5, 0.5, 0.0, 0.0, 0.0],
        [0.16666667, -0.16666667, 0.16666667, 0.0, 0.0, 0.0],
        [0.16666667, 0.33333334, 0.6666667, 0.0, 0.0, 0.0],
        [0.0, 0.0, 1.0, 0.0, 0.0, 0.0],
        [0.0; MAX_ALPHA],
    ];
    const AW: [[f32; MAX_ALPHA]; R] = [
        [1.0, 1.0, 1.0, 1.0, 0.0, 0.0],
        [0.0, 1.0, -1.0, 2.0, 0.0, 0.0],
        [0.0, 1.0, 1.0, 4.0, 1.0, 0.0],
    ];
}

impl Tiling for F4 {
    const M: usize = 4;
    const BT: [[f32; MAX_ALPHA]; MAX_ALPHA] = [
        [1.0, -1.5, -2.0, 1.5, 1.0, 0.0],
        [0.0, -2.0, 1.0, 5.0, 2.0, 0.0],
        [0.0, -2.0, 5.0, -1.0, -2.0, 0.0],
        [0.0, 2.0, 1.0, -2.0, -1.0, 0.0],
        [0.0, 1.0, -2.0, -1.0, 2.0, 0.0],
        [0.0, 1.0, -1.5, -2.0, 1.5, 1.0],
    ];
    const AT: [[f32; MAX_ALPHA]; MAX_M] = [
        [1.0, 1.0, 1.0, 1.0, 1.0, 0.0],
        [0.0, 1.0, -1.0, 0.5, -2.0, 0.0],
        [0.0, 1.0, 1.0, 0.25, 4.0, 0.0],
        [0.0, 1.0, -1.0, 0.125, -8.0, 1.0],
    ];
    const G: [[f32; R]; MAX_ALPHA] = [
        [1.0, 0.0, 0.0],
        [0.16666667, 0.16666667, 0.16666667],
        [0.16666667, -0.16666667, 0.16666667],
        [1.0666667, 0.53333336, 0.26666668],
        [0.033333335, -0.06666667, 0.13333334],
        [0.0, 0.0, 1.0],
    ];
    const GD: [[f32; MAX_ALPHA]; MAX_ALPHA] = [
        [1.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        [0.16666667, 0.16666667, 0.16666667, 0.16666667, 0.0, 0.0],
        [0.16666667, -0.16666667, 0.16666667, -0.16666667, 0.0, 0.0],
        [1.0666667, 0.53333336, 0.26666668, 0.13333334, 0.0, 0.0],
        [0.033333335, -0.06666667, 0.13333334, -0.26666668, 0.0, 0.0],
        [0.0, 0.0, 0.0, 1.0, 0.0, 0.0],
    ];
    const AW: [[f32; MAX_ALPHA]; R] = [
        [1.0, 1.0, 1.0, 1.0, 1.0, 0.0],
        [0.0, 1.0, -1.0, 0.5, -2.0, 0.0],
        [0.0, 1.0, 1.0, 0.25, 4.0, 1.0],
    ];
}

/// Channels one pass of a transform works on: one `zmm` register, two `ymm`.
const LANES: usize = 16;
type Lanes = [f32; LANES];

/// A block of `LANES` channels in registers, for the transforms.
///
/// Each implementation uses one instruction set: its methods run only where
/// the CPU supports it (their `unsafe` contract).
trait Vector: Copy {
    /// # Safety
    /// The CPU supports the implementation's instruction set (all methods).
    unsafe fn zero() -> Self;
    unsafe fn load(src: &Lanes) -> Self;
    unsafe fn store(self, dst: &mut Lanes);
    /// `self + c * x`, a multiply then an add (not fused): the same bits at
    /// every level.
    unsafe fn add_scaled(self, c: f32, x: Self) -> Self;
}

mod vectors {
    use super::{Lanes, Vector, LANES};

    /// Plain arrays, for the portable level.
    #[derive(Clone, Copy)]
    pub(super) struct Portable(Lanes);

    impl Vector for Portable {
        #[inline(always)]
        unsafe fn zero() -> Self {
            Portable([0.0; LANES])
        }
        #[inline(always)]
        unsafe fn load(src: &Lanes) -> Self {
            Portable(*src)
        }
        #[inline(always)]
        unsafe fn store(self, dst: &mut Lanes) {
            *dst = self.0;
        }
        #[inline(always)]
        unsafe fn add_scaled(mut self, c: f32, x: Self) -> Self {
            for (s, v) in self.0.iter_mut().zip(x.0) {
                *s += c * v;
            }
            self
        }
    }

    #[cfg(target_arch = "x86_64")]
    pub(super) use x86::{Avx2, Avx512};

    #[cfg(target_arch = "x86_64")]
    mod x86 {
        use std::arch::x86_64::*;

        use super::super::{Lanes, Vector};

        /// Two `ymm` registers.
        #[derive(Clone, Copy)]
        pub(in super::super) struct Avx2([__m256; 2]);

        // SAFETY (every block below): the contract of `Vector`, the CPU supports
        // AVX; `Lanes` holds 16 floats, the two vectors' worth.
        impl Vector for Avx2 {
            #[inline(always)]
            unsafe fn zero() -> Self {
                unsafe { Avx2([_mm256_setzero_ps(); 2]) }
            }
            #[inline(always)]
            unsafe fn load(src: &Lanes) -> Self {
                let p = src.as_ptr();
                unsafe { Avx2([_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8))]) }
            }
            #[inline(always)]
            unsafe fn store(self, dst: &mut Lanes) {
                let p = dst.as_mut_ptr();
                unsafe {
                    _mm256_storeu_ps(p, self.0[0]);
                    _mm256_storeu_ps(p.add(8), self.0[1]);
                }
            }
            #[inline(always)]
            unsafe fn add_scaled(self, c: f32, x: Self) -> Self {
                unsafe {
                    let c = _mm256_set1_ps(c);
                    Avx2([
                        _mm256_add_ps(self.0[0], _mm256_mul_ps(c, x.0[0])),
                        _mm256_add_ps(self.0[1], _mm256_mul_ps(c, x.0[1])),
                    ])
                }
            }
        }

        /// One `zmm` register.
        #[derive(Clone, Copy)]
        pub(in super::super) struct Avx512(__m512);

        // SAFETY (every block below): the contract of `Vector`, the CPU supports
        // AVX-512F; `Lanes` holds 16 floats, one vector.
        impl Vector for Avx512 {
            #[inline(always)]
            unsafe fn zero() -> Self {
                unsafe { Avx512(_mm512_setzero_ps()) }
            }
            #[inline(always)]
            unsafe fn load(src: &Lanes) -> Self {
                unsafe { Avx512(_mm512_loadu_ps(src.as_ptr())) }
            }
            #[inline(always)]
            unsafe fn store(self, dst: &mut Lanes) {
                unsafe { _mm512_storeu_ps(dst.as_mut_ptr(), self.0) }
            }
            #[inline(always)]
            unsafe fn add_scaled(self, c: f32, x: Self) -> Self {
                unsafe { Avx512(_mm512_add_ps(self.0, _mm512_mul_ps(_mm512_set1_ps(c), x.0))) }
            }
        }
    }
}

/// The block of lanes at `at` in `data`.
#[inline(always)]
fn lanes_at(data: &[f32], at: usize) -> &Lanes {
    data[at..at + LANES].try_into().expect("a block of lanes")
}

/// The block of lanes at `at` in `data`, to write.
#[inline(always)]
fn lanes_at_mut(data: &mut [f32], at: usize) -> &mut Lanes {
    (&mut data[at..at + LANES])
        .try_into()
        .expect("a block of lanes")
}

/// `Σ_k coefs[k] * src[k]` over the nonzero coefficients and present sources.
///
/// # Safety
/// The CPU supports `V`'s instruction set.
#[inline(always)]
unsafe fn combine<V: Vector, const K: usize>(coefs: &[f32; MAX_ALPHA], src: &[Option<V>; K]) -> V {
    // SAFETY: forwarded.
    unsafe {
        let mut o = V::zero();
        for (&c, s) in coefs.iter().zip(src) {
            if let Some(s) = s.filter(|_| c != 0.0) {
                o = o.add_scaled(c, s);
            }
        }
        o
    }
}

/// `Y = Aᵀ M A` for one block of channels, rows `< rows` and columns `< cols` of
/// the `M x M` tile: `half[j][a] = Σ_i Aᵀ[a][i] M[i][j]`, then `y[a][b] = Σ_j
/// Aᵀ[b][j] half[j][a]` into `out(a, b, y)`; `m(i*A + j)` is point (i, j).
///
/// # Safety
/// The CPU supports `V`'s instruction set.
#[inline(always)]
unsafe fn transform_products<'s, V: Vector, const A: usize, const M: usize>(
    at: &[[f32; MAX_ALPHA]; MAX_M],
    (rows, cols): (usize, usize),
    m: impl Fn(usize) -> &'s Lanes,
    mut out: impl FnMut(usize, usize, V),
) {
    // SAFETY: forwarded.
    unsafe {
        // As in `transform_square`: written before read, not initialised.
        let mut half = [[MaybeUninit::<V>::uninit(); M]; A];
        for (j, half_col) in half.iter_mut().enumerate() {
            let mut col = [None; A];
            for (i, c) in col.iter_mut().enumerate() {
                *c = Some(V::load(m(i * A + j)));
            }
            for (a, h) in half_col.iter_mut().enumerate() {
                h.write(combine(&at[a], &col));
            }
        }
        for a in 0..rows {
            let mut row = [None; A];
            for (j, r) in row.iter_mut().enumerate() {
                // SAFETY: written for every j and a < M above.
                *r = Some(half[j][a].assume_init());
            }
            for b in 0..cols {
                out(a, b, combine(&at[b], &row));
            }
        }
    }
}

/// Transforms the input patch of tile `tile` (counted from image `image0`'s
/// first) into row `q` of the block `v` at each point `p` (`v` holds `block` rows
/// of `cin` floats per point): `V = Bᵀ d B`, `LANES` channels at a time in
/// registers, the patch's pixels in the padding absent (zeros). `partial` holds
/// the last channels when fewer than a block remain.
///
/// # Safety
/// The CPU supports `V`'s instruction set.
#[inline(always)]
unsafe fn input_tile<V: Vector, T: Tiling, const A: usize>(
    plan: &Plan,
    shape: &ConvShape,
    x: &[f32],
    (image0, tile): (usize, usize),
    (v, block, q): (&mut [f32], usize, usize),
    partial: &mut [Lanes; MAX_ALPHA * MAX_ALPHA],
) {
    let (m, w, cin) = (plan.m, &shape.window, shape.in_channels);
    let per_image = plan.tiles_per_image();
    let image = image0 + tile / per_image;
    let (ty, tx) = (tile % per_image / plan.tiles[1], tile % plan.tiles[1]);
    let (h, wd) = (w.input[1], w.input[2]);
    // Where each pixel (a, b) of the patch starts in `x`, or None in the padding.
    let mut start = [[None; A]; A];
    for (a, row) in start.iter_mut().enumerate() {
        let iy = (ty * m + a)
            .checked_sub(w.pad_before[1])
            .filter(|&iy| iy < h);
        for (b, s) in row.iter_mut().enumerate() {
            let ix = (tx * m + b)
                .checked_sub(w.pad_before[2])
                .filter(|&ix| ix < wd);
            *s = iy
                .zip(ix)
                .map(|(iy, ix)| ((image * h + iy) * wd + ix) * cin);
        }
    }
    // SAFETY: the contract.
    unsafe { transform_to_points::<V, A, A>(&T::BT, (x, &start, cin), (v, block, q), partial) };
}

/// Transforms a `K x K` tile whose pixel `(a, b)` starts at `start[a][b]` in
/// `src` (None: zeros) by `C x Cᵀ` (`C`: `A x K`, see [`transform_square`]) into
/// row `q` of the block `dst` at each of the `A x A` points (`block` rows of
/// `channels` floats per point), `LANES` channels at a time; `partial` holds
/// the last channels when fewer than a block remain.
///
/// # Safety
/// The CPU supports `V`'s instruction set.
#[inline(always)]
unsafe fn transform_to_points<V: Vector, const K: usize, const A: usize>(
    c: &[[f32; MAX_ALPHA]; MAX_ALPHA],
    (src, start, channels): (&[f32], &[[Option<usize>; K]; K], usize),
    (dst, block, q): (&mut [f32], usize, usize),
    partial: &mut [Lanes; MAX_ALPHA * MAX_ALPHA],
) {
    let row = |p: usize, c0: usize| (p * block + q) * channels + c0;
    let full = channels / LANES * LANES;
    for c0 in (0..full).step_by(LANES) {
        let x = |a: usize, b: usize| start[a][b].map(|at| lanes_at(src, at + c0));
        // SAFETY (both calls): the contract.
        unsafe { transform_square::<V, K, A>(c, x, |p, o| o.store(lanes_at_mut(dst, row(p, c0)))) };
    }
    if full < channels {
        let lanes = channels - full;
        let mut tile = [[0.0; LANES]; MAX_ALPHA * MAX_ALPHA];
        for (k, pixel) in tile.iter_mut().enumerate().take(K * K) {
            if let Some(at) = start[k / K][k % K] {
                pixel[..lanes].copy_from_slice(&src[at + full..][..lanes]);
            }
        }
        let x = |a: usize, b: usize| Some(&tile[a * K + b]);
        unsafe { transform_square::<V, K, A>(c, x, |p, o| o.store(&mut partial[p])) };
        for (p, o) in partial.iter().enumerate().take(A * A) {
            dst[row(p, full)..][..lanes].copy_from_slice(&o[..lanes]);
        }
    }
}

/// Transforms the products of tile `tile` (row `q` of the block `prod` at each
/// point) back (`Y = Aᵀ M A`), `LANES` channels at a time in registers, writes
/// the pixels inside the output and applies the epilogue to them. `partial`
/// holds the last channels when fewer than a block remain.
///
/// # Safety
/// The CPU supports `V`'s instruction set.
#[inline(always)]
unsafe fn output_tile<V: Vector, T: Tiling, const A: usize, const M: usize>(
    plan: &Plan,
    shape: &ConvShape,
    tile: usize,
    (prod, block, q): (&[f32], usize, usize),
    (y, epilogue): (&mut [f32], &Epilogue),
    partial: &mut [Lanes; MAX_ALPHA * MAX_ALPHA],
) {
    let (w, cout) = (&shape.window, shape.out_channels);
    let per_image = plan.tiles_per_image();
    let image = tile / per_image;
    let (ty, tx) = (tile % per_image / plan.tiles[1], tile % plan.tiles[1]);
    let (oh, ow) = (w.output[1], w.output[2]);
    let (rows, cols) = (M.min(oh - ty * M), M.min(ow - tx * M));
    let pixel = |a: usize, b: usize| ((image * oh + ty * M + a) * ow + tx * M + b) * cout;
    let point = |p: usize, c0: usize| (p * block + q) * cout + c0;
    let full = cout / LANES * LANES;
    for c0 in (0..full).step_by(LANES) {
        let m = |p: usize| lanes_at(prod, point(p, c0));
        // SAFETY (both calls): the contract.
        unsafe {
            transform_products::<V, A, M>(&T::AT, (rows, cols), m, |a, b, o| {
                o.store(lanes_at_mut(y, pixel(a, b) + c0))
            })
        };
    }
    if full < cout {
        let lanes = cout - full;
        let mut products = [[0.0; LANES]; MAX_ALPHA * MAX_ALPHA];
        for (p, point_lanes) in products.iter_mut().enumerate().take(A * A) {
            point_lanes[..lanes].copy_from_slice(&prod[point(p, full)..][..lanes]);
        }
        let m = |p: usize| &products[p];
        unsafe {
            transform_products::<V, A, M>(&T::AT, (rows, cols), m, |a, b, o| {
                o.store(&mut partial[a * M + b])
            })
        };
        for a in 0..rows {
            for b in 0..cols {
                y[pixel(a, b) + full..][..lanes].copy_from_slice(&partial[a * M + b][..lanes]);
            }
        }
    }
    if !epilogue.is_identity() {
        for a in 0..rows {
            for b in 0..cols {
                epilogue.apply(&mut y[pixel(a, b)..][..cout], 0);
            }
        }
    }
}

/// Chunks of images the kernel gradient's sum is cut into (fewer with fewer
/// images): each gathers a partial sum of the per-point products, added in
/// chunk order, so the split depends on the batch alone.
const GRAD_CHUNKS: usize = 8;

/// `dkernel`, the kernel gradient, from the input `x` and `dy` by `plan`; the
/// caller has checked the lengths.
///
/// Per tile, `Y = Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A` is linear in `g`, so the gradient
/// is the same kind of product with the roles turned: the patch transformed
/// as in the forward pass (`Bᵀ d B`), `dy`'s `m x m` tile transformed by the
/// `alpha x m` matrix `Gd` (`Gd e Gdᵀ`), and at each point their product over
/// the tiles, `Vᵀ E`, summed (a GEMM over the tiles); `Aw` (`3 x alpha`) takes
/// the `alpha x alpha` sums back to the 3 x 3 kernel. These are Toom-Cook's
/// `F(3, m)`: 3 outputs of a filter of `m`, at the same points and with the
/// same `Bᵀ`.
pub(crate) fn backward_kernel(
    plan: &Plan,
    shape: &ConvShape,
    x: &[f32],
    dy: &[f32],
    dkernel: &mut [f32],
) -> Result<()> {
    backward_kernel_at(cpu::active(), plan, shape, x, dy, dkernel)
}

/// [`backward_kernel`] at SIMD level `level` (an error if the CPU lacks it).
fn backward_kernel_at(
    level: SimdLevel,
    plan: &Plan,
    shape: &ConvShape,
    x: &[f32],
    dy: &[f32],
    dkernel: &mut [f32],
) -> Result<()> {
    if !level.is_supported() {
        return Err(crate::error::KernelError::InvalidArgument {
            what: "conv kernel gradient".into(),
            message: format!("SIMD level `{}` is not supported by this CPU", level.name()),
        });
    }
    let (cin, cout, points) = (shape.in_channels, shape.out_channels, plan.points());
    let sums_len = points * cin * cout;
    let images = shape.batch.div_ceil(GRAD_CHUNKS.min(shape.batch));
    let chunks = shape.batch.div_ceil(images);
    let per_image = plan.tiles_per_image();
    let block = block_tiles(points, cin, cout).min(images * per_image);
    let buf_len = block * points * (cin + cout);
    with_scratch(Slot::Partials, chunks * sums_len, |partials| {
        par::try_for_each_chunk_mut(partials, sums_len, |c, sums| {
            with_scratch(Slot::Columns, buf_len, |buf| {
                let mut task = GradTask {
                    plan,
                    shape,
                    x,
                    dy,
                    level,
                    image0: c * images,
                    images: images.min(shape.batch - c * images),
                    sums,
                    buf,
                    block,
                    result: Ok(()),
                };
                cpu::run_at(level, &mut task);
                task.result
            })
        })?;
        with_scratch(Slot::WinogradKernel, sums_len, |total| {
            sum_partials(partials, total);
            match plan.m {
                2 => sums_to_kernel::<F2>(total, cin * cout, dkernel),
                3 => sums_to_kernel::<F3>(total, cin * cout, dkernel),
                _ => sums_to_kernel::<F4>(total, cin * cout, dkernel),
            }
            Ok(())
        })
    })
}

/// `dkernel[ky][kx] = Σ_ij Aw[ky][i] sums[i][j] Aw[kx][j]`, each a plane of
/// `plane` floats.
fn sums_to_kernel<T: Tiling>(sums: &[f32], plane: usize, dkernel: &mut [f32]) {
    let alpha = T::M + R - 1;
    for (tap, out) in dkernel.chunks_exact_mut(plane).enumerate() {
        let (ky, kx) = (tap / R, tap % R);
        out.fill(0.0);
        for i in 0..alpha {
            for j in 0..alpha {
                let coef = T::AW[ky][i] * T::AW[kx][j];
                if coef != 0.0 {
                    let sum = &sums[(i * alpha + j) * plane..][..plane];
                    for (o, s) in out.iter_mut().zip(sum) {
                        *o += coef * *s;
                    }
                }
            }
        }
    }
}

/// One chunk of the kernel gradient: images `image0..image0 + images`, whose
/// per-point sums `Vᵀ E` go to `sums` (`cin x cout` per point).
struct GradTask<'a> {
    plan: &'a Plan,
    shape: &'a ConvShape,
    x: &'a [f32],
    dy: &'a [f32],
    level: SimdLevel,
    image0: usize,
    images: usize,
    sums: &'a mut [f32],
    /// A block's transformed patches, then its transformed `dy` tiles.
    buf: &'a mut [f32],
    block: usize,
    result: Result<()>,
}

impl SimdBody for GradTask<'_> {
    #[inline(always)]
    fn run(&mut self) {
        // SAFETY: the level is one the CPU supports (`backward_kernel_at`
        // checked it).
        self.result = unsafe { dispatch(self.level, self.plan.m, self) };
    }
}

impl Blocks for GradTask<'_> {
    /// Block by block: patches and `dy` tiles transformed, then at each point
    /// the block's `Vᵀ E` added to the sums (the first block overwrites them).
    #[inline(always)]
    unsafe fn run_blocks<V: Vector, T: Tiling, const A: usize, const M: usize>(
        &mut self,
    ) -> Result<()> {
        let (cin, cout, block) = (self.shape.in_channels, self.shape.out_channels, self.block);
        let points = A * A;
        let tiles = self.images * self.plan.tiles_per_image();
        let (v, e) = self.buf.split_at_mut(block * points * cin);
        let mut partial = [[0.0; LANES]; MAX_ALPHA * MAX_ALPHA];
        for first in (0..tiles).step_by(block) {
            let n = block.min(tiles - first);
            for q in 0..n {
                let at = (self.image0, first + q);
                // SAFETY (both calls): the CPU supports `V`'s set (the contract).
                unsafe {
                    input_tile::<V, T, A>(
                        self.plan,
                        self.shape,
                        self.x,
                        at,
                        (v, block, q),
                        &mut partial,
                    );
                    dy_tile::<V, T, A, M>(
                        self.plan,
                        self.shape,
                        self.dy,
                        at,
                        (e, block, q),
                        &mut partial,
                    );
                }
            }
            let beta = if first == 0 { 0.0 } else { 1.0 };
            for p in 0..points {
                let a = MatRef::row_major(&v[p * block * cin..][..n * cin], n, cin)?.t();
                let b = MatRef::row_major(&e[p * block * cout..][..n * cout], n, cout)?;
                let c =
                    MatMut::row_major(&mut self.sums[p * cin * cout..][..cin * cout], cin, cout)?;
                gemm::sgemm(1.0, a, b, beta, c, &Epilogue::default())?;
            }
        }
        Ok(())
    }
}

/// `C x Cᵀ` for one block of channels of a `K x K` tile `x` and an `A x K`
/// matrix `C`: `half[b][i] = Σ_a C[i][a] x[a][b]`, then `y[i][j] = Σ_b C[j][b]
/// half[b][i]` into `out(i*A + j, y)`. `x(a, b)` is None for a pixel that reads
/// as zero. The patches' transform `Bᵀ d B` (`K = A`) and `dy`'s `Gd e Gdᵀ` (`K =
/// m`).
///
/// # Safety
/// The CPU supports `V`'s instruction set.
#[inline(always)]
unsafe fn transform_square<'s, V: Vector, const K: usize, const A: usize>(
    c: &[[f32; MAX_ALPHA]; MAX_ALPHA],
    x: impl Fn(usize, usize) -> Option<&'s Lanes>,
    mut out: impl FnMut(usize, V),
) {
    // SAFETY: forwarded.
    unsafe {
        // Every element is written before it is read; initialising them would
        // cost a memset per call (the array does not live in registers).
        let mut half = [[MaybeUninit::<V>::uninit(); A]; K];
        for (b, half_col) in half.iter_mut().enumerate() {
            let mut col = [None; K];
            for (a, v) in col.iter_mut().enumerate() {
                *v = x(a, b).map(|s| V::load(s));
            }
            for (i, h) in half_col.iter_mut().enumerate() {
                h.write(combine(&c[i], &col));
            }
        }
        for i in 0..A {
            let mut row = [None; K];
            for (b, r) in row.iter_mut().enumerate() {
                // SAFETY: written for every b and i above.
                *r = Some(half[b][i].assume_init());
            }
            for j in 0..A {
                out(i * A + j, combine(&c[j], &row));
            }
        }
    }
}

/// Transforms `dy`'s tile `tile` (counted from image `image0`'s first) into row
/// `q` of the block `e` at each point (`block` rows of `cout` floats per point),
/// `LANES` channels at a time; `partial` holds the last channels when fewer
/// than a block remain.
///
/// # Safety
/// The CPU supports `V`'s instruction set.
#[inline(always)]
unsafe fn dy_tile<V: Vector, T: Tiling, const A: usize, const M: usize>(
    plan: &Plan,
    shape: &ConvShape,
    dy: &[f32],
    (image0, tile): (usize, usize),
    (e, block, q): (&mut [f32], usize, usize),
    partial: &mut [Lanes; MAX_ALPHA * MAX_ALPHA],
) {
    let (w, cout) = (&shape.window, shape.out_channels);
    let per_image = plan.tiles_per_image();
    let image = image0 + tile / per_image;
    let (ty, tx) = (tile % per_image / plan.tiles[1], tile % plan.tiles[1]);
    let (oh, ow) = (w.output[1], w.output[2]);
    // Where each pixel (a, b) of the tile starts in `dy`, or None past the output.
    let mut start = [[None; M]; M];
    for (a, row) in start.iter_mut().enumerate() {
        let oy = Some(ty * M + a).filter(|&oy| oy < oh);
        for (b, s) in row.iter_mut().enumerate() {
            let ox = Some(tx * M + b).filter(|&ox| ox < ow);
            *s = oy
                .zip(ox)
                .map(|(oy, ox)| ((image * oh + oy) * ow + ox) * cout);
        }
    }
    // SAFETY: the contract.
    unsafe { transform_to_points::<V, M, A>(&T::GD, (dy, &start, cout), (e, block, q), partial) };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The matrices of `F(m, 3)`: `bt` (alpha x alpha), `at` (m x alpha), `g`
    /// (alpha x 3).
    /// Toom-Cook matrices in f32 from f64: `bt` (alpha x alpha), `at` (out x
    /// alpha), `g` (alpha x filter).
    struct Transform {
        alpha: usize,
        bt: Vec<Vec<f32>>,
        at: Vec<Vec<f32>>,
        g: Vec<Vec<f32>>,
    }

    /// `M⁻¹` of the leading `n x n` block, by Gauss-Jordan elimination with partial
    /// pivoting (the matrices are small Vandermonde ones, well away from singular).
    fn invert(mut a: [[f64; MAX_ALPHA]; MAX_ALPHA], n: usize) -> [[f64; MAX_ALPHA]; MAX_ALPHA] {
        let mut inv = [[0.0; MAX_ALPHA]; MAX_ALPHA];
        for (i, row) in inv.iter_mut().enumerate().take(n) {
            row[i] = 1.0;
        }
        for col in 0..n {
            let pivot = (col..n)
                .max_by(|&p, &q| a[p][col].abs().total_cmp(&a[q][col].abs()))
                .unwrap_or(col);
            a.swap(col, pivot);
            inv.swap(col, pivot);
            let d = a[col][col];
            for j in 0..n {
                a[col][j] /= d;
                inv[col][j] /= d;
            }
            for r in 0..n {
                if r != col && a[r][col] != 0.0 {
                    let f = a[r][col];
                    for j in 0..n {
                        a[r][j] -= f * a[col][j];
                        inv[r][j] -= f * inv[col][j];
                    }
                }
            }
        }
        inv
    }

    impl Transform {
        /// `F(out, filter)` at the finite `points` (`out + filter - 2` of them)
        /// and infinity.
        ///
        /// One dimension: the correlation `y_i = Σ_k g_k d_{i+k}` (`out` outputs,
        /// `filter` taps) is the transpose of the polynomial product `s = u g`
        /// (`u` of `out` coefficients), which Toom-Cook computes as
        /// `s = C [(E_filter g) ⊙ (E_out u)]`, `E_n` evaluating a polynomial of `n`
        /// coefficients at the points (infinity takes the leading coefficient) and
        /// `C` the inverse of `E_alpha`. Transposed: `y = E_outᵀ [(E_filter g) ⊙
        /// (Cᵀ d)]`, so `Aᵀ = E_outᵀ`, `G = E_filter` and `Bᵀ = Cᵀ`; each row of
        /// `Bᵀ` is scaled so its smallest coefficient is ±1, the inverse scale
        /// moved into `G`'s row.
        fn new(out: usize, filter: usize, points: &[f64]) -> Self {
            let alpha = out + filter - 1;
            assert!(alpha <= MAX_ALPHA && points.len() == alpha - 1);
            let eval = |j: usize, t: usize, n: usize| -> f64 {
                if j == alpha - 1 {
                    f64::from(u8::from(t == n - 1))
                } else {
                    points[j].powi(t as i32)
                }
            };
            let mut e = [[0.0; MAX_ALPHA]; MAX_ALPHA];
            for (j, row) in e.iter_mut().enumerate().take(alpha) {
                for (t, v) in row.iter_mut().enumerate().take(alpha) {
                    *v = eval(j, t, alpha);
                }
            }
            let c = invert(e, alpha);
            let (mut bt, mut g) = (Vec::new(), Vec::new());
            for j in 0..alpha {
                let mut row: Vec<f64> = (0..alpha).map(|t| c[t][j]).collect();
                let scale = row
                    .iter()
                    .filter(|v| v.abs() > 1e-12)
                    .map(|v| v.abs())
                    .fold(f64::INFINITY, f64::min);
                for v in row.iter_mut() {
                    *v /= scale;
                    if (*v - v.round()).abs() < 1e-9 {
                        *v = v.round();
                    }
                }
                bt.push(row.iter().map(|&v| v as f32).collect());
                g.push(
                    (0..filter)
                        .map(|k| (eval(j, k, filter) * scale) as f32)
                        .collect(),
                );
            }
            let at = (0..out)
                .map(|i| (0..alpha).map(|j| eval(j, i, out) as f32).collect())
                .collect();
            Transform { alpha, bt, at, g }
        }

        /// `F(m, 3)` for `m` in 2..=4, at the points the constants are built from.
        fn of(m: usize) -> Transform {
            Transform::new(m, R, points(m))
        }
    }

    /// The points of the tile size `m`.
    fn points(m: usize) -> &'static [f64] {
        match m {
            2 => &[0.0, 1.0, -1.0],
            3 => &[0.0, 1.0, -1.0, 2.0],
            _ => &[0.0, 1.0, -1.0, 0.5, -2.0],
        }
    }

    /// Whether the leading `rows.len() x cols` block of `constant` is `rows` and
    /// the rest zeros.
    fn same<const N: usize>(constant: &[[f32; N]], rows: &[Vec<f32>]) -> bool {
        constant.iter().enumerate().all(|(i, row)| {
            row.iter()
                .enumerate()
                .all(|(j, &v)| v == rows.get(i).and_then(|r| r.get(j)).copied().unwrap_or(0.0))
        })
    }

    use crate::conv;
    use crate::pool::tests::values;
    use crate::window::{Padding, Window};

    /// The constant matrices are the ones built from the points: `F(m, 3)` for
    /// the forward pass, `F(3, m)` (the same `Bᵀ`) for the kernel gradient.
    #[test]
    fn constant_matrices_are_the_derived_ones() {
        fn check<T: Tiling>(m: usize) {
            let forward = Transform::of(m);
            let grad = Transform::new(R, m, points(m));
            assert_eq!(T::M, m);
            assert!(same(&T::BT, &forward.bt), "m = {m}: Bᵀ");
            assert!(same(&T::BT, &grad.bt), "m = {m}: Bᵀ of the gradient");
            assert!(same(&T::AT, &forward.at), "m = {m}: Aᵀ");
            assert!(same(&T::G, &forward.g), "m = {m}: G");
            assert!(same(&T::AW, &grad.at), "m = {m}: Aw");
            assert!(same(&T::GD, &grad.g), "m = {m}: Gd");
        }
        check::<F2>(2);
        check::<F3>(3);
        check::<F4>(4);
    }

    /// The 1-D identity `y_i = Σ_k g_k d_{i+k}` in f64 from the f32 matrices.
    #[test]
    fn transforms_compute_the_correlation() {
        for m in 2..=MAX_M {
            let tr = Transform::of(m);
            let alpha = tr.alpha;
            let d: Vec<f64> = (0..alpha).map(|i| (i as f64 * 0.37 + 0.1).sin()).collect();
            let g = [0.3, -1.1, 0.7];
            let bd: Vec<f64> = (0..alpha)
                .map(|j| (0..alpha).map(|a| f64::from(tr.bt[j][a]) * d[a]).sum())
                .collect();
            let gg: Vec<f64> = (0..alpha)
                .map(|j| (0..R).map(|k| f64::from(tr.g[j][k]) * g[k]).sum())
                .collect();
            for i in 0..m {
                let got: f64 = (0..alpha)
                    .map(|j| f64::from(tr.at[i][j]) * gg[j] * bd[j])
                    .sum();
                let want: f64 = (0..R).map(|k| g[k] * d[i + k]).sum();
                assert!(
                    (got - want).abs() < 1e-6,
                    "m = {m}, y[{i}] = {got}, want {want}"
                );
            }
        }
    }

    /// Every tile size at every SIMD level this CPU supports against the direct
    /// convolution in f64, forward and kernel gradient, over image sizes that leave partial tiles, both
    /// paddings and channel counts around the transforms' 16 lanes.
    #[test]
    fn every_tile_size_matches_direct() {
        for m in 2..=MAX_M {
            for (batch, h, wd, cin, cout, padding) in [
                (1, 3, 3, 16, 16, Padding::Valid),
                (2, 5, 7, 17, 33, Padding::Same),
                (1, 9, 9, 64, 64, Padding::Same),
                (3, 11, 6, 32, 20, Padding::Valid),
                (1, 1, 1, 16, 16, Padding::Same),
                (2, 1, 13, 24, 16, Padding::Same),
                (1, 30, 30, 32, 64, Padding::Valid),
            ] {
                let window =
                    Window::new("test", &[h, wd], &[3, 3], &[1, 1], &[1, 1], padding).unwrap();
                let shape = ConvShape::new("test", batch, window, cin, cout, 1).unwrap();
                let x = values(shape.input_len(), 1);
                let k = values(shape.kernel_len(), 2);
                let bias = values(cout, 3);
                let mut want = vec![0.0; shape.output_len()];
                conv::direct_forward(&shape, &x, &k, Some(&bias), &mut want).unwrap();
                let ep = Epilogue {
                    bias: Some(&bias),
                    activation: None,
                };
                let plan = Plan::with_m(&shape, m);
                for level in cpu::supported_levels() {
                    let mut got = vec![f32::NAN; shape.output_len()];
                    forward_at(level, &plan, &shape, &x, &k, &ep, &mut got).unwrap();
                    let tol = 4.0 * f32::EPSILON * (9 * cin + 1) as f32;
                    let worst = got
                        .iter()
                        .zip(&want)
                        .map(|(g, w)| (g - w).abs())
                        .fold(0.0f32, f32::max);
                    assert!(
                        worst <= tol,
                        "{}: m = {m}, {batch}x{h}x{wd}x{cin} -> {cout} {padding:?}: error {worst} > {tol}",
                        level.name()
                    );
                    let mut got = vec![f32::NAN; shape.kernel_len()];
                    backward_kernel_at(level, &plan, &shape, &x, &want, &mut got).unwrap();
                    let mut reference = vec![0.0; shape.kernel_len()];
                    conv::direct_backward_kernel(&shape, &x, &want, &mut reference).unwrap();
                    // dy = the forward output, of magnitude up to ~|sum of 9 cin terms|.
                    let scale = want.iter().fold(1.0f32, |m, v| m.max(v.abs()));
                    let tol = 4.0 * f32::EPSILON * (shape.rows() + 1) as f32 * scale;
                    let worst = got
                        .iter()
                        .zip(&reference)
                        .map(|(g, w)| (g - w).abs())
                        .fold(0.0f32, f32::max);
                    assert!(
                        worst <= tol,
                        "{}: kernel gradient, m = {m}, {batch}x{h}x{wd}x{cin} -> {cout} {padding:?}: error {worst} > {tol}",
                        level.name()
                    );
                }
            }
        }
    }

    /// The shapes the tile size is picked for, and those that keep the direct
    /// product.
    #[test]
    fn plans_pick_the_tile_that_fits() {
        let plan = |h: usize, cin: usize, cout: usize, padding: Padding, stride: usize| {
            let window = Window::new(
                "test",
                &[h, h],
                &[3, 3],
                &[stride, stride],
                &[1, 1],
                padding,
            )
            .unwrap();
            let shape = ConvShape::new("test", 2, window, cin, cout, 1).unwrap();
            Plan::for_shape(&shape).map(|p| p.m)
        };
        assert_eq!(plan(9, 64, 64, Padding::Same, 1), Some(3));
        assert_eq!(plan(30, 32, 64, Padding::Valid, 1), Some(4));
        assert_eq!(plan(30, 3, 64, Padding::Valid, 1), None);
        assert_eq!(plan(30, 64, 64, Padding::Valid, 2), None);
        assert_eq!(plan(3, 64, 64, Padding::Valid, 1), None);
    }
}
