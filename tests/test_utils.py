"""utils: to_categorical against `np.eye` indexing, pad_sequences against an
element-by-element reference, set_random_seed / get_random_seed, and normalize
against float64 norms (NumPy, Variable and symbolic paths)."""

import random
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from helpers import make_array
from pyfuncnet import Variable, initializers, utils
from pyfuncnet._function import Function
from pyfuncnet._symbolic import KerasTensor

# ----------------------------------------------------------------------------
# to_categorical


@given(
    shape=st.sampled_from([(0,), (1,), (7,), (5, 1), (1, 1), (3, 4), (2, 3, 1), (2, 1, 3)]),
    num_classes=st.integers(1, 6),
    seed=st.integers(0, 2**31),
)
def test_to_categorical_matches_identity_rows(shape, num_classes, seed):
    labels = np.random.default_rng(seed).integers(0, num_classes, shape)
    out = utils.to_categorical(labels, num_classes)
    # Keras drops a trailing axis of size 1 (on inputs of rank >= 2) first.
    squeezed = labels[..., 0] if len(shape) > 1 and shape[-1] == 1 else labels
    np.testing.assert_array_equal(out, np.eye(num_classes)[squeezed])
    assert out.dtype == np.float64


def test_to_categorical_infers_the_class_count_and_takes_lists_and_floats():
    np.testing.assert_array_equal(utils.to_categorical([0, 2, 1]), np.eye(3)[[0, 2, 1]])
    np.testing.assert_array_equal(utils.to_categorical([[1], [3]]), [[0, 1, 0, 0], [0, 0, 0, 1]])
    np.testing.assert_array_equal(utils.to_categorical(np.array([1.0, 0.0])), [[0, 1], [1, 0]])
    assert utils.to_categorical(np.zeros(0, int), num_classes=4).shape == (0, 4)
    assert utils.to_categorical(3, num_classes=5).tolist() == [0, 0, 0, 1, 0]


@pytest.mark.parametrize(
    "args, match",
    [
        (([0, 3], 3), "label 3"),
        (([-1, 1], 3), "label -1"),
        (([0.5, 1.0], 3), "integer"),
        ((["a", "b"], 2), "integer"),
        (([], None), "num_classes"),
        (([0, 1], 2.5), "num_classes"),
    ],
)
def test_to_categorical_errors(args, match):
    with pytest.raises(ValueError, match=match):
        utils.to_categorical(*args)


# ----------------------------------------------------------------------------
# pad_sequences


def _pad_ref(seqs, maxlen, padding, truncating, value):
    """Element by element: which source element lands in each output position."""
    out = np.full((len(seqs), maxlen), value, dtype=np.float64)
    for i, s in enumerate(seqs):
        kept = list(s)
        while len(kept) > maxlen:
            kept.pop(0 if truncating == "pre" else -1)
        offset = maxlen - len(kept) if padding == "pre" else 0
        for j, e in enumerate(kept):
            out[i, offset + j] = e
    return out


@given(
    seqs=st.lists(st.lists(st.integers(1, 99), max_size=6), max_size=5),
    maxlen=st.one_of(st.none(), st.integers(0, 7)),
    padding=st.sampled_from(["pre", "post"]),
    truncating=st.sampled_from(["pre", "post"]),
    value=st.sampled_from([0, -1]),
)
def test_pad_sequences(seqs, maxlen, padding, truncating, value):
    out = utils.pad_sequences(seqs, maxlen=maxlen, padding=padding, truncating=truncating, value=value)
    length = max((len(s) for s in seqs), default=0) if maxlen is None else maxlen
    assert out.dtype == np.int32 and out.shape == (len(seqs), length)
    np.testing.assert_array_equal(out, _pad_ref(seqs, length, padding, truncating, value))


def test_pad_sequences_by_hand_and_with_array_elements():
    np.testing.assert_array_equal(utils.pad_sequences([[1, 2, 3], [4]], maxlen=2), [[2, 3], [0, 4]])
    np.testing.assert_array_equal(
        utils.pad_sequences([[1, 2, 3], [4]], padding="post", truncating="post", maxlen=2), [[1, 2], [4, 0]]
    )
    out = utils.pad_sequences([np.ones((2, 3)), [], np.zeros((1, 3))], dtype="float32", value=0.5)
    assert out.shape == (3, 2, 3) and out.dtype == np.float32
    np.testing.assert_array_equal(out[1], np.full((2, 3), 0.5))
    np.testing.assert_array_equal(out[2], [[0.5] * 3, [0.0] * 3])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"padding": "middle"}, "padding"),
        ({"truncating": "both"}, "truncating"),
        ({"maxlen": -1}, "maxlen"),
        ({"value": "x"}, "value"),
    ],
)
def test_pad_sequences_argument_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        utils.pad_sequences([[1, 2]], **kwargs)


def test_pad_sequences_sequence_errors():
    with pytest.raises(ValueError, match="sequence 1"):
        utils.pad_sequences([[1], 5])
    with pytest.raises(ValueError, match="shape"):
        utils.pad_sequences([np.ones((1, 2)), np.ones((1, 3))])


# ----------------------------------------------------------------------------
# Seeds


def test_get_random_seed_is_none_until_set(tmp_path):
    code = "from pyfuncnet import utils; print(utils.get_random_seed())"
    # A fresh interpreter, run outside the source tree (whose pyfuncnet has no
    # compiled core) so it imports the installed package.
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path)
    assert out.stdout.strip() == "None"


def _draws():
    return (
        random.random(),
        float(np.random.rand()),
        initializers.GlorotUniform()((3, 3)),
        initializers.RandomNormal()((4,)),
    )


def test_set_random_seed_reseeds_every_generator():
    utils.set_random_seed(2024)
    assert utils.get_random_seed() == 2024
    first = _draws()
    utils.set_random_seed(2024)
    second = _draws()
    assert first[:2] == second[:2]
    for a, b in zip(first[2:], second[2:]):
        np.testing.assert_array_equal(a, b)
    utils.set_random_seed(2025)
    third = _draws()
    assert first[0] != third[0] and first[1] != third[1]
    assert not np.array_equal(first[2], third[2])
    assert utils.get_random_seed() == 2025


@pytest.mark.parametrize("seed", [1.5, "1", True, None, -1, 2**32])
def test_set_random_seed_rejects_non_seeds(seed):
    before = utils.get_random_seed()
    with pytest.raises(ValueError, match="seed"):
        utils.set_random_seed(seed)
    assert utils.get_random_seed() == before


def test_numpy_integer_seeds_are_accepted():
    utils.set_random_seed(np.int64(5))
    assert utils.get_random_seed() == 5 and type(utils.get_random_seed()) is int


# ----------------------------------------------------------------------------
# normalize


def _normalize_ref(x, axis, order):
    norm = np.sum(np.abs(x) ** order, axis=axis, keepdims=True) ** (1.0 / order)
    return x / np.where(norm == 0, 1.0, norm)


@given(
    shape=st.sampled_from([(1,), (5,), (3, 4), (2, 3, 4), (4, 0)]),
    order=st.sampled_from([1, 2, 3]),
    seed=st.integers(0, 2**31),
    data=st.data(),
)
def test_normalize_numpy(shape, order, seed, data):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    x = np.random.default_rng(seed).standard_normal(shape)
    out = utils.normalize(x, axis=axis, order=order)
    np.testing.assert_allclose(out, _normalize_ref(x, axis, order), rtol=1e-12, atol=1e-15)
    assert out.dtype == np.float64


def test_normalize_by_hand_and_zero_vectors():
    np.testing.assert_allclose(utils.normalize(np.array([[3.0, 4.0], [0.0, 0.0]])), [[0.6, 0.8], [0.0, 0.0]])
    np.testing.assert_allclose(utils.normalize(np.array([[3.0, 4.0]]), order=1), [[3 / 7, 4 / 7]])
    # axis 0 normalises columns.
    np.testing.assert_allclose(utils.normalize(np.array([[3.0, 1.0], [4.0, 0.0]]), axis=0), [[0.6, 1.0], [0.8, 0.0]])


@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("axis", [0, -1])
def test_normalize_tensors(order, axis):
    x = make_array((4, 5), seed=order)
    x[1] = 0.0  # a zero row: divided by epsilon, stays zero
    want = _normalize_ref(x.astype(np.float64), axis, order)
    np.testing.assert_allclose(utils.normalize(Variable(x), axis=axis, order=order), want, rtol=2e-5, atol=1e-6)
    t = KerasTensor((4, 5))
    out = utils.normalize(t, axis=axis, order=order)
    assert isinstance(out, KerasTensor) and out.shape == (4, 5)
    (got,) = Function([t], [out])(x)
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-6)


def test_normalize_tensor_divides_tiny_norms_by_epsilon():
    x = np.array([[3e-8, 4e-8]], dtype=np.float32)  # norm 5e-8 < epsilon = 1e-7
    np.testing.assert_allclose(utils.normalize(Variable(x)), [[0.3, 0.4]], rtol=1e-5)


@pytest.mark.parametrize("kwargs, match", [({"order": 0}, "order"), ({"order": 1.5}, "order"), ({"axis": "a"}, "axis")])
def test_normalize_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        utils.normalize(np.ones((2, 2)), **kwargs)
