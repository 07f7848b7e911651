//! The elementwise part of one recurrent step, for the rows of one task: gate
//! nonlinearities and state updates forward, their fused derivatives backward.
//!
//! Each kernel is a struct holding the slices of one step and an
//! `#[inline(always)]` [`StepKernel::run`]; [`run`] calls it through a wrapper
//! compiled for the active instruction set, so the loops over units (with the
//! branch-free [`crate::vmath`] functions) become AVX2 or AVX-512 code. Rows are
//! strided (`row_stride` apart in the `(batch, time, width)` buffers); a row whose
//! mask is 0 keeps its state and is skipped.

use crate::cpu::SimdLevel;
use crate::unary::Unary;
use crate::vmath;

/// An activation evaluated in a cell, with its derivative from its output.
pub(crate) trait Act: Copy {
    fn f(self, x: f32) -> f32;
    /// `f'(x)` from `y = f(x)`.
    fn d(self, y: f32) -> f32;
}

#[derive(Clone, Copy)]
pub(crate) struct Sigmoid;
#[derive(Clone, Copy)]
pub(crate) struct Tanh;
/// Any activation whose derivative follows from its output (checked by the
/// caller), through the unary kernels' scalar formulas.
#[derive(Clone, Copy)]
pub(crate) struct Other(pub Unary);

impl Act for Sigmoid {
    #[inline(always)]
    fn f(self, x: f32) -> f32 {
        vmath::sigmoid(x)
    }
    #[inline(always)]
    fn d(self, y: f32) -> f32 {
        y * (1.0 - y)
    }
}

impl Act for Tanh {
    #[inline(always)]
    fn f(self, x: f32) -> f32 {
        vmath::tanh(x)
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

/// One step's elementwise work over a task's rows.
pub(crate) trait StepKernel {
    fn run(&mut self);
}

/// Runs `k` compiled for `level` (the caller checked that the CPU supports it).
pub(crate) fn run<K: StepKernel>(level: SimdLevel, k: &mut K) {
    match level {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `level` is the active level, which the CPU supports.
        SimdLevel::Avx512 => unsafe { run_avx512(k) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        SimdLevel::Avx2Fma => unsafe { run_avx2(k) },
        _ => k.run(),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn run_avx2<K: StepKernel>(k: &mut K) {
    k.run()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn run_avx512<K: StepKernel>(k: &mut K) {
    k.run()
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

// ---------------------------------------------------------------------------
// LSTM. Workspace per (row, time): [i, f, g, o, act(c), c_prev]; on entry to the
// forward kernel [0, 4u) holds the pre-activations.

pub(crate) struct LstmForward<'a, RA, A> {
    pub rows: Rows<'a>,
    pub ra: RA,
    pub a: A,
    pub ws: &'a mut [f32],
    pub h: &'a mut [f32],
    pub c: &'a mut [f32],
}

impl<RA: Act, A: Act> StepKernel for LstmForward<'_, RA, A> {
    #[inline(always)]
    fn run(&mut self) {
        let u = self.rows.units;
        for b in 0..self.rows.count {
            if !self.rows.active(b) {
                continue;
            }
            let [i, f, g, o, ac, _] = parts::<6>(&mut self.ws[self.rows.at(b, 6 * u)], u);
            let h = &mut self.h[b * u..(b + 1) * u];
            let c = &mut self.c[b * u..(b + 1) * u];
            for j in 0..u {
                let (iv, fv) = (self.ra.f(i[j]), self.ra.f(f[j]));
                let (gv, ov) = (self.a.f(g[j]), self.ra.f(o[j]));
                let cv = fv * c[j] + iv * gv;
                let acv = self.a.f(cv);
                (i[j], f[j], g[j], o[j], ac[j]) = (iv, fv, gv, ov, acv);
                c[j] = cv;
                h[j] = ov * acv;
            }
        }
    }
}

/// Backward of one LSTM step: from `dh` (state gradient plus this step's output
/// gradient, per row) and the running `dc`, writes the pre-activation gradients
/// `dz` and leaves `dc <- dc * f` and `dh <- 0` for the recurrent GEMM to
/// accumulate into. Masked rows are untouched (their `dz` is zeroed).
pub(crate) struct LstmBackward<'a, RA, A> {
    pub rows: Rows<'a>,
    pub ra: RA,
    pub a: A,
    pub ws: &'a [f32],
    pub dz: &'a mut [f32],
    pub dh: &'a mut [f32],
    pub dc: &'a mut [f32],
}

impl<RA: Act, A: Act> StepKernel for LstmBackward<'_, RA, A> {
    #[inline(always)]
    fn run(&mut self) {
        let u = self.rows.units;
        for b in 0..self.rows.count {
            let dz = &mut self.dz[self.rows.at(b, 4 * u)];
            if !self.rows.active(b) {
                dz.fill(0.0);
                continue;
            }
            let w = &self.ws[self.rows.at(b, 6 * u)];
            let (i, f, g, o, ac, cp) = (
                &w[..u],
                &w[u..2 * u],
                &w[2 * u..3 * u],
                &w[3 * u..4 * u],
                &w[4 * u..5 * u],
                &w[5 * u..],
            );
            let [di, df, dg, do_] = parts::<4>(dz, u);
            let dh = &mut self.dh[b * u..(b + 1) * u];
            let dc = &mut self.dc[b * u..(b + 1) * u];
            for j in 0..u {
                let dhv = dh[j];
                let dcv = dc[j] + dhv * o[j] * self.a.d(ac[j]);
                do_[j] = dhv * ac[j] * self.ra.d(o[j]);
                di[j] = dcv * g[j] * self.ra.d(i[j]);
                df[j] = dcv * cp[j] * self.ra.d(f[j]);
                dg[j] = dcv * i[j] * self.a.d(g[j]);
                dc[j] = dcv * f[j];
                dh[j] = 0.0;
            }
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
    pub xp: &'a [f32],
    pub ws: &'a mut [f32],
    pub h: &'a mut [f32],
}

impl<RA: Act, A: Act> StepKernel for GruAfterForward<'_, RA, A> {
    #[inline(always)]
    fn run(&mut self) {
        let u = self.rows.units;
        for b in 0..self.rows.count {
            if !self.rows.active(b) {
                continue;
            }
            let x = &self.xp[self.rows.at(b, 3 * u)];
            let [z, r, hh, rh] = parts::<4>(&mut self.ws[self.rows.at(b, 4 * u)], u);
            let h = &mut self.h[b * u..(b + 1) * u];
            for j in 0..u {
                // On entry the r, hh and rh slots hold the recurrent parts of
                // z, r and the candidate (each read before its slot is written).
                let zv = self.ra.f(x[j] + r[j]);
                let rv = self.ra.f(x[u + j] + hh[j]);
                let hv = self.a.f(x[2 * u + j] + rv * rh[j]);
                (z[j], r[j], hh[j]) = (zv, rv, hv);
                h[j] = zv * h[j] + (1.0 - zv) * hv;
            }
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
    pub ws: &'a [f32],
    pub hprev: &'a [f32],
    pub dxp: &'a mut [f32],
    pub drec: &'a mut [f32],
    pub dh: &'a mut [f32],
}

impl<RA: Act, A: Act> StepKernel for GruAfterBackward<'_, RA, A> {
    #[inline(always)]
    fn run(&mut self) {
        let u = self.rows.units;
        for b in 0..self.rows.count {
            let dx = &mut self.dxp[self.rows.at(b, 3 * u)];
            let dr = &mut self.drec[self.rows.at(b, 3 * u)];
            if !self.rows.active(b) {
                dx.fill(0.0);
                dr.fill(0.0);
                continue;
            }
            let w = &self.ws[self.rows.at(b, 4 * u)];
            let (z, r, hh, rh) = (&w[..u], &w[u..2 * u], &w[2 * u..3 * u], &w[3 * u..]);
            let hp = &self.hprev[self.rows.at(b, u)];
            let [dxz, dxr, dxh] = parts::<3>(dx, u);
            let [drz, drr, drh] = parts::<3>(dr, u);
            let dh = &mut self.dh[b * u..(b + 1) * u];
            for j in 0..u {
                let dhv = dh[j];
                let daz = dhv * (hp[j] - hh[j]) * self.ra.d(z[j]);
                let dah = dhv * (1.0 - z[j]) * self.a.d(hh[j]);
                let dar = dah * rh[j] * self.ra.d(r[j]);
                (dxz[j], dxr[j], dxh[j]) = (daz, dar, dah);
                (drz[j], drr[j], drh[j]) = (daz, dar, dah * r[j]);
                dh[j] = dhv * z[j];
            }
        }
    }
}

/// Reset before, first half: on entry `ws[u..3u]` holds `h_prev R_zr` (one slot
/// to the right of z and r); writes z,
/// r and `r * h_prev` (0 for masked rows, which the weight gradient reads).
pub(crate) struct GruBeforeGates<'a, RA> {
    pub rows: Rows<'a>,
    pub ra: RA,
    pub xp: &'a [f32],
    pub ws: &'a mut [f32],
    pub h: &'a [f32],
}

impl<RA: Act> StepKernel for GruBeforeGates<'_, RA> {
    #[inline(always)]
    fn run(&mut self) {
        let u = self.rows.units;
        for b in 0..self.rows.count {
            let [z, r, hh, rh] = parts::<4>(&mut self.ws[self.rows.at(b, 4 * u)], u);
            if !self.rows.active(b) {
                rh.fill(0.0);
                continue;
            }
            let x = &self.xp[self.rows.at(b, 3 * u)];
            let h = &self.h[b * u..(b + 1) * u];
            for j in 0..u {
                // The r and hh slots hold the recurrent parts of z and r.
                let zv = self.ra.f(x[j] + r[j]);
                let rv = self.ra.f(x[u + j] + hh[j]);
                (z[j], r[j]) = (zv, rv);
                rh[j] = rv * h[j];
            }
        }
    }
}

/// Reset before, second half: on entry `ws[2u..3u]` holds `(r * h_prev) R_h`.
pub(crate) struct GruBeforeUpdate<'a, A> {
    pub rows: Rows<'a>,
    pub a: A,
    pub xp: &'a [f32],
    pub ws: &'a mut [f32],
    pub h: &'a mut [f32],
}

impl<A: Act> StepKernel for GruBeforeUpdate<'_, A> {
    #[inline(always)]
    fn run(&mut self) {
        let u = self.rows.units;
        for b in 0..self.rows.count {
            if !self.rows.active(b) {
                continue;
            }
            let x = &self.xp[self.rows.at(b, 3 * u)];
            let [z, _, hh, _] = parts::<4>(&mut self.ws[self.rows.at(b, 4 * u)], u);
            let h = &mut self.h[b * u..(b + 1) * u];
            for j in 0..u {
                let hv = self.a.f(x[2 * u + j] + hh[j]);
                hh[j] = hv;
                h[j] = z[j] * h[j] + (1.0 - z[j]) * hv;
            }
        }
    }
}

/// Reset before, backward first half: writes `da_z` and `da_h` into `dxp` and
/// leaves `dh <- dh * z`; the caller then computes `g = da_h R_hᵀ`.
pub(crate) struct GruBeforeBackwardUpdate<'a, RA, A> {
    pub rows: Rows<'a>,
    pub ra: RA,
    pub a: A,
    pub ws: &'a [f32],
    pub hprev: &'a [f32],
    pub dxp: &'a mut [f32],
    pub dh: &'a mut [f32],
}

impl<RA: Act, A: Act> StepKernel for GruBeforeBackwardUpdate<'_, RA, A> {
    #[inline(always)]
    fn run(&mut self) {
        let u = self.rows.units;
        for b in 0..self.rows.count {
            let dx = &mut self.dxp[self.rows.at(b, 3 * u)];
            if !self.rows.active(b) {
                dx.fill(0.0);
                continue;
            }
            let w = &self.ws[self.rows.at(b, 4 * u)];
            let (z, hh) = (&w[..u], &w[2 * u..3 * u]);
            let hp = &self.hprev[self.rows.at(b, u)];
            let [dxz, _, dxh] = parts::<3>(dx, u);
            let dh = &mut self.dh[b * u..(b + 1) * u];
            for j in 0..u {
                let dhv = dh[j];
                dxz[j] = dhv * (hp[j] - hh[j]) * self.ra.d(z[j]);
                dxh[j] = dhv * (1.0 - z[j]) * self.a.d(hh[j]);
                dh[j] = dhv * z[j];
            }
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

impl<RA: Act> StepKernel for GruBeforeBackwardReset<'_, RA> {
    #[inline(always)]
    fn run(&mut self) {
        let u = self.rows.units;
        for b in 0..self.rows.count {
            if !self.rows.active(b) {
                continue;
            }
            let r = &self.ws[self.rows.at(b, 4 * u)][u..2 * u];
            let hp = &self.hprev[self.rows.at(b, u)];
            let g = &self.g[b * u..(b + 1) * u];
            let dxr = &mut self.dxp[self.rows.at(b, 3 * u)][u..2 * u];
            let dh = &mut self.dh[b * u..(b + 1) * u];
            for j in 0..u {
                dxr[j] = g[j] * hp[j] * self.ra.d(r[j]);
                dh[j] += g[j] * r[j];
            }
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
    pub h: &'a mut [f32],
}

impl<A: Act> StepKernel for SimpleForward<'_, A> {
    #[inline(always)]
    fn run(&mut self) {
        let u = self.rows.units;
        for b in 0..self.rows.count {
            if !self.rows.active(b) {
                continue;
            }
            let w = &mut self.ws[self.rows.at(b, u)];
            let h = &mut self.h[b * u..(b + 1) * u];
            for j in 0..u {
                let v = self.a.f(w[j]);
                w[j] = v;
                h[j] = v;
            }
        }
    }
}

pub(crate) struct SimpleBackward<'a, A> {
    pub rows: Rows<'a>,
    pub a: A,
    pub ws: &'a [f32],
    pub dz: &'a mut [f32],
    pub dh: &'a mut [f32],
}

impl<A: Act> StepKernel for SimpleBackward<'_, A> {
    #[inline(always)]
    fn run(&mut self) {
        let u = self.rows.units;
        for b in 0..self.rows.count {
            let dz = &mut self.dz[self.rows.at(b, u)];
            if !self.rows.active(b) {
                dz.fill(0.0);
                continue;
            }
            let w = &self.ws[self.rows.at(b, u)];
            let dh = &mut self.dh[b * u..(b + 1) * u];
            for j in 0..u {
                dz[j] = dh[j] * self.a.d(w[j]);
                dh[j] = 0.0;
            }
        }
    }
}
