//! The elementwise part of one recurrent step, for the rows of one task: gate
//! nonlinearities and state updates forward, their fused derivatives backward.
//!
//! Each kernel is a struct holding the slices of one step and an
//! `#[inline(always)]` [`SimdBody::run`]; [`crate::cpu::run_at`] calls it through a
//! wrapper compiled for the active instruction set, so the loops over units (with the
//! branch-free [`crate::vmath`] functions) become AVX2 or AVX-512 code. Rows are
//! strided (`row_stride` apart in the `(batch, time, width)` buffers); a row whose
//! mask is 0 keeps its state and is skipped.

use crate::cpu::SimdBody;
use crate::unary::Unary;
use crate::vmath;

/// An activation evaluated in a cell, with its derivative from its output.
pub(crate) trait Act: Copy {
    fn f(self, x: f32) -> f32;
    /// `f'(x)` from `y = f(x)`.
    fn d(self, y: f32) -> f32;
}

/// The logistic function; with fused multiply-adds when `FMA` (for kernels
/// compiled with FMA).
#[derive(Clone, Copy)]
pub(crate) struct Sigmoid<const FMA: bool>;
/// The hyperbolic tangent; with fused multiply-adds when `FMA`.
#[derive(Clone, Copy)]
pub(crate) struct Tanh<const FMA: bool>;
/// Any activation whose derivative follows from its output (checked by the
/// caller), through the unary kernels' scalar formulas.
#[derive(Clone, Copy)]
pub(crate) struct Other(pub Unary);

impl<const FMA: bool> Act for Sigmoid<FMA> {
    #[inline(always)]
    fn f(self, x: f32) -> f32 {
        vmath::sigmoid_with::<FMA>(x)
    }
    #[inline(always)]
    fn d(self, y: f32) -> f32 {
        y * (1.0 - y)
    }
}

impl<const FMA: bool> Act for Tanh<FMA> {
    #[inline(always)]
    fn f(self, x: f32) -> f32 {
        vmath::tanh_with::<FMA>(x)
    }
    #[inline(always)]
    fn d(self, y: f32) -> f32 {
        1.0 - y * y
    }
}

impl Act for Other {
    #[inline(always)]
    fn f(self, x: f32) -> f32 {
        self.0.apply_scalar(x)
    }
    #[inline(always)]
    fn d(self, y: f32) -> f32 {
        self.0.derivative_scalar(0.0, y)
    }
}

/// Where one step's rows lie: row `b` of a `(rows, time, width)` buffer starts at
/// `b * stride(width) + t * width`.
#[derive(Clone, Copy)]
pub(crate) struct Rows<'m> {
    pub count: usize,
    pub steps: usize,
    pub units: usize,
    /// The input time step of this step (the output step is separate).
    pub t: usize,
    /// `mask[b * steps + t]`, 0 or 1; `None`: no row is masked.
    pub mask: Option<&'m [f32]>,
}

impl Rows<'_> {
    #[inline(always)]
    pub fn active(&self, b: usize) -> bool {
        self.mask.is_none_or(|m| m[b * self.steps + self.t] != 0.0)
    }
    /// Range of row `b`'s entry at this step in a buffer of `width` per step.
    #[inline(always)]
    pub fn at(&self, b: usize, width: usize) -> std::ops::Range<usize> {
        let start = (b * self.steps + self.t) * width;
        start..start + width
    }
    /// Prefetches row `b`'s entry of time index `next` (if any) in `buf`, a
    /// `(rows, steps, width)` buffer: a step touches each row's entry once,
    /// hundreds of strided pieces the hardware prefetchers do not follow. The
    /// loops over a step's rows call it for the next step as they reach each
    /// row, spreading the prefetches over the step; issued all at once, a step's
    /// thousands of them stall on full miss queues.
    #[inline(always)]
    pub fn prefetch(&self, next: Option<usize>, b: usize, buf: &[f32], width: usize) {
        if let Some(t) = next {
            crate::cpu::prefetch(&buf[Rows { t, ..*self }.at(b, width)]);
        }
    }
    /// [`Rows::prefetch`] for every row at once, for the few small buffers no
    /// loop over the step's rows reads.
    #[inline(always)]
    pub fn prefetch_all(&self, next: Option<usize>, buf: &[f32], width: usize) {
        for b in 0..self.count {
            self.prefetch(next, b, buf, width);
        }
    }
}

/// The input projection `x W + b` one step reads: row `b`'s entry at time `rows.t`
/// of a `(rows, rows.steps, width)` buffer, the whole sequence's (computed before
/// the recurrence) or, with one step, one holding only this step's.
#[derive(Clone, Copy)]
pub(crate) struct StepInput<'a> {
    pub data: &'a [f32],
    pub rows: Rows<'a>,
    /// The next step's time index in `data`, whose entries are prefetched row by
    /// row; `None` when `data` holds this step only.
    pub next: Option<usize>,
}

impl<'a> StepInput<'a> {
    #[inline(always)]
    pub fn row(&self, b: usize, width: usize) -> &'a [f32] {
        &self.data[self.rows.at(b, width)]
    }
    #[inline(always)]
    pub fn prefetch(&self, b: usize, width: usize) {
        self.rows.prefetch(self.next, b, self.data, width);
    }
}

/// Splits `x` into `N` consecutive slices of `len`.
#[inline(always)]
fn parts<const N: usize>(x: &mut [f32], len: usize) -> [&mut [f32]; N] {
    let mut rest = &mut x[..N * len];
    std::array::from_fn(|_| {
        let (head, tail) = std::mem::take(&mut rest).split_at_mut(len);
        rest = tail;
        head
    })
}

/// Units per block of [`blocks`]: one AVX-512 vector.
const LANES: usize = 16;

/// `dst = src` for the short rows of a step (a library call per row of a few
/// dozen floats costs more than the copy): whole vectors, then the rest.
#[inline(always)]
pub(crate) fn copy_units(dst: &mut [f32], src: &[f32]) {
    let mut d = dst.chunks_exact_mut(LANES);
    let mut s = src.chunks_exact(LANES);
    for (a, b) in (&mut d).zip(&mut s) {
        a.copy_from_slice(b);
    }
    for (a, b) in d.into_remainder().iter_mut().zip(s.remainder()) {
        *a = *b;
    }
}

/// Runs `$body` over `$len` units in blocks of [`LANES`]: each block of the
/// `$ins` and `$outs` slices (all `$len` long) is copied into local arrays `$x`
/// and `$v`, `$body` computes on them, and the `$v` arrays are copied back.
///
/// The slices of one kernel are often parts of one buffer, which the compiler
/// cannot tell apart; on local arrays it can, so the body's fixed-length loops
/// become SIMD code. A last partial block is zero-padded (every cell function is
/// finite at 0) and only its valid part is stored. A macro rather than a
/// function taking a closure: the body must be compiled inside the caller, for
/// the caller's instruction set.
macro_rules! blocks {
    ($len:expr, [$($ins:expr),*], [$($outs:expr),+], |$x:ident, $v:ident| $body:block) => {{
        let ins: [&[f32]; blocks!(@count $($ins),*)] = [$($ins),*];
        let mut outs: [&mut [f32]; blocks!(@count $($outs),+)] = [$($outs),+];
        let len: usize = $len;
        // Whole blocks: constant-length copies (vector moves, no library call).
        let mut j = 0;
        while j + LANES <= len {
            let mut $x = [[0.0f32; LANES]; blocks!(@count $($ins),*)];
            let mut $v = [[0.0f32; LANES]; blocks!(@count $($outs),+)];
            for (dst, src) in $x.iter_mut().zip(&ins) {
                *dst = *<&[f32; LANES]>::try_from(&src[j..j + LANES]).expect("a whole block");
            }
            for (dst, src) in $v.iter_mut().zip(&outs) {
                *dst = *<&[f32; LANES]>::try_from(&src[j..j + LANES]).expect("a whole block");
            }
            let _ = &mut $x;
            $body
            for (dst, src) in outs.iter_mut().zip(&$v) {
                *<&mut [f32; LANES]>::try_from(&mut dst[j..j + LANES]).expect("a whole block") = *src;
            }
            j += LANES;
        }
        if j < len {
            let n = len - j;
            let mut $x = [[0.0f32; LANES]; blocks!(@count $($ins),*)];
            let mut $v = [[0.0f32; LANES]; blocks!(@count $($outs),+)];
            for (dst, src) in $x.iter_mut().zip(&ins) {
                dst[..n].copy_from_slice(&src[j..]);
            }
            for (dst, src) in $v.iter_mut().zip(&outs) {
                dst[..n].copy_from_slice(&src[j..]);
            }
            let _ = &mut $x;
            $body
            for (dst, src) in outs.iter_mut().zip(&$v) {
                dst[j..].copy_from_slice(&src[..n]);
            }
        }
    }};
    (@count) => { 0 };
    (@count $head:expr $(, $tail:expr)*) => { 1 + blocks!(@count $($tail),*) };
}

// ---------------------------------------------------------------------------
// LSTM. Workspace per (row, time): [i, f, g, o, c_prev]; on entry to the
// forward kernel [0, 4u) holds the recurrent part `h_prev R` of the
// pre-activations, to which the kernel adds the input projection. act(c) is not
// saved: the backward pass recomputes it from the gates and c_prev, which keeps
// the workspace (memory and traffic) a sixth smaller for one activation per unit.

pub(crate) struct LstmForward<'a, RA, A> {
    pub rows: Rows<'a>,
    pub ra: RA,
    pub a: A,
    /// The input time step of the next step, if any: each row's entries of it
    /// in `ws` (and in `xp`, see [`StepInput`]) are prefetched as the row is
    /// computed.
    pub next: Option<usize>,
    pub xp: StepInput<'a>,
    pub ws: &'a mut [f32],
    /// The previous states `(rows, steps, units)`: the kernel saves each row's
    /// state at this step before updating it.
    pub h_prev: &'a mut [f32],
    pub h: &'a mut [f32],
    pub c: &'a mut [f32],
}

impl<RA: Act, A: Act> SimdBody for LstmForward<'_, RA, A> {
    #[inline(always)]
    fn run(&mut self) {
        let (u, ra, a) = (self.rows.units, self.ra, self.a);
        for b in 0..self.rows.count {
            self.xp.prefetch(b, 4 * u);
            self.rows.prefetch(self.next, b, self.ws, 5 * u);
            // The states the backward pass starts this step from, saved here
            // rather than by a pass of copies before the step (their stores
            // miss the cache either way; the copies also read the states again).
            let [i, f, g, o, c_prev] = parts::<5>(&mut self.ws[self.rows.at(b, 5 * u)], u);
            let h_prev = &mut self.h_prev[self.rows.at(b, u)];
            let h = &mut self.h[b * u..][..u];
            let c = &mut self.c[b * u..][..u];
            if !self.rows.active(b) {
                copy_units(c_prev, c);
                copy_units(h_prev, h);
                continue;
            }
            let x = self.xp.row(b, 4 * u);
            blocks!(
                u,
                [&x[..u], &x[u..2 * u], &x[2 * u..3 * u], &x[3 * u..4 * u]],
                [i, f, g, o, c, h, c_prev, h_prev],
                |x, v| {
                    v[6] = v[4];
                    v[7] = v[5];
                    // One activation per loop: a loop evaluating all five at once
                    // keeps more values live than there are vector registers.
                    for gate in [0, 1, 3] {
                        for l in 0..LANES {
                            v[gate][l] = ra.f(x[gate][l] + v[gate][l]);
                        }
                    }
                    for l in 0..LANES {
                        v[2][l] = a.f(x[2][l] + v[2][l]);
                    }
                    for l in 0..LANES {
                        v[4][l] = cell_update(v[0][l], v[1][l], v[2][l], v[4][l]);
                    }
                }
            );
        }
        // The new states in a second pass: each cell's `o * act(c)` waits on its
        // gates and `c`, so a block that computed it right after them would wait
        // out that chain; here every block's work is independent.
        for b in 0..self.rows.count {
            if !self.rows.active(b) {
                continue;
            }
            let o = &self.ws[self.rows.at(b, 5 * u)][3 * u..4 * u];
            let h = &mut self.h[b * u..][..u];
            let c = &self.c[b * u..][..u];
            blocks!(u, [o, c], [h], |x, v| {
                for l in 0..LANES {
                    v[0][l] = x[0][l] * a.f(x[1][l]);
                }
            });
        }
    }
}

/// The new cell state `f * c_prev + i * g`, one expression for both passes so
/// that the backward recomputes exactly the forward's value.
#[inline(always)]
fn cell_update(i: f32, f: f32, g: f32, c_prev: f32) -> f32 {
    f * c_prev + i * g
}

/// Backward of one LSTM step: from `dh` (the state gradient, this step's output
/// gradient included) and the running `dc`, writes the pre-activation gradients
/// `dz` and leaves `dc <- dc * f` and `dh <- 0` for the recurrent GEMM to
/// accumulate into. Masked rows keep `dh` and `dc` (their `dz` is zeroed).
pub(crate) struct LstmBackward<'a, RA, A> {
    pub rows: Rows<'a>,
    pub ra: RA,
    pub a: A,
    /// The input time step of the next step (backward in time), if any: each
    /// row's entries of it in `ws` and `dz` are prefetched as the row is computed.
    pub next: Option<usize>,
    pub ws: &'a [f32],
    pub dz: &'a mut [f32],
    pub dh: &'a mut [f32],
    pub dc: &'a mut [f32],
}

impl<RA: Act, A: Act> SimdBody for LstmBackward<'_, RA, A> {
    #[inline(always)]
    fn run(&mut self) {
        let (u, ra, a) = (self.rows.units, self.ra, self.a);
        for b in 0..self.rows.count {
            self.rows.prefetch(self.next, b, self.ws, 5 * u);
            self.rows.prefetch(self.next, b, self.dz, 4 * u);
            let dz = &mut self.dz[self.rows.at(b, 4 * u)];
            if !self.rows.active(b) {
                dz.fill(0.0);
                continue;
            }
            let w = &self.ws[self.rows.at(b, 5 * u)];
            let [di, df, dg, do_] = parts::<4>(dz, u);
            let dh = &mut self.dh[b * u..][..u];
            let dc = &mut self.dc[b * u..][..u];
            blocks!(
                u,
                [
                    &w[..u],
                    &w[u..2 * u],
                    &w[2 * u..3 * u],
                    &w[3 * u..4 * u],
                    &w[4 * u..5 * u]
                ],
                [di, df, dg, do_, dh, dc],
                |w, v| {
                    // act(c), recomputed in a loop of its own (as the forward's
                    // activations) before the derivatives use it.
                    let mut ac = [0.0f32; LANES];
                    for l in 0..LANES {
                        ac[l] = a.f(cell_update(w[0][l], w[1][l], w[2][l], w[4][l]));
                    }
                    for l in 0..LANES {
                        let (i, f, g, o, cp) = (w[0][l], w[1][l], w[2][l], w[3][l], w[4][l]);
                        let dhv = v[4][l];
                        let dcv = v[5][l] + dhv * o * a.d(ac[l]);
                        v[3][l] = dhv * ac[l] * ra.d(o);
                        v[0][l] = dcv * g * ra.d(i);
                        v[1][l] = dcv * cp * ra.d(f);
                        v[2][l] = dcv * i * a.d(g);
                        v[5][l] = dcv * f;
                        v[4][l] = 0.0;
                    }
                }
            );
        }
    }
}

// ---------------------------------------------------------------------------
// GRU. Workspace per (row, time): [z, r, hh, x] where x is the recurrent
// projection of the candidate, `h_prev R_h + b_h` (reset_after), or `r * h_prev`
// (reset before). `xp` holds the input projections `[x_z, x_r, x_h]`.

/// reset_after: on entry `ws[u..4u]` holds `h_prev R + b_rec` (written by the
/// GEMM one slot to the right of where z, r and the candidate end up).
pub(crate) struct GruAfterForward<'a, RA, A> {
    pub rows: Rows<'a>,
    pub ra: RA,
    pub a: A,
    /// The input time step of the next step, if any: each row's entries of it
    /// in `ws` (and in `xp`) are prefetched as the row is computed.
    pub next: Option<usize>,
    pub xp: StepInput<'a>,
    pub ws: &'a mut [f32],
    /// The previous states `(rows, steps, units)`, saved as in the LSTM's.
    pub h_prev: &'a mut [f32],
    pub h: &'a mut [f32],
}

impl<RA: Act, A: Act> SimdBody for GruAfterForward<'_, RA, A> {
    #[inline(always)]
    fn run(&mut self) {
        let (u, ra, a) = (self.rows.units, self.ra, self.a);
        for b in 0..self.rows.count {
            self.xp.prefetch(b, 3 * u);
            self.rows.prefetch(self.next, b, self.ws, 4 * u);
            let h_prev = &mut self.h_prev[self.rows.at(b, u)];
            let h = &mut self.h[b * u..][..u];
            if !self.rows.active(b) {
                copy_units(h_prev, h);
                continue;
            }
            let x = self.xp.row(b, 3 * u);
            let [z, r, hh, rh] = parts::<4>(&mut self.ws[self.rows.at(b, 4 * u)], u);
            blocks!(
                u,
                [&x[..u], &x[u..2 * u], &x[2 * u..3 * u], &*rh],
                [z, r, hh, h, h_prev],
                |x, v| {
                    v[4] = v[3];
                    // On entry the r and hh slots hold the recurrent parts of z
                    // and r, and rh that of the candidate; each slot is read
                    // before it is overwritten. One activation per loop, as in
                    // the LSTM's.
                    for l in 0..LANES {
                        v[0][l] = ra.f(x[0][l] + v[1][l]);
                    }
                    for l in 0..LANES {
                        v[1][l] = ra.f(x[1][l] + v[2][l]);
                    }
                    for l in 0..LANES {
                        v[2][l] = a.f(x[2][l] + v[1][l] * x[3][l]);
                    }
                    for l in 0..LANES {
                        v[3][l] = v[0][l] * v[3][l] + (1.0 - v[0][l]) * v[2][l];
                    }
                }
            );
        }
    }
}

/// Backward of a reset_after step: writes `dxp = [da_z, da_r, da_h]` and the
/// gradient of the recurrent projection `drec = [da_z, da_r, da_h * r]`, and
/// leaves `dh <- dh * z` for the GEMM `dh += drec Rᵀ`.
pub(crate) struct GruAfterBackward<'a, RA, A> {
    pub rows: Rows<'a>,
    pub ra: RA,
    pub a: A,
    /// The input time step of the next step (backward in time), if any: each
    /// row's entries of it in `ws`, `hprev`, `dxp` and `drec` are prefetched as
    /// the row is computed.
    pub next: Option<usize>,
    pub ws: &'a [f32],
    pub hprev: &'a [f32],
    pub dxp: &'a mut [f32],
    pub drec: &'a mut [f32],
    pub dh: &'a mut [f32],
}

impl<RA: Act, A: Act> SimdBody for GruAfterBackward<'_, RA, A> {
    #[inline(always)]
    fn run(&mut self) {
        let (u, ra, a) = (self.rows.units, self.ra, self.a);
        for b in 0..self.rows.count {
            self.rows.prefetch(self.next, b, self.ws, 4 * u);
            self.rows.prefetch(self.next, b, self.hprev, u);
            self.rows.prefetch(self.next, b, self.dxp, 3 * u);
            self.rows.prefetch(self.next, b, self.drec, 3 * u);
            let dx = &mut self.dxp[self.rows.at(b, 3 * u)];
            let dr = &mut self.drec[self.rows.at(b, 3 * u)];
            if !self.rows.active(b) {
                dx.fill(0.0);
                dr.fill(0.0);
                continue;
            }
            let w = &self.ws[self.rows.at(b, 4 * u)];
            let hp = &self.hprev[self.rows.at(b, u)];
            let [dxz, dxr, dxh] = parts::<3>(dx, u);
            let [drz, drr, drh] = parts::<3>(dr, u);
            let dh = &mut self.dh[b * u..][..u];
            blocks!(
                u,
                [
                    &w[..u],
                    &w[u..2 * u],
                    &w[2 * u..3 * u],
                    &w[3 * u..4 * u],
                    hp
                ],
                [dxz, dxr, dxh, drz, drr, drh, dh],
                |w, v| {
                    for l in 0..LANES {
                        let (z, r, hh, rh, hp) = (w[0][l], w[1][l], w[2][l], w[3][l], w[4][l]);
                        let dhv = v[6][l];
                        let daz = dhv * (hp - hh) * ra.d(z);
                        let dah = dhv * (1.0 - z) * a.d(hh);
                        let dar = dah * rh * ra.d(r);
                        (v[0][l], v[1][l], v[2][l]) = (daz, dar, dah);
                        (v[3][l], v[4][l], v[5][l]) = (daz, dar, dah * r);
                        v[6][l] = dhv * z;
                    }
                }
            );
        }
    }
}

/// Reset before, first half: on entry `ws[u..3u]` holds `h_prev R_zr` (one slot
/// to the right of z and r); writes z, r and `r * h_prev` (0 for masked rows,
/// which the weight gradient reads).
pub(crate) struct GruBeforeGates<'a, RA> {
    pub rows: Rows<'a>,
    pub ra: RA,
    /// The input time step of the next step, if any: each row's entries of it
    /// in `ws` (and in `xp`) are prefetched as the row is computed (this is the
    /// step's first kernel).
    pub next: Option<usize>,
    pub xp: StepInput<'a>,
    pub ws: &'a mut [f32],
    /// The previous states `(rows, steps, units)`, saved as in the LSTM's.
    pub h_prev: &'a mut [f32],
    pub h: &'a [f32],
}

impl<RA: Act> SimdBody for GruBeforeGates<'_, RA> {
    #[inline(always)]
    fn run(&mut self) {
        let (u, ra) = (self.rows.units, self.ra);
        for b in 0..self.rows.count {
            self.xp.prefetch(b, 3 * u);
            self.rows.prefetch(self.next, b, self.ws, 4 * u);
            let [z, r, hh, rh] = parts::<4>(&mut self.ws[self.rows.at(b, 4 * u)], u);
            let h_prev = &mut self.h_prev[self.rows.at(b, u)];
            let h = &self.h[b * u..][..u];
            if !self.rows.active(b) {
                copy_units(h_prev, h);
                rh.fill(0.0);
                continue;
            }
            let x = self.xp.row(b, 3 * u);
            blocks!(
                u,
                [&x[..u], &x[u..2 * u], &*hh, h],
                [z, r, rh, h_prev],
                |x, v| {
                    v[3] = x[3];
                    for l in 0..LANES {
                        // The r and hh slots hold the recurrent parts of z and r.
                        let zv = ra.f(x[0][l] + v[1][l]);
                        let rv = ra.f(x[1][l] + x[2][l]);
                        (v[0][l], v[1][l]) = (zv, rv);
                        v[2][l] = rv * x[3][l];
                    }
                }
            );
        }
    }
}

/// Reset before, second half: on entry `ws[2u..3u]` holds `(r * h_prev) R_h`.
pub(crate) struct GruBeforeUpdate<'a, A> {
    pub rows: Rows<'a>,
    pub a: A,
    pub xp: StepInput<'a>,
    pub ws: &'a mut [f32],
    pub h: &'a mut [f32],
}

impl<A: Act> SimdBody for GruBeforeUpdate<'_, A> {
    #[inline(always)]
    fn run(&mut self) {
        let (u, a) = (self.rows.units, self.a);
        for b in 0..self.rows.count {
            if !self.rows.active(b) {
                continue;
            }
            let xh = &self.xp.row(b, 3 * u)[2 * u..3 * u];
            let [z, _, hh, _] = parts::<4>(&mut self.ws[self.rows.at(b, 4 * u)], u);
            let h = &mut self.h[b * u..][..u];
            blocks!(u, [xh, &*z], [hh, h], |x, v| {
                for l in 0..LANES {
                    let hv = a.f(x[0][l] + v[0][l]);
                    v[0][l] = hv;
                    v[1][l] = x[1][l] * v[1][l] + (1.0 - x[1][l]) * hv;
                }
            });
        }
    }
}

/// Reset before, backward first half: writes `da_z` and `da_h` into `dxp` and
/// leaves `dh <- dh * z`; the caller then computes `g = da_h R_hᵀ`.
pub(crate) struct GruBeforeBackwardUpdate<'a, RA, A> {
    pub rows: Rows<'a>,
    pub ra: RA,
    pub a: A,
    /// The input time step of the next step (backward in time), if any: each
    /// row's entries of it in `ws`, `hprev` and `dxp` are prefetched as the row
    /// is computed (this is the step's first kernel).
    pub next: Option<usize>,
    pub ws: &'a [f32],
    pub hprev: &'a [f32],
    pub dxp: &'a mut [f32],
    pub dh: &'a mut [f32],
}

impl<RA: Act, A: Act> SimdBody for GruBeforeBackwardUpdate<'_, RA, A> {
    #[inline(always)]
    fn run(&mut self) {
        let (u, ra, a) = (self.rows.units, self.ra, self.a);
        for b in 0..self.rows.count {
            self.rows.prefetch(self.next, b, self.ws, 4 * u);
            self.rows.prefetch(self.next, b, self.hprev, u);
            self.rows.prefetch(self.next, b, self.dxp, 3 * u);
            let dx = &mut self.dxp[self.rows.at(b, 3 * u)];
            if !self.rows.active(b) {
                dx.fill(0.0);
                continue;
            }
            let w = &self.ws[self.rows.at(b, 4 * u)];
            let hp = &self.hprev[self.rows.at(b, u)];
            let [dxz, _, dxh] = parts::<3>(dx, u);
            let dh = &mut self.dh[b * u..][..u];
            blocks!(
                u,
                [&w[..u], &w[2 * u..3 * u], hp],
                [dxz, dxh, dh],
                |w, v| {
                    for l in 0..LANES {
                        let (z, hh, hp) = (w[0][l], w[1][l], w[2][l]);
                        let dhv = v[2][l];
                        v[0][l] = dhv * (hp - hh) * ra.d(z);
                        v[1][l] = dhv * (1.0 - z) * a.d(hh);
                        v[2][l] = dhv * z;
                    }
                }
            );
        }
    }
}

/// Reset before, backward second half: from `g = da_h R_hᵀ` (per row, `u`
/// wide), writes `da_r` and adds `g * r` to `dh`.
pub(crate) struct GruBeforeBackwardReset<'a, RA> {
    pub rows: Rows<'a>,
    pub ra: RA,
    pub ws: &'a [f32],
    pub hprev: &'a [f32],
    pub g: &'a [f32],
    pub dxp: &'a mut [f32],
    pub dh: &'a mut [f32],
}

impl<RA: Act> SimdBody for GruBeforeBackwardReset<'_, RA> {
    #[inline(always)]
    fn run(&mut self) {
        let (u, ra) = (self.rows.units, self.ra);
        for b in 0..self.rows.count {
            if !self.rows.active(b) {
                continue;
            }
            let r = &self.ws[self.rows.at(b, 4 * u)][u..2 * u];
            let hp = &self.hprev[self.rows.at(b, u)];
            let g = &self.g[b * u..][..u];
            let dxr = &mut self.dxp[self.rows.at(b, 3 * u)][u..2 * u];
            let dh = &mut self.dh[b * u..][..u];
            blocks!(u, [r, hp, g], [dxr, dh], |w, v| {
                for l in 0..LANES {
                    let (r, hp, g) = (w[0][l], w[1][l], w[2][l]);
                    v[0][l] = g * hp * ra.d(r);
                    v[1][l] += g * r;
                }
            });
        }
    }
}

// ---------------------------------------------------------------------------
// SimpleRNN. Workspace per (row, time): the new state; on entry the
// pre-activation.

pub(crate) struct SimpleForward<'a, A> {
    pub rows: Rows<'a>,
    pub a: A,
    pub ws: &'a mut [f32],
    /// The previous states `(rows, steps, units)`, saved as in the LSTM's.
    pub h_prev: &'a mut [f32],
    pub h: &'a mut [f32],
}

impl<A: Act> SimdBody for SimpleForward<'_, A> {
    #[inline(always)]
    fn run(&mut self) {
        let (u, a) = (self.rows.units, self.a);
        for b in 0..self.rows.count {
            let h_prev = &mut self.h_prev[self.rows.at(b, u)];
            let h = &mut self.h[b * u..][..u];
            if !self.rows.active(b) {
                copy_units(h_prev, h);
                continue;
            }
            let w = &mut self.ws[self.rows.at(b, u)];
            blocks!(u, [], [w, h, h_prev], |_x, v| {
                v[2] = v[1];
                for l in 0..LANES {
                    let y = a.f(v[0][l]);
                    (v[0][l], v[1][l]) = (y, y);
                }
            });
        }
    }
}

pub(crate) struct SimpleBackward<'a, A> {
    pub rows: Rows<'a>,
    pub a: A,
    /// The input time step of the next step (backward in time), if any: each
    /// row's entries of it in `ws` and `dz` are prefetched as the row is
    /// computed.
    pub next: Option<usize>,
    pub ws: &'a [f32],
    pub dz: &'a mut [f32],
    pub dh: &'a mut [f32],
}

impl<A: Act> SimdBody for SimpleBackward<'_, A> {
    #[inline(always)]
    fn run(&mut self) {
        let (u, a) = (self.rows.units, self.a);
        for b in 0..self.rows.count {
            self.rows.prefetch(self.next, b, self.ws, u);
            self.rows.prefetch(self.next, b, self.dz, u);
            let dz = &mut self.dz[self.rows.at(b, u)];
            if !self.rows.active(b) {
                dz.fill(0.0);
                continue;
            }
            let w = &self.ws[self.rows.at(b, u)];
            let dh = &mut self.dh[b * u..][..u];
            blocks!(u, [w], [dz, dh], |w, v| {
                for l in 0..LANES {
                    v[0][l] = v[1][l] * a.d(w[0][l]);
                    v[1][l] = 0.0;
                }
            });
        }
    }
}
