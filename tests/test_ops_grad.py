"""Gradients of every differentiable op: GradientTape against central finite
differences of the float64 NumPy reference."""

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
    check_grad,
    index_keys,
    indices,
    same_call,
    shapes,
    split_specs,
)
from pyfuncnet import ops

# Finite differences cost two reference evaluations per input element: keep inputs small.
SMALL = 48
SMALL_DIMS = (1, 2, 3, 5, 7, 8, 9)


def small(**kwargs):
    return arrays(**{"max_size": SMALL, "dims": SMALL_DIMS, **kwargs})


@pytest.mark.parametrize("name", UNARY_NAMES)
@given(data=st.data())
def test_unary(name, data):
    fn, ref, values = UNARY[name]
    check_grad(fn, ref, [data.draw(small(**{"min_dims": 0, **values}))])


@pytest.mark.parametrize("name", BINARY_NAMES)
@given(data=st.data())
def test_binary_broadcast(name, data):
    fn, ref, v1, v2 = BINARY[name]
    s1, s2 = data.draw(broadcast_shapes(min_dims=0, max_size=SMALL, dims=SMALL_DIMS))
    check_grad(fn, ref, [data.draw(arrays(s1, **v1)), data.draw(arrays(s2, **v2))])


@pytest.mark.parametrize("wrap", [False, True])
@given(data=st.data())
def test_where(wrap, data):
    s1, s2, s3 = data.draw(broadcast_shapes(n=3, min_dims=0, max_size=SMALL, dims=SMALL_DIMS))
    cond = data.draw(arrays(s1)) > 0
    x1, x2 = data.draw(arrays(s2)), data.draw(arrays(s3))
    check_grad(lambda a, b: ops.where(cond, a, b), lambda a, b: np.where(cond, a, b), [x1, x2], wrap=wrap)


@pytest.mark.parametrize("name", ["sum", "mean"])
@given(data=st.data())
def test_sum_mean(name, data):
    x = data.draw(small(min_dims=0))
    axis, keepdims = data.draw(axes(x.ndim)), data.draw(st.booleans())
    check_grad(*same_call(name, axis=axis, keepdims=keepdims), [x])


@pytest.mark.parametrize("name", ["max", "min"])
@given(data=st.data())
def test_max_min(name, data):
    x = data.draw(small(min_dims=0, distinct=True))
    axis, keepdims = data.draw(axes(x.ndim)), data.draw(st.booleans())
    check_grad(*same_call(name, axis=axis, keepdims=keepdims), [x])


@pytest.mark.parametrize("name", ["var", "std"])
@given(data=st.data())
def test_var_std(name, data):
    # Reduced axes of size >= 2 (std is not differentiable at zero variance).
    x = data.draw(small(min_dims=1, dims=(2, 3, 5, 7, 8, 9), distinct=True))
    axis, keepdims = data.draw(axes(x.ndim)), data.draw(st.booleans())
    check_grad(*same_call(name, axis=axis, keepdims=keepdims), [x])


@given(data=st.data())
def test_moments(data):
    x = data.draw(small(min_dims=1, dims=(2, 3, 5, 7, 8, 9)))
    axis, keepdims = data.draw(axes(x.ndim, allow_none=False)), data.draw(st.booleans())
    check_grad(
        lambda a: ops.moments(a, axis, keepdims=keepdims),
        lambda a: (np.mean(a, axis=axis, keepdims=keepdims), np.var(a, axis=axis, keepdims=keepdims)),
        [x],
    )


@given(data=st.data())
def test_matmul(data):
    batch = data.draw(shapes(min_dims=0, max_dims=2, max_size=3, dims=(1, 2, 3)))
    m, k, n = (data.draw(st.sampled_from([1, 2, 3, 5])) for _ in range(3))
    b1 = tuple(d if data.draw(st.booleans()) else 1 for d in batch)
    a = data.draw(arrays(b1 + (m, k)))
    b = data.draw(arrays(batch[data.draw(st.integers(0, len(batch))):] + (k, n)))
    check_grad(ops.matmul, np.matmul, [a, b])


@pytest.mark.parametrize(
    "shapes_", [((5,), (5, 3)), ((2, 5), (5,)), ((7,), (7,)), ((2, 3, 4), (4,)), ((4,), (2, 4, 3))]
)
def test_matmul_1d(shapes_):
    a, b = (np.random.default_rng(i).uniform(-2, 2, s).astype(np.float32) for i, s in enumerate(shapes_))
    check_grad(ops.matmul, np.matmul, [a, b])


@pytest.mark.parametrize(
    "shapes_", [((), (3, 2)), ((4,), (4,)), ((2, 3), (3, 4)), ((2, 3), (2, 3, 4)), ((3,), (2, 3, 2))]
)
def test_dot(shapes_):
    a, b = (np.random.default_rng(i).uniform(-2, 2, s).astype(np.float32) for i, s in enumerate(shapes_))
    check_grad(ops.dot, np.dot, [a, b])


@given(data=st.data())
def test_reshape(data):
    x = data.draw(small(min_dims=1))
    target = (-1,) if x.ndim == 1 else (x.shape[0], -1)
    check_grad(lambda a: ops.reshape(a, target[::-1]), lambda a: np.reshape(a, target[::-1]), [x])


@given(data=st.data())
def test_transpose(data):
    x = data.draw(small(min_dims=0, max_dims=4))
    perm = data.draw(st.one_of(st.none(), st.permutations(range(x.ndim)).map(tuple)))
    check_grad(lambda a: ops.transpose(a, perm), lambda a: np.transpose(a, perm), [x])


@given(data=st.data())
def test_expand_dims_squeeze(data):
    x = data.draw(small(min_dims=0))
    axis = data.draw(st.integers(-x.ndim - 1, x.ndim))
    check_grad(lambda a: ops.expand_dims(a, axis), lambda a: np.expand_dims(a, axis), [x])
    y = np.expand_dims(x, axis)
    check_grad(lambda a: ops.squeeze(a, axis), lambda a: np.squeeze(a, axis), [y])


@given(data=st.data())
def test_concatenate(data):
    base = data.draw(shapes(min_dims=1, max_dims=3, max_size=12, dims=SMALL_DIMS))
    axis = data.draw(st.integers(-len(base), len(base) - 1))
    xs = []
    for _ in range(data.draw(st.integers(1, 3))):
        s = list(base)
        s[axis] = data.draw(st.sampled_from([0, 1, 2, 3]))
        xs.append(data.draw(arrays(tuple(s))))
    check_grad(lambda *a: ops.concatenate(a, axis=axis), lambda *a: np.concatenate(a, axis=axis), xs)


@given(data=st.data())
def test_stack(data):
    shape = data.draw(shapes(min_dims=0, max_size=12, dims=SMALL_DIMS))
    axis = data.draw(st.integers(-len(shape) - 1, len(shape)))
    xs = [data.draw(arrays(shape)) for _ in range(data.draw(st.integers(1, 3)))]
    check_grad(lambda *a: ops.stack(a, axis=axis), lambda *a: np.stack(a, axis=axis), xs)


@given(data=st.data())
def test_split(data):
    x = data.draw(small(min_dims=1))
    axis = data.draw(st.integers(-x.ndim, x.ndim - 1))
    n = x.shape[axis]
    spec = data.draw(split_specs(n))
    check_grad(lambda a: ops.split(a, spec, axis=axis), lambda a: np.split(a, spec, axis=axis), [x])


@given(data=st.data())
def test_take(data):
    x = data.draw(small(min_dims=1))
    axis = data.draw(st.one_of(st.none(), st.integers(-x.ndim, x.ndim - 1)))
    n = x.size if axis is None else x.shape[axis]
    # Repeated indices: their gradients accumulate.
    idx = data.draw(indices(-n, n, st.sampled_from([(), (3,), (2, 4)])))
    check_grad(lambda a, i: ops.take(a, i, axis=axis), lambda a, i: np.take(a, i, axis=axis), [x, idx])


@given(data=st.data())
def test_getitem_on_variable(data):
    x = data.draw(small(min_dims=1, max_dims=3))
    key = data.draw(index_keys(x.shape))
    check_grad(lambda v: v[key], lambda a: a[key], [x], wrap=True)


@pytest.mark.parametrize("wrap", [False, True])
def test_composite_expression(wrap):
    # A small MLP-like expression mixing several ops, on arrays and on Variables.
    rng = np.random.default_rng(7)
    x = rng.uniform(-1, 1, (5, 4)).astype(np.float32)
    w = rng.uniform(-1, 1, (4, 3)).astype(np.float32)
    b = rng.uniform(-1, 1, (3,)).astype(np.float32)

    def fn(x, w, b):
        h = ops.tanh(ops.add(ops.matmul(x, w), b))
        return ops.mean(ops.square(ops.subtract(ops.softmax(h), 0.25)), axis=0)

    def ref(x, w, b):
        from helpers import softmax_ref

        h = np.tanh(x @ w + b)
        return np.mean((softmax_ref(h) - 0.25) ** 2, axis=0)

    check_grad(fn, ref, [x, w, b], wrap=wrap)
