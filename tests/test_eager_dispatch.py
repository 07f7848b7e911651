"""Eager dispatch: ops run on the calling thread, write straight into new numpy
arrays, take their attributes as a dict, and reuse built ops; none of that may
change a result, an error, or the arrays a caller gets back."""

import json
import threading

import numpy as np
import pytest

from pyfuncnet import GradientTape, Variable, _core, config, errors, ops


def _rng(seed=0):
    return np.random.default_rng(seed)


def _bits(a):
    a = np.asarray(a)
    return a.view(np.uint32) if a.dtype == np.float32 else a


# ----------------------------------------------------------------------------
# The arrays an eager op returns


@pytest.mark.parametrize(
    "call,dtype,shape",
    [
        (lambda x: ops.add(x, x), np.float32, (3, 4)),
        (lambda x: ops.matmul(x, x.T.copy()), np.float32, (3, 3)),
        (lambda x: ops.sum(x), np.float32, ()),
        (lambda x: ops.argmax(x, axis=1), np.int32, (3,)),
        (lambda x: ops.greater(x, 0.5), np.bool_, (3, 4)),
        (lambda x: ops.cast(x, "int32"), np.int32, (3, 4)),
        (lambda x: ops.one_hot(np.array([0, 2, 1]), 4), np.float32, (3, 4)),
        (lambda x: ops.reshape(x[:0], (0, 4)), np.float32, (0, 4)),
    ],
)
def test_eager_outputs_are_fresh_writable_c_contiguous_arrays(call, dtype, shape):
    x = _rng(1).uniform(0, 1, (3, 4)).astype(np.float32)
    before = x.copy()
    out = call(x)
    assert type(out) is np.ndarray
    assert out.dtype == dtype and out.shape == shape
    assert out.flags.c_contiguous and out.flags.writeable and out.flags.owndata
    assert not np.shares_memory(out, x)
    out[...] = 0  # writable, and writing it leaves the input alone
    np.testing.assert_array_equal(x, before)


def test_every_output_of_a_multi_output_op_is_its_own_array():
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    parts = ops.split(x, 2, axis=1)
    assert [p.shape for p in parts] == [(3, 2), (3, 2)]
    for p in parts:
        assert p.flags.c_contiguous and p.flags.owndata and p.flags.writeable
    np.testing.assert_array_equal(parts[0], x[:, :2])
    np.testing.assert_array_equal(parts[1], x[:, 2:])


def test_outputs_are_fully_written():
    # Outputs are allocated before the op runs: every element must come from it,
    # for sizes that end in partial SIMD vectors and partial GEMM tiles.
    for n in (1, 7, 33, 1000):
        x = np.full((n, 5), -2.0, np.float32)
        np.testing.assert_array_equal(ops.relu(x), np.zeros((n, 5), np.float32))
        np.testing.assert_array_equal(ops.abs(x), np.full((n, 5), 2.0, np.float32))
        a = np.ones((n, 13), np.float32)
        np.testing.assert_array_equal(ops.matmul(a, np.ones((13, 9), np.float32)), np.full((n, 9), 13.0))


# ----------------------------------------------------------------------------
# Inputs the fast path does not take as they are


def test_non_contiguous_and_other_dtype_inputs_are_converted():
    x = _rng(2).normal(size=(6, 5)).astype(np.float32)
    y = _rng(3).normal(size=(5, 6)).astype(np.float32)
    want = x.astype(np.float64) @ y.astype(np.float64)
    for a, b in [
        (x, y),
        (np.asfortranarray(x), y),  # F-contiguous: must not be read as C order
        (x, y.T.copy().T),  # a transposed view
        (x.astype(np.float64), y),
        (x.astype(">f4"), y),  # non-native byte order
        (x.tolist(), y),
    ]:
        np.testing.assert_allclose(ops.matmul(a, b), want, rtol=1e-5, atol=1e-5)
    assert ops.add(x[:, ::2], 1.0).shape == (6, 3)
    np.testing.assert_array_equal(ops.add(x[:, ::2], 0.0), x[:, ::2])


def test_ndarray_subclasses_and_variables_still_work():
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    m = np.ma.MaskedArray(x)
    np.testing.assert_array_equal(ops.add(m, 1.0), x + 1)
    v = Variable(x)
    np.testing.assert_array_equal(ops.multiply(v, 2.0), x * 2)


# ----------------------------------------------------------------------------
# Attributes and the cache of built ops


def test_attrs_as_dict_and_as_json_text_agree():
    x = _rng(4).normal(size=(4, 5)).astype(np.float32)
    for attrs in [{"axis": [0], "keepdims": True}, {"axis": [1]}, {}, None]:
        text = "{}" if attrs is None else json.dumps(attrs)
        a = _core.run_op("sum", attrs, [x])[0]
        b = _core.run_op("sum", text, [x])[0]
        assert a.shape == b.shape and np.array_equal(_bits(a), _bits(b))


def test_cached_ops_never_mix_up_attributes():
    x = _rng(5).normal(size=(3, 4, 5)).astype(np.float32)
    for _ in range(3):
        for axis in (0, 1, 2, -1, (0, 2)):
            for keepdims in (False, True):
                np.testing.assert_allclose(
                    ops.sum(x, axis=axis, keepdims=keepdims),
                    x.astype(np.float64).sum(axis=axis, keepdims=keepdims),
                    rtol=1e-5,
                    atol=1e-5,
                )
        # Same value, different JSON types: 1 (int) and 1.0 (float), True and 1.
        np.testing.assert_allclose(ops.clip(x, 0, 1), np.clip(x, 0, 1))
        np.testing.assert_allclose(ops.clip(x, 0.0, 1.0), np.clip(x, 0, 1))
        assert ops.cast(x, "int32").dtype == np.int32
        assert ops.cast(x, "bool").dtype == np.bool_
        assert ops.cast(x, "float32").dtype == np.float32


def test_more_distinct_attributes_than_the_cache_holds():
    x = np.arange(2048, dtype=np.float32)
    for lo in range(1200):
        got = ops.clip(x, float(lo), float(lo) + 0.5)
        assert got[0] == lo and got[-1] == lo + 0.5
    # Entries built before the cache started over still give the right op.
    np.testing.assert_array_equal(ops.clip(x, 0.0, 0.5)[:3], [0.0, 0.5, 0.5])


@pytest.mark.parametrize(
    "attrs,error",
    [
        ({"axis": object()}, TypeError),
        ({1: 2}, TypeError),
        ({"axis": float("nan")}, ValueError),
        ("{not json", ValueError),
        ([1, 2], ValueError),
        ({"axis": "zero"}, ValueError),
    ],
)
def test_bad_attributes_are_refused_naming_the_op(attrs, error):
    x = np.ones((2, 3), np.float32)
    with pytest.raises(error, match="sum"):
        _core.run_op("sum", attrs, [x])


def test_unknown_op_is_unsupported():
    with pytest.raises(errors.UnsupportedError, match="no_such_op"):
        _core.run_op("no_such_op", {}, [np.ones(3, np.float32)])


def test_inputs_must_be_float32_or_int32_c_contiguous_arrays():
    with pytest.raises(errors.DTypeError, match="add 1.*float64"):
        _core.run_op("add", {}, [np.ones(3, np.float32), np.ones(3)])
    with pytest.raises(errors.InvalidArgumentError, match="add 0.*C-contiguous"):
        _core.run_op("add", {}, [np.ones((3, 4), np.float32).T, np.ones(3, np.float32)])


def test_errors_name_the_op_and_the_shapes():
    with pytest.raises(errors.ShapeError, match=r"matmul.*\(3, 4\).*\(5, 6\)"):
        ops.matmul(np.ones((3, 4), np.float32), np.ones((5, 6), np.float32))
    with pytest.raises(errors.OutOfRangeError, match="take"):
        ops.take(np.ones(3, np.float32), np.array([5]))


# ----------------------------------------------------------------------------
# Threads


def test_eager_ops_from_several_python_threads_at_once(restore_threads):
    config.set_num_threads(2)
    rng = _rng(6)
    big_a = rng.normal(size=(256, 784)).astype(np.float32)
    big_b = rng.normal(size=(784, 64)).astype(np.float32)
    small = rng.normal(size=(4, 4)).astype(np.float32)
    want_big = ops.matmul(big_a, big_b)
    want_small = ops.add(small, small)
    want_sum = ops.sum(big_a, axis=0)
    n_threads, rounds = 4, 25
    barrier = threading.Barrier(n_threads)
    failures = []

    def work(k):
        try:
            barrier.wait()
            for i in range(rounds):
                if (i + k) % 3 == 0:
                    got, want = ops.matmul(big_a, big_b), want_big
                elif (i + k) % 3 == 1:
                    got, want = ops.sum(big_a, axis=0), want_sum
                else:
                    got, want = ops.add(small, small), want_small
                if not np.array_equal(_bits(got), _bits(want)):
                    failures.append(f"thread {k} round {i}")
        except Exception as e:  # noqa: BLE001 - reported below
            failures.append(f"thread {k}: {e!r}")

    threads = [threading.Thread(target=work, args=(k,)) for k in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures


def test_eager_results_do_not_depend_on_the_thread_count(restore_threads):
    rng = _rng(8)
    cases = [
        ((256, 784), (784, 64)),
        ((64, 784), (784, 10)),
        ((3, 130, 257), (257, 190)),
        ((512, 64), (64, 512)),
    ]
    data = [(rng.uniform(-1, 1, sa).astype(np.float32), rng.uniform(-1, 1, sb).astype(np.float32)) for sa, sb in cases]
    results = {}
    for n in (1, 2, 3):
        config.set_num_threads(n)
        results[n] = [ops.matmul(a, b) for a, b in data]
    for n in (2, 3):
        for k, (x, y) in enumerate(zip(results[1], results[n])):
            assert np.array_equal(_bits(x), _bits(y)), f"case {cases[k]}: {n} threads differ from 1"


# ----------------------------------------------------------------------------
# GradientTape still sees eager ops


def test_tape_records_fast_path_ops():
    x = np.array([1.0, -2.0, 3.0], np.float32)
    w = Variable(np.array([0.5, 0.5, 0.5]))
    with GradientTape() as tape:
        tape.watch(x)
        y = ops.sum(ops.multiply(ops.relu(x), w))
    gx, gw = tape.gradient(y, [x, w])
    np.testing.assert_allclose(gx, [0.5, 0.0, 0.5])
    np.testing.assert_allclose(gw, [1.0, 0.0, 3.0])
