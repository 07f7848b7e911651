//! The floating-point mode of threads that run kernels: subnormal numbers are
//! flushed to zero (FTZ) and read as zero (DAZ).
//!
//! Training drives some values into the subnormal range (an RMSprop velocity that
//! accumulates the square of a 1e-20 gradient, say), and x86 cores take a
//! microcode assist of ~100 cycles for each such operand: a step of a small MLP
//! slowed threefold in a few hundred steps. TensorFlow and XLA run their CPU
//! kernels in this mode for the same reason. Only values below ~1.2e-38 change.
//! Every thread that runs kernels uses the same mode, so results do not depend on
//! the thread count.

/// Runs `f` with subnormals flushed on this thread, then restores the previous
/// mode (also when `f` panics), so the caller's own arithmetic (NumPy's, for a
/// Python thread) is left as it was.
pub fn with_subnormals_flushed<R>(f: impl FnOnce() -> R) -> R {
    let _restore = Restore(imp::flush());
    f()
}

/// Flushes subnormals on this thread for the rest of its life (pool workers).
pub fn flush_subnormals_on_this_thread() {
    imp::flush();
}

/// Puts the saved mode back when dropped.
struct Restore(imp::Mode);

impl Drop for Restore {
    fn drop(&mut self) {
        imp::restore(self.0);
    }
}

#[cfg(target_arch = "x86_64")]
mod imp {
    /// The MXCSR register.
    pub type Mode = u32;
    /// MXCSR bits: flush results to zero, treat subnormal inputs as zero.
    const FTZ: u32 = 1 << 15;
    const DAZ: u32 = 1 << 6;

    fn read() -> u32 {
        let mut csr = 0u32;
        // SAFETY: `stmxcsr` stores the 32-bit MXCSR into `csr`, a valid,
        // writable u32; SSE is part of x86-64.
        unsafe {
            std::arch::asm!("stmxcsr [{}]", in(reg) &mut csr, options(nostack, preserves_flags));
        }
        csr
    }

    fn write(csr: u32) {
        // SAFETY: `ldmxcsr` loads MXCSR from a valid u32 that came from `stmxcsr`
        // with only the FTZ/DAZ bits changed (no reserved bit is set, so no fault);
        // those bits change the results of subnormal operations only.
        unsafe {
            std::arch::asm!("ldmxcsr [{}]", in(reg) &csr, options(nostack, readonly, preserves_flags));
        }
    }

    /// Sets FTZ and DAZ; returns the previous mode.
    pub fn flush() -> Mode {
        let old = read();
        if old & (FTZ | DAZ) != FTZ | DAZ {
            write(old | FTZ | DAZ);
        }
        old
    }

    pub fn restore(old: Mode) {
        if read() != old {
            write(old);
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod imp {
    /// Other architectures keep their default mode (no kernel of theirs is tuned yet).
    pub type Mode = ();

    pub fn flush() -> Mode {}

    pub fn restore(_old: Mode) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Not inlined, so the compiler cannot evaluate it on the wrong side of a mode
    /// switch (it assumes the default mode and would move pure arithmetic freely).
    #[inline(never)]
    fn half(x: f32) -> f32 {
        std::hint::black_box(x) * std::hint::black_box(0.5f32)
    }

    #[test]
    fn subnormals_flush_inside_and_come_back_after() {
        let tiny = f32::MIN_POSITIVE;
        assert!(half(tiny) > 0.0, "the default mode keeps subnormals");
        let inside = with_subnormals_flushed(|| half(std::hint::black_box(tiny)));
        #[cfg(target_arch = "x86_64")]
        assert_eq!(inside, 0.0);
        #[cfg(not(target_arch = "x86_64"))]
        assert!(inside > 0.0);
        assert!(half(tiny) > 0.0, "the mode is restored afterwards");
    }
}
