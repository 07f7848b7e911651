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

/// Declares each slot's per-thread buffer and high-water mark (the longest any
/// thread's buffer of that slot has grown) from one list, from which [`SLOTS`] and
/// the exhaustive match of [`key`] also follow: a new slot cannot miss either.
macro_rules! slot_buffers {
    ($($slot:ident => $buf:ident, $mark:ident;)+) => {
        thread_local! {
            $(static $buf: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };)+
        }
        $(static $mark: AtomicUsize = AtomicUsize::new(0);)+
        /// Every slot, for [`keep_up_with_other_threads`].
        const SLOTS: &[Slot] = &[$(Slot::$slot),+];
        /// This thread's buffer of `slot`, and the slot's high-water mark.
        fn key(slot: Slot) -> (&'static LocalKey<RefCell<Vec<f32>>>, &'static AtomicUsize) {
            match slot {
                $(Slot::$slot => (&$buf, &$mark),)+
            }
        }
    };
}

slot_buffers! {
    B => BUF_B, MARK_B;
    A => BUF_A, MARK_A;
    SharedA => BUF_SHARED_A, MARK_SHARED_A;
    Columns => BUF_COLUMNS, MARK_COLUMNS;
    Partials => BUF_PARTIALS, MARK_PARTIALS;
    FlippedKernel => BUF_FLIPPED_KERNEL, MARK_FLIPPED_KERNEL;
    ZeroRow => BUF_ZERO_ROW, MARK_ZERO_ROW;
    PackedKernel => BUF_PACKED_KERNEL, MARK_PACKED_KERNEL;
    RecurrentShared => BUF_RECURRENT_SHARED, MARK_RECURRENT_SHARED;
    RecurrentStep => BUF_RECURRENT_STEP, MARK_RECURRENT_STEP;
    RecurrentKernel => BUF_RECURRENT_KERNEL, MARK_RECURRENT_KERNEL;
    DistinctRows => BUF_DISTINCT_ROWS, MARK_DISTINCT_ROWS;
    WinogradKernel => BUF_WINOGRAD_KERNEL, MARK_WINOGRAD_KERNEL;
}

/// The index buffer's high-water mark (see [`with_index_scratch`]).
static MARK_INDICES: AtomicUsize = AtomicUsize::new(0);
/// The row-position table's high-water mark (see [`with_row_positions`]).
static MARK_ROW_POSITIONS: AtomicUsize = AtomicUsize::new(0);
/// How many times a high-water mark has risen.
static RISES: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// [`RISES`] when this thread last kept up with the marks.
    static RISES_SEEN: Cell<usize> = const { Cell::new(0) };
}

/// Records that a buffer whose mark is `mark` has grown to `len`.
fn raise_high_water(mark: &AtomicUsize, len: usize) {
    if mark.fetch_max(len, Ordering::Relaxed) < len {
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
    for &slot in SLOTS {
        let (buffer, mark) = key(slot);
        grow_to_mark(buffer, mark, 0.0);
    }
    grow_to_mark(&BUF_INDICES, &MARK_INDICES, 0);
    grow_to_mark(&ROW_POSITIONS, &MARK_ROW_POSITIONS, NO_POSITION);
}

/// Grows this thread's `buffer` to `mark`, the new entries `fill`.
fn grow_to_mark<T: Copy>(buffer: &'static LocalKey<RefCell<Vec<T>>>, mark: &AtomicUsize, fill: T) {
    let mark = mark.load(Ordering::Relaxed);
    buffer.with(|cell| {
        let mut buf = cell.borrow_mut();
        if buf.len() < mark {
            buf.resize(mark, fill);
        }
    });
}

/// Runs `f` with the first `len` entries of this thread's `buffer`, grown (the new
/// entries `fill`, `mark` raised) when shorter. A nested use finds the buffer lent
/// out and gets a fresh one; the longer of the two is kept.
fn lend<T: Copy, R>(
    buffer: &'static LocalKey<RefCell<Vec<T>>>,
    mark: &AtomicUsize,
    len: usize,
    fill: T,
    f: impl FnOnce(&mut [T]) -> R,
) -> R {
    let mut buf = buffer.with(|cell| cell.take());
    if buf.len() < len {
        buf.resize(len, fill);
        raise_high_water(mark, len);
    }
    let result = f(&mut buf[..len]);
    buffer.with(|cell| {
        let mut kept = cell.borrow_mut();
        if kept.capacity() < buf.capacity() {
            *kept = buf;
        }
    });
    result
}

/// Floats every per-thread buffer holds at least once used: enough for the packed
/// blocks of the shapes a training step meets, so a buffer is allocated once per
/// thread rather than grown a little whenever a thread first meets a bigger block.
const MIN_FLOATS: usize = 1 << 17;

/// Runs `f` with a 64-byte aligned scratch slice of `len` floats.
///
/// The contents are unspecified (left over from earlier uses); `f` must write
/// before it reads.
pub(crate) fn with_scratch<R>(slot: Slot, len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    if len == 0 {
        // Nothing to lend: leave the slot (and the allocator) alone.
        return f(&mut []);
    }
    let (buffer, mark) = key(slot);
    let mut buf = buffer.with(|cell| cell.take());
    let needed = len + ALIGN_FLOATS;
    if buf.len() < needed {
        buf.resize(needed.max(MIN_FLOATS), 0.0);
        raise_high_water(mark, buf.len());
    }
    let misalign = (buf.as_ptr() as usize % ALIGN_BYTES) / std::mem::size_of::<f32>();
    let offset = (ALIGN_FLOATS - misalign) % ALIGN_FLOATS;
    let result = f(&mut buf[offset..offset + len]);
    buffer.with(|cell| {
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
    lend(&BUF_INDICES, &MARK_INDICES, len, 0, f)
}

/// What every entry of a row-position table holds between uses.
pub(crate) const NO_POSITION: u32 = u32::MAX;

thread_local! {
    static ROW_POSITIONS: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with this thread's table of `len` row positions (a lookup's map from a
/// table row to its place among a batch's distinct rows), every entry
/// [`NO_POSITION`] on entry; `f` must leave every entry so, so that a use costs the
/// rows it touched, not the table's length. Kept up with other threads like the
/// scratch buffers: which thread runs a lookup changes from step to step.
pub(crate) fn with_row_positions<R>(len: usize, f: impl FnOnce(&mut [u32]) -> R) -> R {
    lend(&ROW_POSITIONS, &MARK_ROW_POSITIONS, len, NO_POSITION, f)
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
            let held = || {
                key(Slot::WinogradKernel)
                    .0
                    .with(|c| c.borrow().as_ptr() as usize)
            };
            keep_up_with_other_threads();
            let kept = key(Slot::WinogradKernel).0.with(|c| c.borrow().len());
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

    #[test]
    fn a_thread_keeps_up_with_the_row_positions_other_threads_grew() {
        // After the first thread's use the mark is at least this, whatever other tests
        // running alongside have grown.
        let len = 1 << 16;
        std::thread::spawn(move || {
            with_row_positions(len, |table| {
                assert!(table.iter().all(|&p| p == NO_POSITION));
                table[7] = 3;
                table[7] = NO_POSITION;
            })
        })
        .join()
        .unwrap();
        std::thread::spawn(move || {
            let held = || ROW_POSITIONS.with(|c| (c.borrow().as_ptr() as usize, c.borrow().len()));
            keep_up_with_other_threads();
            let (before, kept) = held();
            assert!(kept >= len, "kept {kept} positions");
            // The use finds the table grown ahead, every entry empty: no allocation.
            let lent = with_row_positions(len, |table| {
                assert!(table.iter().all(|&p| p == NO_POSITION));
                table.as_ptr() as usize
            });
            assert_eq!((lent, held().0), (before, before));
        })
        .join()
        .unwrap();
    }
}
