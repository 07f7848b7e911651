"""Eager ops (numpy in, numpy out) against float64 NumPy references."""

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
    check_op,
    index_keys,
    indices,
    same_call,
    shapes,
    split_specs,
)
from pyfuncnet import Variable, ops


def _sum_tol(x, *rest):
    """float32 accumulation error bound for sums: relative to the sum of |x|."""
    return 1e-6 * (1.0 + float(np.sum(np.abs(x))))


# ----------------------------------------------------------------------------
# Elementwise


@pytest.mark.parametrize("name", UNARY_NAMES)
@given(data=st.data())
def test_unary(name, data):
    fn, ref, values = UNARY[name]
    check_op(fn, ref, [data.draw(arrays(**{"min_dims": 0, **values}))])


@pytest.mark.parametrize("name", BINARY_NAMES)
@given(data=st.data())
def test_binary_broadcast(name, data):
    fn, ref, v1, v2 = BINARY[name]
    s1, s2 = data.draw(broadcast_shapes(min_dims=0, max_size=1024))
    check_op(fn, ref, [data.draw(arrays(s1, **v1)), data.draw(arrays(s2, **v2))])


@pytest.mark.parametrize("name", BINARY_NAMES)
@given(data=st.data())
def test_binary_with_python_scalar(name, data):
    fn, ref, v1, v2 = BINARY[name]
    # The Python float is rounded to float32, as Keras converts it.
    s2 = float(data.draw(arrays((), **v2)))
    check_op(lambda a: fn(a, s2), lambda a: ref(a, np.float64(np.float32(s2))), [data.draw(arrays(**v1))])
    s1 = float(data.draw(arrays((), **v1)))
    check_op(lambda b: fn(s1, b), lambda b: ref(np.float64(np.float32(s1)), b), [data.draw(arrays(**v2))])


def test_sqrt_log_at_special_points():
    x = np.array([0.0, 1.0, 4.0, np.inf], np.float32)
    check_op(ops.sqrt, np.sqrt, [x])
    check_op(ops.log, lambda a: np.log(np.where(a == 0, 1, a)) + np.where(a == 0, -np.inf, 0), [x])


def test_exp_saturates_like_float32():
    # exp(89) overflows float32 to inf; exp(-104) underflows to 0 (or a subnormal).
    got = ops.exp(np.array([89.0, -104.0, 0.0], np.float32))
    assert np.isposinf(got[0]) and 0.0 <= got[1] < 1e-44 and got[2] == 1.0


def test_activations_stable_at_extremes():
    x = np.array([-200.0, -50.0, 50.0, 200.0], np.float32)
    check_op(ops.sigmoid, lambda a: 0.5 * (1 + np.tanh(0.5 * a)), [x])
    check_op(ops.softplus, lambda a: np.logaddexp(0.0, a), [x])
    check_op(ops.softmax, lambda a: np.exp(a - a.max()) / np.exp(a - a.max()).sum(), [x])
    check_op(ops.log_softmax, lambda a: a - a.max() - np.log(np.exp(a - a.max()).sum()), [x])


@given(data=st.data())
def test_where(data):
    s1, s2, s3 = data.draw(broadcast_shapes(n=3, min_dims=0, max_size=1024))
    cond = data.draw(arrays(s1)) > 0
    x1, x2 = data.draw(arrays(s2)), data.draw(arrays(s3))
    check_op(lambda a, b: ops.where(cond, a, b), lambda a, b: np.where(cond, a, b), [x1, x2])


@pytest.mark.parametrize("dtype", ["float32", "int32", "bool"])
@given(x=arrays(min_dims=0, low=-50.0, high=50.0))
def test_cast(dtype, x):
    # NumPy's float -> int32 truncates toward zero; -> bool is `!= 0`.
    check_op(lambda a: ops.cast(a, dtype), lambda a: a.astype(dtype), [x])


@given(x=arrays(min_dims=0))
def test_cast_int_back_to_float(x):
    ints = (x * 1000).astype(np.int32)
    check_op(lambda a: ops.cast(a, "float32"), lambda a: a.astype(np.float64), [ints])


# ----------------------------------------------------------------------------
# Reductions


@pytest.mark.parametrize("name", ["sum", "mean"])
@given(data=st.data())
def test_sum_mean(name, data):
    x = data.draw(arrays(min_dims=0, min_side=1 if name == "mean" else 0))
    axis, keepdims = data.draw(axes(x.ndim)), data.draw(st.booleans())
    tol = _sum_tol if name == "sum" else (lambda a: 1e-6 * (1.0 + float(np.max(np.abs(a), initial=0.0))))
    check_op(*same_call(name, axis=axis, keepdims=keepdims), [x], atol=tol)


@pytest.mark.parametrize("name", ["max", "min"])
@given(data=st.data())
def test_max_min(name, data):
    x = data.draw(arrays(min_dims=0, min_side=1))
    axis, keepdims = data.draw(axes(x.ndim)), data.draw(st.booleans())
    check_op(*same_call(name, axis=axis, keepdims=keepdims), [x], rtol=0, atol=0)


@pytest.mark.parametrize("name", ["var", "std"])
@given(data=st.data())
def test_var_std(name, data):
    x = data.draw(arrays(min_dims=0, min_side=1))
    axis, keepdims = data.draw(axes(x.ndim)), data.draw(st.booleans())
    # var: float32 rounding of values of size ~|x|^2 (4 here); std: its square root,
    # whose error near zero variance is about sqrt(that).
    atol = 2e-5 if name == "var" else 5e-3
    check_op(*same_call(name, axis=axis, keepdims=keepdims), [x], rtol=1e-4, atol=atol)


@given(data=st.data())
def test_moments(data):
    x = data.draw(arrays(min_side=1))
    axis, keepdims = data.draw(axes(x.ndim, allow_none=False)), data.draw(st.booleans())
    check_op(
        lambda a: ops.moments(a, axis, keepdims=keepdims),
        lambda a: (np.mean(a, axis=axis, keepdims=keepdims), np.var(a, axis=axis, keepdims=keepdims)),
        [x],
        rtol=1e-4,
        atol=2e-5,
    )


@pytest.mark.parametrize("name", ["argmax", "argmin"])
@given(data=st.data())
def test_argmax_argmin(name, data):
    x = data.draw(arrays(min_side=1, distinct=True))
    axis = data.draw(st.one_of(st.none(), st.integers(-x.ndim, x.ndim - 1)))
    keepdims = data.draw(st.booleans()) and axis is not None
    check_op(*same_call(name, axis=axis, keepdims=keepdims), [x])


def test_argmax_ties_pick_the_first():
    x = np.array([[1.0, 3.0, 3.0], [2.0, 2.0, 0.0]], np.float32)
    check_op(lambda a: ops.argmax(a, axis=1), lambda a: np.argmax(a, axis=1), [x])
    check_op(lambda a: ops.argmin(a, axis=0), lambda a: np.argmin(a, axis=0), [x])


# ----------------------------------------------------------------------------
# Linear algebra (matmul in depth: test_matmul.py)


@given(data=st.data())
def test_dot(data):
    n1, n2 = data.draw(st.integers(0, 3)), data.draw(st.integers(0, 3))
    k = data.draw(st.sampled_from([1, 3, 8, 17]))
    s1 = data.draw(shapes(min_dims=max(n1 - 1, 0), max_dims=max(n1 - 1, 0), max_size=64)) + ((k,) if n1 else ())
    if n2 >= 2:
        lead = data.draw(shapes(min_dims=n2 - 2, max_dims=n2 - 2, max_size=64))
        s2 = lead + (k, data.draw(st.sampled_from([1, 5, 9])))
    else:
        s2 = (k,) if n2 == 1 else ()
    check_op(ops.dot, np.dot, [data.draw(arrays(s1)), data.draw(arrays(s2))], rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------
# Shapes


@given(data=st.data())
def test_reshape_with_minus_one(data):
    x = data.draw(arrays(min_dims=0, min_side=1))
    # A random factorisation of the size, one factor given as -1.
    size, factors = x.size, []
    for p in (2, 3, 5, 7, 11, 13, 17, 31):
        while size % p == 0 and data.draw(st.booleans()):
            factors.append(p)
            size //= p
    factors.append(size)
    factors = data.draw(st.permutations(factors))
    target = list(factors)
    target[data.draw(st.integers(0, len(target) - 1))] = -1
    check_op(lambda a: ops.reshape(a, tuple(target)), lambda a: np.reshape(a, tuple(target)), [x], rtol=0, atol=0)


@given(data=st.data())
def test_transpose(data):
    x = data.draw(arrays(min_dims=0, max_dims=4, max_size=4096))
    perm = data.draw(st.one_of(st.none(), st.permutations(range(x.ndim)).map(tuple)))
    if perm and data.draw(st.booleans()):
        perm = tuple(p - x.ndim for p in perm)  # negative axes, as NumPy allows
    check_op(lambda a: ops.transpose(a, perm), lambda a: np.transpose(a, perm), [x], rtol=0, atol=0)


@given(data=st.data())
def test_expand_dims(data):
    x = data.draw(arrays(min_dims=0))
    # One axis, or a tuple of distinct (possibly negative) axes of the result.
    one = st.integers(-x.ndim - 1, x.ndim)
    several = st.lists(st.integers(0, x.ndim + 1), min_size=2, max_size=2, unique=True).map(
        lambda a: (a[0], a[1] - x.ndim - 2)
    )
    axis = data.draw(st.one_of(one, several))
    check_op(lambda a: ops.expand_dims(a, axis), lambda a: np.expand_dims(a, axis), [x], rtol=0, atol=0)


@given(data=st.data())
def test_squeeze(data):
    shape = data.draw(shapes(min_dims=0, max_dims=5, dims=(1, 1, 2, 3, 7, 8, 9, 16, 17)))
    x = data.draw(arrays(shape))
    ones = [i for i, d in enumerate(shape) if d == 1]
    axis = data.draw(st.one_of(st.none(), st.sampled_from(ones) if ones else st.none()))
    check_op(lambda a: ops.squeeze(a, axis), lambda a: np.squeeze(a, axis), [x], rtol=0, atol=0)


@given(data=st.data())
def test_concatenate(data):
    base = data.draw(shapes(min_dims=1, max_dims=3, max_size=512))
    axis = data.draw(st.integers(-len(base), len(base) - 1))
    n = data.draw(st.integers(1, 4))
    xs = []
    for _ in range(n):
        s = list(base)
        s[axis] = data.draw(st.sampled_from([0, 1, 2, 7, 9]))
        xs.append(data.draw(arrays(tuple(s))))
    check_op(lambda *a: ops.concatenate(a, axis=axis), lambda *a: np.concatenate(a, axis=axis), xs, rtol=0, atol=0)


@given(data=st.data())
def test_stack(data):
    shape = data.draw(shapes(min_dims=0, max_size=512))
    axis = data.draw(st.integers(-len(shape) - 1, len(shape)))
    xs = [data.draw(arrays(shape)) for _ in range(data.draw(st.integers(1, 4)))]
    check_op(lambda *a: ops.stack(a, axis=axis), lambda *a: np.stack(a, axis=axis), xs, rtol=0, atol=0)


@given(data=st.data())
def test_split(data):
    x = data.draw(arrays())
    axis = data.draw(st.integers(-x.ndim, x.ndim - 1))
    n = x.shape[axis]
    spec = data.draw(split_specs(n, bound=2))
    check_op(lambda a: ops.split(a, spec, axis=axis), lambda a: np.split(a, spec, axis=axis), [x], rtol=0, atol=0)


@given(data=st.data())
def test_take(data):
    x = data.draw(arrays(min_side=1))
    axis = data.draw(st.one_of(st.none(), st.integers(-x.ndim, x.ndim - 1)))
    n = x.size if axis is None else x.shape[axis]
    # Negative indices count from the end, as in NumPy.
    idx = data.draw(indices(-n, n, shapes(min_dims=0, max_dims=2, max_size=64)))
    check_op(lambda a, i: ops.take(a, i, axis=axis), lambda a, i: np.take(a, i, axis=axis), [x, idx], rtol=0, atol=0)


def test_take_accepts_integral_floats_and_lists():
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    check_op(lambda a: ops.take(a, [2, -3], axis=0), lambda a: np.take(a, [2, -3], axis=0), [x])
    check_op(lambda a: ops.take(a, np.array([1.0, 3.0]), axis=1), lambda a: np.take(a, [1, 3], axis=1), [x])


@given(data=st.data())
def test_one_hot(data):
    depth = data.draw(st.sampled_from([1, 2, 3, 7, 8, 9, 17]))
    shape = data.draw(shapes(min_dims=0, max_dims=2, max_size=64))
    idx = data.draw(indices(0, depth, shape))
    axis = data.draw(st.integers(-1, len(shape)))
    check_op(
        lambda i: ops.one_hot(i, depth, axis=axis),
        lambda i: np.moveaxis(np.eye(depth)[i], -1, axis),
        [idx],
        rtol=0,
        atol=0,
    )


@given(data=st.data())
def test_getitem_on_variable(data):
    x = data.draw(arrays(min_dims=1, max_dims=3))
    key = data.draw(index_keys(x.shape))
    check_op(lambda v: v[key], lambda a: a[key], [x], rtol=0, atol=0, wrap=True)


def test_getitem_through_ops_on_arrays():
    x = np.arange(60, dtype=np.float32).reshape(3, 4, 5)
    for key in [(1, slice(None, None, 2)), (Ellipsis, 0), (None, slice(1, None), Ellipsis, None, 3), -1]:
        check_op(lambda a, key=key: ops._getitem(a, key), lambda a, key=key: a[key], [x], rtol=0, atol=0)


def test_variable_operators():
    a = np.array([[1.5, -2.0], [0.25, 3.0]], np.float32)
    b = np.array([[0.5, 4.0], [-1.0, 2.0]], np.float32)
    va = Variable(a)
    check_op(lambda v: v + b, lambda x: x + b, [a], wrap=True)
    check_op(lambda v: b - v, lambda x: b - x, [a], wrap=True)
    check_op(lambda v: v * 3.0, lambda x: x * 3.0, [a], wrap=True)
    check_op(lambda v: v / b, lambda x: x / b, [a], wrap=True)
    check_op(lambda v: v @ b, lambda x: x @ b, [a], wrap=True)
    check_op(lambda v: -v, lambda x: -x, [a], wrap=True)
    check_op(lambda v: abs(v) ** 2.0, lambda x: np.abs(x) ** 2.0, [a], wrap=True)
    check_op(lambda v: 2.0**v, lambda x: 2.0**x, [a], wrap=True)
    np.testing.assert_array_equal(va.value, a)
