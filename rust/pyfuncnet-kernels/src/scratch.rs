//! Per-thread scratch buffers (GEMM packing, im2col tiles) that grow once and are
//! then reused.
//!
//! A buffer is moved out of its thread-local slot for the duration of a use and put
//! back afterwards. A nested use on the same thread (a pool worker that steals
//! another GEMM while waiting for its own tasks) finds the slot empty and allocates
//! a fresh buffer instead of panicking on a double borrow; the larger one is kept.
//!
//! Which thread runs which piece of work changes from call to call, so a thread
//! may meet a larger use of a slot long after another thread grew its own: each
//! growth raises the slot's high-water mark, and [`keep_up_with_other_threads`]
//! grows this thread's buffers to the marks, at points where it holds none.

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::LocalKey;

/// Alignment of the slices handed out, in bytes (one cache line).
const ALIGN_BYTES: usize = 64;
const ALIGN_FLOATS: usize = ALIGN_BYTES / std::mem::size_of::<f32>();

/// Which per-thread buffer to use; one kernel call may hold one of each at a time.
#[derive(Clone, Copy)]
#[repr(usize)]
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

/// Every slot, for [`keep_up_with_other_threads`] (the assertion below fails when
/// a new last slot is left out).
const SLOTS: [Slot; 13] = [
    Slot::B,
    Slot::A,
    Slot::SharedA,
    Slot::Columns,
    Slot::Partials,
    Slot::FlippedKernel,
    Slot::ZeroRow,
    Slot::PackedKernel,
    Slot::RecurrentShared,
    Slot::RecurrentStep,
    Slot::RecurrentKernel,
    Slot::WinogradKernel,
    Slot::DistinctRows,
];
const _: () = assert!(Slot::DistinctRows as usize + 1 == SLOTS.len());

/// Per slot (by its `usize` value), then for the index buffer: the longest any
/// thread's buffer has grown.
static HIGH_WATER: [AtomicUsize; SLOTS.len() + 1] =
    [const { AtomicUsize::new(0) }; SLOTS.len() + 1];
/// Where [`HIGH_WATER`] keeps the index buffer's mark.
const INDICES: usize = SLOTS.len();
/// How many times a high-water mark has risen.
static RISES: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// [`RISES`] when this thread last kept up with the marks.
    static RISES_SEEN: Cell<usize> = const { Cell::new(0) };
}

/// Records that a buffer of mark `at` has grown to `len`.
fn raise_high_water(at: usize, len: usize) {
    if HIGH_WATER[at].fetch_max(len, Ordering::Relaxed) < len {
        RISES.fetch_add(1, Ordering::Release);
    }
}

/// Grows this thread's buffers to the longest any thread's have grown, so that a
/// steady state allocates nothing whichever thread meets which use; a load and a
/// compare when no mark has risen since its last call. Call it only where this
/// thread holds no scratch buffer (a held one is out of its slot).
pub(crate) fn keep_up_with_other_threads() {
    let rises = RISES.load(Ordering::Acquire);
    if RISES_SEEN.with(|seen| seen.replace(rises)) == rises {
        return;
    }
    for slot in SLOTS {
        let mark = HIGH_WATER[slot as usize].load(Ordering::Relaxed);
        key(slot).with(|cell| {
            let mut buf = cell.borrow_mut();
            if buf.len() < mark {
                buf.resize(mark, 0.0);
            }
        });
    }
    let mark = HIGH_WATER[INDICES].load(Ordering::Relaxed);
    BUF_INDICES.with(|cell| {
        let mut buf = cell.borrow_mut();
        if buf.len() < mark {
            buf.resize(mark, 0);
        }
    });
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
        raise_high_water(slot as usize, buf.len());
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
        raise_high_water(INDICES, len);
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
    fn a_thread_keeps_up_with_the_buffers_other_threads_grew() {
        let len = 3 * MIN_FLOATS;
        std::thread::spawn(move || with_scratch(Slot::WinogradKernel, len, |s| s.fill(1.0)))
            .join()
            .unwrap();
        std::thread::spawn(move || {
            let held = || key(Slot::WinogradKernel).with(|c| c.borrow().as_ptr() as usize);
            keep_up_with_other_threads();
            let kept = key(Slot::WinogradKernel).with(|c| c.borrow().len());
            assert!(kept >= len + ALIGN_FLOATS, "kept {kept} floats");
            // The use finds the buffer grown ahead: the same allocation, aligned.
            let before = held();
            let lent = with_scratch(Slot::WinogradKernel, len, |s| s.as_ptr() as usize);
            assert!(lent >= before && lent < before + ALIGN_BYTES);
            assert_eq!(held(), before);
        })
        .join()
        .unwrap();
    }

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
