"""The shuffled batches of `fit`: rows gathered by the core's threads.

Reference: NumPy fancy indexing `a[idx]` of the same rows.
"""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyfuncnet import _core
from pyfuncnet.models import data as data_utils
from pyfuncnet.models.trainer import _ArrayBatches


@st.composite
def arrays_and_indices(draw):
    dtype = draw(st.sampled_from([np.float32, np.int32]))
    n = draw(st.integers(1, 70))
    trailing = tuple(draw(st.lists(st.integers(0, 9), max_size=3)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    a = (rng.standard_normal((n,) + trailing) * 100).astype(dtype)
    count = draw(st.integers(0, 2 * n))
    idx = rng.integers(0, n, size=count).astype(np.int32)
    return a, idx


@given(arrays_and_indices())
def test_take_rows_equals_numpy_fancy_indexing(case):
    a, idx = case
    got = data_utils.take_rows(a, idx)
    want = a[idx]
    assert got.dtype == a.dtype and got.shape == want.shape and got.flags.c_contiguous
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize(
    "a",
    [
        np.arange(60, dtype=np.float64).reshape(20, 3),
        np.arange(60, dtype=np.float32).reshape(3, 20).T,  # not C-contiguous
        np.arange(20) % 3 == 0,
    ],
    ids=["float64", "transposed", "bool"],
)
def test_take_rows_falls_back_to_numpy_for_other_arrays(a):
    idx = np.array([19, 0, 7, 7], np.int32)
    got = data_utils.take_rows(a, idx)
    assert got.flags.c_contiguous
    np.testing.assert_array_equal(got, a[idx])


def test_take_rows_rejects_bad_arguments_and_leaves_out_untouched():
    x = np.arange(12, dtype=np.float32).reshape(6, 2)
    out = np.full((3, 2), -1.0, np.float32)
    with pytest.raises(IndexError, match=r"index 6 at position 2 is out of range \[0, 6\)"):
        _core.take_rows(x, np.array([0, 5, 6], np.int32), out)
    with pytest.raises(IndexError, match="index -1 at position 0"):
        _core.take_rows(x, np.array([-1, 0, 1], np.int32), out)
    np.testing.assert_array_equal(out, -1.0)
    with pytest.raises(ValueError, match=r"out has shape \[3, 2\], expected \[2, 2\]"):
        _core.take_rows(x, np.array([0, 1], np.int32), out)
    with pytest.raises(TypeError, match="must both be float32 or both int32"):
        _core.take_rows(x, np.array([0, 1, 2], np.int32), out.astype(np.int32))
    with pytest.raises(ValueError, match="C-contiguous"):
        _core.take_rows(x, np.array([0, 1], np.int32), np.zeros((4, 2), np.float32)[::2])
    # An output that is the input, or read-only: an error, not a panic.
    square = np.arange(9, dtype=np.float32).reshape(3, 3)
    with pytest.raises(ValueError, match="out cannot be written"):
        _core.take_rows(square, np.array([2, 1, 0], np.int32), square)
    np.testing.assert_array_equal(square, np.arange(9).reshape(3, 3))
    frozen = np.full((3, 2), -1.0, np.float32)
    frozen.setflags(write=False)
    with pytest.raises(ValueError, match="out cannot be written"):
        _core.take_rows(x, np.array([0, 1, 2], np.int32), frozen)
    np.testing.assert_array_equal(frozen, -1.0)


def test_shuffled_epochs_feed_the_rows_of_a_permutation():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((50, 4, 3)).astype(np.float32)
    y = rng.integers(0, 5, size=50).astype(np.int32)
    sw = rng.random(50).astype(np.float32)
    feed = _ArrayBatches([x], [y], [sw], 50, 8, shuffle=True)
    feed.rng = np.random.default_rng(11)
    order = np.random.default_rng(11).permutation(50)
    seen = []
    for start, (bx, bys, bsws) in zip(range(0, 50, 8), feed.epoch()):
        idx = order[start : start + 8]
        np.testing.assert_array_equal(bx[0], x[idx])
        np.testing.assert_array_equal(bys[0], y[idx])
        np.testing.assert_array_equal(bsws[0], sw[idx])
        seen.extend(idx)
    assert sorted(seen) == list(range(50))
