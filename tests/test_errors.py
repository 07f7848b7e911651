"""Typed errors (DESIGN.md §6): shape, dtype, range and argument errors raise the
pyfuncnet exception that is also the builtin a user catches, with both shapes (or the
position and value) in the message; symbolic errors raise at build time and show None
for unknown dims; a failed op modifies nothing."""

import re

import numpy as np
import pytest

from pyfuncnet import GradientTape, Variable, errors, ops
from pyfuncnet._symbolic import KerasTensor


def _shape_text(shape):
    """Matches a shape written as (2, 3) or [2, 3]."""
    return r"[\(\[]" + r",\s*".join(str(d) for d in shape) + r",?[\)\]]"


def test_error_hierarchy():
    assert issubclass(errors.ShapeError, ValueError)
    assert issubclass(errors.DTypeError, TypeError)
    assert issubclass(errors.OutOfRangeError, IndexError)
    assert issubclass(errors.InvalidArgumentError, ValueError)
    assert issubclass(errors.UnsupportedError, NotImplementedError)
    classes = (errors.ShapeError, errors.DTypeError, errors.OutOfRangeError, errors.InvalidArgumentError)
    for cls in classes + (errors.UnsupportedError,):
        assert issubclass(cls, errors.PyfuncnetError)


@pytest.mark.parametrize(
    "fn,s1,s2",
    [
        (ops.add, (2, 3), (4, 3)),
        (ops.multiply, (5,), (4,)),
        (ops.subtract, (2, 3, 4), (3, 5)),
        (ops.matmul, (2, 3), (4, 5)),
        (ops.matmul, (7, 2, 3), (5, 3, 4)),
        (lambda a, b: ops.concatenate([a, b], axis=0), (2, 3), (3, 4)),
        (lambda a, b: ops.concatenate([a, b], axis=-1), (2, 3), (3, 3)),
    ],
)
def test_eager_shape_mismatch(fn, s1, s2):
    a, b = np.ones(s1, np.float32), np.ones(s2, np.float32)
    with pytest.raises(errors.ShapeError) as info:
        fn(a, b)
    assert isinstance(info.value, ValueError)
    message = str(info.value)
    assert re.search(_shape_text(s1), message) and re.search(_shape_text(s2), message), message


def test_reshape_to_wrong_size():
    with pytest.raises(errors.ShapeError) as info:
        ops.reshape(np.ones((2, 3), np.float32), (4, 2))
    assert isinstance(info.value, ValueError)
    assert re.search(_shape_text((2, 3)), str(info.value)) and re.search(_shape_text((4, 2)), str(info.value))
    with pytest.raises(ValueError):
        ops.reshape(np.ones((2, 3), np.float32), (4, -1))
    with pytest.raises(ValueError):
        ops.reshape(np.ones((2, 3), np.float32), (-1, -1))


@pytest.mark.parametrize(
    "fn,s1,s2",
    [
        (ops.add, (None, 3), (None, 4)),
        (ops.matmul, (None, 3), (4, 5)),
        (ops.multiply, (None, 2, 3), (4, 3)),
        (lambda a, b: ops.concatenate([a, b], axis=0), (None, 3), (None, 4)),
    ],
)
def test_symbolic_mismatch_raises_at_build_time_with_none(fn, s1, s2):
    a, b = KerasTensor(s1), KerasTensor(s2)
    with pytest.raises(errors.ShapeError) as info:
        fn(a, b)
    message = str(info.value)
    # The batch dim shows as None, never as an internal sentinel number.
    assert "None" in message, message
    assert not re.search(r"\d{6,}", message), message
    assert re.search(_shape_text(s1), message) and re.search(_shape_text(s2), message), message


def test_symbolic_reshape_mismatch():
    # 28 elements are never a multiple of 6: wrong for every batch size. The element
    # count, which depends on the batch, must not show an internal number either.
    x = KerasTensor((None, 6))
    with pytest.raises(errors.ShapeError) as info:
        ops.reshape(x, (4, 7))
    message = str(info.value)
    assert "None, 6" in message and re.search(_shape_text((4, 7)), message), message
    assert not re.search(r"\d{6,}", message), message


@pytest.mark.parametrize("index,position", [([0, 5], 1), ([7, 1, 2], 0), ([1, 2, -6], 2), ([[0, 1], [9, 2]], 2)])
def test_take_out_of_range(index, position):
    x = np.arange(5, dtype=np.float32)
    value = int(np.ravel(index)[position])
    with pytest.raises(errors.OutOfRangeError) as info:
        ops.take(x, index)
    assert isinstance(info.value, IndexError)
    message = str(info.value)
    assert f"position {position}" in message and str(value) in message, message


def test_take_out_of_range_along_axis():
    x = np.ones((3, 4), np.float32)
    with pytest.raises(IndexError) as info:
        ops.take(x, np.array([3, 0], np.int32), axis=0)
    assert "3" in str(info.value)
    with pytest.raises(IndexError):
        ops.take(x, [4], axis=1)


@pytest.mark.parametrize(
    "indices", [np.array([0.5, 1.0]), np.array([np.nan]), np.array([1.0, np.inf]), np.array(["a"])]
)
def test_take_with_non_integral_indices_is_a_type_error(indices):
    with pytest.raises(TypeError):
        ops.take(np.arange(4, dtype=np.float32), indices)


def test_dtype_errors():
    with pytest.raises(TypeError):
        ops.one_hot(np.array([0.5]), 3)
    with pytest.raises(TypeError):
        ops.add(np.ones(2, np.float32), np.array(["x", "y"]))
    with pytest.raises(TypeError):
        ops.add(KerasTensor((None, 2)), "x")


def test_symbolic_dtype_errors_are_typed():
    idx = KerasTensor((None, 3), dtype="float32")
    with pytest.raises(TypeError):
        ops._run1("take", {"axis": 0}, KerasTensor((5, 2)), idx)


@pytest.mark.parametrize(
    "call",
    [
        lambda x: ops.sum(x, axis=2),
        lambda x: ops.softmax(x, axis=-3),
        lambda x: ops.transpose(x, (0, 0)),
        lambda x: ops.clip(x, 1.0, 0.0),
        lambda x: ops.split(x, 4, axis=1),
        lambda x: ops.squeeze(x, 0),
        lambda x: ops.max(np.zeros((0, 3), np.float32), axis=0),
    ],
)
def test_invalid_arguments_are_value_errors(call):
    with pytest.raises(ValueError):
        call(np.ones((2, 3), np.float32))


def test_indexing_out_of_range():
    v = Variable(np.ones((2, 3)))
    with pytest.raises(IndexError):
        v[2]
    with pytest.raises(IndexError):
        v[0, -4]
    with pytest.raises(IndexError):
        v[0, 0, 0]


def test_failed_op_modifies_nothing():
    rng = np.random.default_rng(0)
    v = Variable(rng.normal(size=(2, 3)))
    before = v.numpy()
    x = rng.normal(size=(4, 3)).astype(np.float32)
    x_before = x.copy()
    failing = [lambda: ops.add(v, x), lambda: ops.matmul(v, x)]
    failing += [lambda: ops.take(v, [0, 9]), lambda: ops.reshape(v, (4,))]
    for fn in failing:
        with pytest.raises((ValueError, IndexError)):
            fn()
    np.testing.assert_array_equal(v.value, before)
    np.testing.assert_array_equal(x, x_before)
    with pytest.raises(ValueError):
        v.assign(np.zeros((3, 2)))
    np.testing.assert_array_equal(v.value, before)


def test_failed_op_under_tape_leaves_tape_usable():
    v = Variable(np.array([1.0, 2.0, 3.0]))
    with GradientTape() as tape:
        with pytest.raises(errors.ShapeError):
            ops.add(v, np.ones(4, np.float32))
        loss = ops.sum(ops.square(v))
    np.testing.assert_allclose(tape.gradient(loss, v), [2.0, 4.0, 6.0])
    np.testing.assert_array_equal(v.value, [1.0, 2.0, 3.0])


def test_variable_integer_overflow_is_reported():
    with pytest.raises(OverflowError):
        ops.take(np.arange(3, dtype=np.float32), np.array([2**40]))
