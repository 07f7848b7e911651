//! SIMD level detection: decided once, cached, overridable for tests and bug reports.

use std::sync::OnceLock;

/// Environment variable that forces a SIMD level (`scalar`, `avx2` or `avx512`).
pub const SIMD_ENV: &str = "PYFUNCNET_SIMD";

/// The instruction sets a kernel family can be specialised for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SimdLevel {
    /// Portable Rust, also the reference the SIMD kernels are tested against.
    Scalar,
    /// x86-64 AVX2 with FMA3.
    Avx2Fma,
    /// x86-64 AVX-512 (foundation), with AVX2 and FMA3 for the shared helpers.
    Avx512,
}

impl SimdLevel {
    /// The name used by `PYFUNCNET_SIMD` and `build_info()`.
    pub fn name(self) -> &'static str {
        match self {
            SimdLevel::Scalar => "scalar",
            SimdLevel::Avx2Fma => "avx2",
            SimdLevel::Avx512 => "avx512",
        }
    }

    /// Parses a `PYFUNCNET_SIMD` value.
    pub fn from_name(name: &str) -> Option<SimdLevel> {
        match name.trim().to_ascii_lowercase().as_str() {
            "scalar" => Some(SimdLevel::Scalar),
            "avx2" | "avx2fma" | "avx2_fma" => Some(SimdLevel::Avx2Fma),
            "avx512" | "avx512f" | "avx-512" => Some(SimdLevel::Avx512),
            _ => None,
        }
    }

    /// Whether this CPU can execute kernels of this level.
    pub fn is_supported(self) -> bool {
        match self {
            SimdLevel::Scalar => true,
            SimdLevel::Avx2Fma => avx2_fma_supported(),
            SimdLevel::Avx512 => avx512_supported(),
        }
    }
}

#[cfg(target_arch = "x86_64")]
fn avx2_fma_supported() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}

#[cfg(not(target_arch = "x86_64"))]
fn avx2_fma_supported() -> bool {
    false
}

/// The AVX-512 kernels use AVX-512F only (zmm FMAs, masked loads and stores, lane
/// shuffles), plus the AVX2+FMA helpers they share with the `avx2` level. The OS
/// must also save the zmm state, which `is_x86_feature_detected!` checks.
#[cfg(target_arch = "x86_64")]
fn avx512_supported() -> bool {
    avx2_fma_supported() && std::arch::is_x86_feature_detected!("avx512f")
}

#[cfg(not(target_arch = "x86_64"))]
fn avx512_supported() -> bool {
    false
}

/// Every level this CPU supports, best last. Tests iterate over it.
pub fn supported_levels() -> Vec<SimdLevel> {
    [SimdLevel::Scalar, SimdLevel::Avx2Fma, SimdLevel::Avx512]
        .into_iter()
        .filter(|l| l.is_supported())
        .collect()
}

/// The best level this CPU supports.
pub fn detected() -> SimdLevel {
    *supported_levels().last().unwrap_or(&SimdLevel::Scalar)
}

/// The level kernels use: `PYFUNCNET_SIMD` if it names a supported level, else the
/// detected one. Read once per process.
pub fn active() -> SimdLevel {
    static ACTIVE: OnceLock<SimdLevel> = OnceLock::new();
    *ACTIVE.get_or_init(|| {
        std::env::var(SIMD_ENV)
            .ok()
            .and_then(|v| SimdLevel::from_name(&v))
            .filter(|l| l.is_supported())
            .unwrap_or_else(detected)
    })
}

/// A loop body to be compiled for the instruction set it runs on (see [`run_at`]).
/// Implementations mark `run` `#[inline(always)]`.
pub trait SimdBody {
    fn run(&mut self);
}

/// Runs `body` inside a function compiled with `level`'s target features, so an
/// inlined body's loops become AVX2 or AVX-512 code; a level this CPU does not
/// support runs the portable build. The compiler never fuses a multiply and an
/// add on its own, so a body of plain float operations gives the same bits at
/// every level.
pub fn run_at<K: SimdBody>(level: SimdLevel, body: &mut K) {
    match level {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU supports the features the wrapper is compiled with.
        SimdLevel::Avx512 if avx512_supported() => unsafe { run_avx512(body) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        SimdLevel::Avx2Fma if avx2_fma_supported() => unsafe { run_avx2(body) },
        _ => body.run(),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn run_avx2<K: SimdBody>(body: &mut K) {
    body.run()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn run_avx512<K: SimdBody>(body: &mut K) {
    body.run()
}

/// Asks the CPU to start loading `data` into its mid-level cache (L2 on x86-64)
/// ahead of use; a hint only, which never faults. For data read in many short
/// strided pieces (a recurrent step's rows, the rows a gather picks), which the
/// hardware prefetchers cannot follow.
#[inline(always)]
pub fn prefetch<T>(data: &[T]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T1};
        const LINE_BYTES: usize = 64;
        // Every line `data` touches, from the one holding its first element to
        // the one holding its last (a plain loop: an iterator chain over the
        // elements cost more than the prefetches).
        let Some(last) = data.len().checked_sub(1) else {
            return;
        };
        let base = data.as_ptr().cast::<i8>();
        let start = base as usize;
        // Offsets from `base` of the first and the last line.
        let first = -((start % LINE_BYTES) as isize);
        let end = ((start + last * std::mem::size_of::<T>()) & !(LINE_BYTES - 1)) as isize
            - start as isize;
        let mut line = first;
        while line <= end {
            // SAFETY: a prefetch neither reads nor writes memory architecturally
            // and never faults (`wrapping_offset` makes no claim either); every
            // address is in a line `data` touches.
            unsafe { _mm_prefetch::<_MM_HINT_T1>(base.wrapping_offset(line)) };
            line += LINE_BYTES as isize;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = data;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalar_is_always_supported_and_names_round_trip() {
        assert!(supported_levels().contains(&SimdLevel::Scalar));
        for level in supported_levels() {
            assert_eq!(SimdLevel::from_name(level.name()), Some(level));
        }
        assert!(active().is_supported());
    }
}
