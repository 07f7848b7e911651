//! Per-thread scratch buffers (GEMM packing, im2col tiles) that grow once and are
//! then reused.
//!
//! A buffer is moved out of its thread-local slot for the duration of a use and put
//! back afterwards. A nested use on the same thread (a pool worker that steals
//! another GEMM while waiting for its own tasks) finds the slot empty and allocates
//! a fresh buffer instead of panicking on a double borrow; the larger one is kept.

use std::cell::RefCell;
use std::thread::LocalKey;

/// Alignment of the slices handed out, in bytes (one cache line).
const ALIGN_BYTES: usize = 64;
const ALIGN_FLOATS: usize = ALIGN_BYTES / std::mem::size_of::<f32>();

/// Which per-thread buffer to use; one kernel call may hold one of each at a time.
#[derive(Clone, Copy)]
pub(crate) enum Slot {
    /// GEMM: packed B, shared by the tasks of one product (held by the calling
    /// thread), or one task's own panels of it.
    B,
    /// GEMM: packed A, or small remainders, private to one task.
    A,
    /// GEMM: all of A packed once and shared by the tasks (held by the calling thread).
    SharedA,
    /// Convolution: one task's tile of im2col columns (or of their gradient).
    Columns,
    /// Convolution and lookup-and-project: the per-chunk (per-block) partial weight
    /// gradients, held by the calling thread.
    Partials,
    /// Convolution: the flipped kernel of an input gradient, held by the calling thread.
    FlippedKernel,
    /// Gathered products: a row of zeros standing for the taps in the padding.
    ZeroRow,
    /// Convolution: the kernel packed once per call for every tile's GEMM, held by
    /// the calling thread.
    PackedKernel,
    /// Recurrent layers: the recurrent kernel transposed (and packed) for the
    /// backward steps and the whole-sequence gradients, held by the calling thread.
    RecurrentShared,
    /// Recurrent layers: one task's per-row temporaries.
    RecurrentStep,
    /// Recurrent layers: the recurrent kernel packed for the step GEMMs, held by
    /// the calling thread.
    RecurrentKernel,
    /// Winograd convolution: the kernel transformed once per call, or the kernel
    /// gradient's summed per-point products, held by the calling thread.
    WinogradKernel,
    /// Lookup-and-project backward: one task's block of summed gradient rows.
    DistinctRows,
}

thread_local! {
    static BUF_B: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    static BUF_A: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    static BUF_SHARED_A: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    static BUF_COLUMNS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    static BUF_PARTIALS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    static BUF_FLIPPED_KERNEL: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    static BUF_ZERO_ROW: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    static BUF_PACKED_KERNEL: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    static BUF_RECURRENT_SHARED: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    static BUF_RECURRENT_STEP: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    static BUF_RECURRENT_KERNEL: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    static BUF_DISTINCT_ROWS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    static BUF_WINOGRAD_KERNEL: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

fn key(slot: Slot) -> &'static LocalKey<RefCell<Vec<f32>>> {
    match slot {
        Slot::B => &BUF_B,
        Slot::A => &BUF_A,
        Slot::SharedA => &BUF_SHARED_A,
        Slot::Columns => &BUF_COLUMNS,
        Slot::Partials => &BUF_PARTIALS,
        Slot::FlippedKernel => &BUF_FLIPPED_KERNEL,
        Slot::ZeroRow => &BUF_ZERO_ROW,
        Slot::PackedKernel => &BUF_PACKED_KERNEL,
        Slot::RecurrentShared => &BUF_RECURRENT_SHARED,
        Slot::RecurrentStep => &BUF_RECURRENT_STEP,
        Slot::RecurrentKernel => &BUF_RECURRENT_KERNEL,
        Slot::DistinctRows => &BUF_DISTINCT_ROWS,
        Slot::WinogradKernel => &BUF_WINOGRAD_KERNEL,
    }
}

/// Floats every per-thread buffer holds at least once used: enough for the packed
/// blocks of the shapes a training step meets, so a buffer is allocated once per
/// thread rather than grown a little whenever a thread first meets a bigger block.
const MIN_FLOATS: usize = 1 << 17;

/// Allocates this thread's buffers at their minimum size. Pool workers call it when
/// they start, so a steady-state GEMM never allocates, whichever worker runs it.
pub(crate) fn reserve_thread_buffers() {
    for slot in [Slot::A, Slot::B] {
        key(slot).with(|cell| {
            let mut buf = cell.borrow_mut();
            if buf.len() < MIN_FLOATS {
                buf.resize(MIN_FLOATS, 0.0);
            }
        });
    }
}

/// Runs `f` with a 64-byte aligned scratch slice of `len` floats.
///
/// The contents are unspecified (left over from earlier uses); `f` must write
/// before it reads.
pub(crate) fn with_scratch<R>(slot: Slot, len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    if len == 0 {
        // Nothing to lend: leave the slot (and the allocator) alone.
        return f(&mut []);
    }
    let mut buf = key(slot).with(|cell| cell.take());
    let needed = len + ALIGN_FLOATS;
    if buf.len() < needed {
        buf.resize(needed.max(MIN_FLOATS), 0.0);
    }
    let misalign = (buf.as_ptr() as usize % ALIGN_BYTES) / std::mem::size_of::<f32>();
    let offset = (ALIGN_FLOATS - misalign) % ALIGN_FLOATS;
    let result = f(&mut buf[offset..offset + len]);
    key(slot).with(|cell| {
        let mut kept = cell.borrow_mut();
        if kept.capacity() < buf.capacity() {
            *kept = buf;
        }
    });
    result
}

thread_local! {
    static BUF_INDICES: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with this thread's scratch slice of `len` indices (for a kernel's
/// bookkeeping, such as the scatter-add's counting sort); contents unspecified.
/// Grows once and is then reused, like [`with_scratch`]; a nested use gets a
/// fresh buffer.
pub(crate) fn with_index_scratch<R>(len: usize, f: impl FnOnce(&mut [usize]) -> R) -> R {
    let mut buf = BUF_INDICES.with(|cell| cell.take());
    if buf.len() < len {
        buf.resize(len, 0);
    }
    let result = f(&mut buf[..len]);
    BUF_INDICES.with(|cell| {
        let mut kept = cell.borrow_mut();
        if kept.capacity() < buf.capacity() {
            *kept = buf;
        }
    });
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scratch_is_aligned_and_nesting_does_not_panic() {
        with_scratch(Slot::A, 100, |outer| {
            assert_eq!(outer.as_ptr() as usize % ALIGN_BYTES, 0);
            outer.fill(1.0);
            with_scratch(Slot::A, 10, |inner| {
                assert_eq!(inner.as_ptr() as usize % ALIGN_BYTES, 0);
                inner.fill(2.0);
            });
            assert!(outer.iter().all(|&x| x == 1.0));
        });
        // Steady state: the same buffer comes back.
        let p1 = with_scratch(Slot::B, 1000, |s| s.as_ptr() as usize);
        let p2 = with_scratch(Slot::B, 500, |s| s.as_ptr() as usize);
        assert_eq!(p1, p2);
        let q1 = with_index_scratch(1000, |s| s.as_ptr() as usize);
        let q2 = with_index_scratch(500, |s| {
            with_index_scratch(10, |inner| inner.fill(7));
            s.as_ptr() as usize
        });
        assert_eq!(q1, q2);
    }
}
