"""Ops on symbolic `KerasTensor`s: shape/dtype inference with a None batch dim (the
expected shape is what the NumPy reference gives for two batch sizes), and the
compiled `Function` on arrays against the reference and the eager result."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from helpers import (
    BINARY,
    BINARY_NAMES,
    UNARY,
    UNARY_NAMES,
    arrays,
    axes,
    broadcast_shapes,
    check_symbolic,
    index_keys,
    indices,
    same_call,
    shapes,
    split_specs,
)
from pyfuncnet import ops
from pyfuncnet._function import Function
from pyfuncnet._symbolic import KerasTensor

MEDIUM = 512


def medium(**kwargs):
    return arrays(**{"max_size": MEDIUM, **kwargs})


@pytest.mark.parametrize("name", UNARY_NAMES)
@given(data=st.data())
def test_unary(name, data):
    fn, ref, values = UNARY[name]
    check_symbolic(fn, ref, [data.draw(medium(**{"min_dims": 0, **values}))])


@pytest.mark.parametrize("name", BINARY_NAMES)
@given(data=st.data())
def test_binary_broadcast(name, data):
    fn, ref, v1, v2 = BINARY[name]
    s1, s2 = data.draw(broadcast_shapes(min_dims=0, max_size=MEDIUM))
    check_symbolic(fn, ref, [data.draw(arrays(s1, **v1)), data.draw(arrays(s2, **v2))])


@pytest.mark.parametrize("name", ["add", "multiply", "power"])
def test_binary_with_python_scalar(name):
    fn, ref, _, _ = BINARY[name]
    x = np.random.default_rng(0).uniform(0.5, 2.0, (4, 3)).astype(np.float32)
    check_symbolic(lambda a: fn(a, 1.5), lambda a: ref(a, 1.5), [x])
    check_symbolic(lambda a: fn(2.5, a), lambda a: ref(2.5, a), [x])


@given(data=st.data())
def test_where(data):
    s1, s2, s3 = data.draw(broadcast_shapes(n=3, min_dims=0, max_size=MEDIUM))
    cond = data.draw(arrays(s1)) > 0
    check_symbolic(ops.where, np.where, [cond, data.draw(arrays(s2)), data.draw(arrays(s3))])


@pytest.mark.parametrize("dtype", ["float32", "int32", "bool"])
@given(x=medium(min_dims=0, low=-50.0, high=50.0))
def test_cast(dtype, x):
    check_symbolic(lambda a: ops.cast(a, dtype), lambda a: a.astype(dtype), [x])


@pytest.mark.parametrize("name", ["sum", "mean", "max", "min", "var"])
@given(data=st.data())
def test_reductions(name, data):
    x = data.draw(medium(min_dims=0, min_side=1, distinct=name in ("max", "min")))
    axis, keepdims = data.draw(axes(x.ndim)), data.draw(st.booleans())
    atol = 1e-6 * (1 + float(np.sum(np.abs(x.astype(np.float64))))) if name == "sum" else 2e-5
    check_symbolic(*same_call(name, axis=axis, keepdims=keepdims), [x], rtol=1e-4, atol=atol)


@given(data=st.data())
def test_std_and_moments(data):
    x = data.draw(medium(min_side=2, dims=(2, 3, 5, 7, 8, 9, 16, 17), distinct=True))
    axis = data.draw(axes(x.ndim, allow_none=False))
    check_symbolic(lambda a: ops.std(a, axis=axis), lambda a: np.std(a, axis=axis), [x], rtol=1e-4, atol=1e-4)
    check_symbolic(
        lambda a: ops.moments(a, axis, keepdims=True),
        lambda a: (np.mean(a, axis=axis, keepdims=True), np.var(a, axis=axis, keepdims=True)),
        [x],
        rtol=1e-4,
        atol=2e-5,
    )


@pytest.mark.parametrize("name", ["argmax", "argmin"])
@given(data=st.data())
def test_argmax_argmin(name, data):
    x = data.draw(medium(min_side=1, distinct=True))
    axis = data.draw(st.one_of(st.none(), st.integers(-x.ndim, x.ndim - 1)))
    ref = getattr(np, name)
    check_symbolic(lambda a: getattr(ops, name)(a, axis=axis), lambda a: ref(a, axis=axis), [x])


@given(data=st.data())
def test_matmul_and_dot(data):
    batch = data.draw(shapes(min_dims=0, max_dims=2, max_size=8, dims=(1, 2, 3)))
    m, k, n = (data.draw(st.sampled_from([1, 2, 7, 9, 17])) for _ in range(3))
    a = data.draw(arrays(batch + (m, k)))
    b = data.draw(arrays(batch + (k, n)))
    # Batched: the batch dim is None; 2-D: only the rows of `a` are.
    dynamic = [True, bool(batch)]
    check_symbolic(ops.matmul, np.matmul, [a, b], dynamic=dynamic, atol=1e-5)
    if not batch:
        check_symbolic(ops.dot, np.dot, [a, b], dynamic=dynamic, atol=1e-5)
    v = data.draw(arrays((k,)))
    check_symbolic(ops.matmul, np.matmul, [a, v], dynamic=[True, False], atol=1e-5)


@given(data=st.data())
def test_reshape(data):
    x = data.draw(medium(min_dims=2, max_dims=3, min_side=1))
    # Keep the batch axis, flatten the rest.
    rest = int(np.prod(x.shape[1:]))
    check_symbolic(lambda a: ops.reshape(a, (-1, rest)), lambda a: a.reshape(a.shape[0], -1), [x])
    check_symbolic(lambda a: ops.reshape(a, x.shape[::-1]), lambda a: a.reshape(x.shape[::-1]), [x], dynamic=[False])


@given(data=st.data())
def test_transpose(data):
    x = data.draw(medium(min_dims=0, max_dims=4))
    perm = data.draw(st.one_of(st.none(), st.permutations(range(x.ndim)).map(tuple)))
    check_symbolic(lambda a: ops.transpose(a, perm), lambda a: np.transpose(a, perm), [x])


@given(data=st.data())
def test_expand_dims_squeeze(data):
    x = data.draw(medium(min_dims=1))
    axis = data.draw(st.integers(-x.ndim - 1, x.ndim))
    check_symbolic(lambda a: ops.expand_dims(a, axis), lambda a: np.expand_dims(a, axis), [x])
    y = np.expand_dims(x, axis)
    # The batch axis stays known when it is the one squeezed.
    dynamic = [y.shape[0] != 1 or axis % y.ndim != 0]
    check_symbolic(lambda a: ops.squeeze(a, axis), lambda a: np.squeeze(a, axis), [y], dynamic=dynamic)


@given(data=st.data())
def test_concatenate_stack(data):
    base = data.draw(shapes(min_dims=1, max_dims=3, max_size=256))
    axis = data.draw(st.integers(-len(base), len(base) - 1))
    xs = []
    for _ in range(data.draw(st.integers(1, 3))):
        s = list(base)
        s[axis] = data.draw(st.sampled_from([0, 1, 2, 7, 9]))
        xs.append(data.draw(arrays(tuple(s))))
    check_symbolic(lambda *a: ops.concatenate(a, axis=axis), lambda *a: np.concatenate(a, axis=axis), xs)
    same = [data.draw(arrays(base)) for _ in range(len(xs))]
    sax = data.draw(st.integers(-len(base) - 1, len(base)))
    check_symbolic(lambda *a: ops.stack(a, axis=sax), lambda *a: np.stack(a, axis=sax), same)


@given(data=st.data())
def test_split(data):
    x = data.draw(medium(min_dims=2))
    axis = data.draw(st.integers(1, x.ndim - 1))  # splitting needs a known size
    n = x.shape[axis]
    spec = data.draw(split_specs(n))
    check_symbolic(lambda a: ops.split(a, spec, axis=axis), lambda a: np.split(a, spec, axis=axis), [x])


@given(data=st.data())
def test_take(data):
    x = data.draw(medium(min_side=1))
    axis = data.draw(st.integers(-x.ndim, x.ndim - 1))
    n = x.shape[axis]
    # Indices fed as an int32 input; in the compiled graph they must be in [0, n).
    idx = data.draw(indices(0, n, st.sampled_from([(), (3,), (2, 5)])))
    fn, ref = (lambda a, i: ops.take(a, i, axis=axis)), (lambda a, i: np.take(a, i, axis=axis))
    check_symbolic(fn, ref, [x, idx], dynamic=[axis % x.ndim != 0, False])


@given(data=st.data())
def test_one_hot(data):
    depth = data.draw(st.sampled_from([1, 3, 8, 9]))
    shape = data.draw(shapes(min_dims=1, max_dims=2, max_size=64))
    idx = data.draw(indices(0, depth, shape))
    check_symbolic(lambda i: ops.one_hot(i, depth), lambda i: np.eye(depth)[i], [idx])


@given(data=st.data())
def test_getitem(data):
    x = data.draw(medium(min_dims=1, max_dims=3))
    key = data.draw(index_keys(x.shape))
    check_symbolic(lambda t: t[key], lambda a: a[key], [x], wrap=True)


def test_operators_on_keras_tensors():
    rng = np.random.default_rng(3)
    a = rng.uniform(0.5, 2, (4, 3)).astype(np.float32)
    b = rng.uniform(0.5, 2, (3,)).astype(np.float32)
    check_symbolic(lambda x, y: (x + y) * 2.0 - y / x, lambda x, y: (x + y) * 2.0 - y / x, [a, b])
    check_symbolic(lambda x, y: -(x**y) + abs(1.0 - x), lambda x, y: -(x**y) + abs(1.0 - x), [a, b])
    check_symbolic(lambda x, y: x @ ops.expand_dims(y, -1), lambda x, y: x @ y[:, None], [a, b])


def test_unknown_dims_beyond_the_batch():
    x = KerasTensor((None, None, 3))
    y = ops.reshape(x, (-1, 3))
    assert y.shape == (None, 3) and y.dtype == "float32"
    z = ops.sum(ops.relu(x), axis=1)
    assert z.shape == (None, 3)
    arr = np.random.default_rng(0).normal(size=(2, 5, 3)).astype(np.float32)
    want = np.maximum(arr, 0).astype(np.float64).sum(axis=1)
    np.testing.assert_allclose(Function(x, z)(arr), want, rtol=1e-5, atol=1e-6)
    # One compiled graph per input signature: another shape runs too.
    arr2 = arr[:1, :4]
    np.testing.assert_allclose(Function(x, y)(arr2), arr2.reshape(-1, 3), rtol=0, atol=0)


def test_function_may_return_its_input():
    # An output that is a graph input (identity graph, or an output list mixing the
    # input with computed values) is returned as given.
    x = KerasTensor((None, 3))
    arr = np.arange(6, dtype=np.float32).reshape(2, 3)
    outs = Function(x, [x, ops.relu(x)])(arr)
    np.testing.assert_array_equal(outs[0], arr)
    np.testing.assert_array_equal(outs[1], np.maximum(arr, 0))
