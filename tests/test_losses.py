"""Tests of `pyfuncnet.losses`.

Every loss function and class is compared with a NumPy float64 reference written
here from Keras 3's documented formulas; then reductions, sample weights and
masks; label smoothing and logits against probabilities; symbolic graphs compiled
with `Function` against the eager results; gradients against finite differences;
lookup, serialization and error messages.
"""

import math

import numpy as np
import pytest
from helpers import check_grad, log_softmax_ref, sigmoid_ref
from hypothesis import given
from hypothesis import strategies as st

from pyfuncnet import config, errors, losses, ops
from pyfuncnet._function import Function
from pyfuncnet._symbolic import KerasTensor

EPS = 1e-7
# Keras clips probabilities to [eps, 1 - eps] in float32, where 1 - eps rounds to this.
ONE_MINUS_EPS = float(np.float32(1.0 - EPS))

seeds = st.integers(0, 2**32 - 1)
batches = st.sampled_from([0, 1, 2, 3, 5, 8])


@st.composite
def loss_shapes(draw, min_last=1):
    """(batch, [steps,] features): ranks 2 and 3, empty batches included."""
    lead = (draw(batches),) + ((draw(st.sampled_from([1, 3])),) if draw(st.booleans()) else ())
    return lead + (draw(st.sampled_from([n for n in (1, 2, 3, 7, 16) if n >= min_last])),)


# ----------------------------------------------------------------------------
# References (float64)


def ref_mse(t, p):
    return np.mean((t - p) ** 2, axis=-1)


def ref_mae(t, p):
    return np.mean(np.abs(t - p), axis=-1)


def ref_mape(t, p):
    return 100.0 * np.mean(np.abs(t - p) / np.maximum(np.abs(t), EPS), axis=-1)


def ref_msle(t, p):
    return np.mean((np.log(np.maximum(p, EPS) + 1.0) - np.log(np.maximum(t, EPS) + 1.0)) ** 2, axis=-1)


def ref_huber(t, p, delta=1.0):
    e = np.abs(p - t)
    return np.mean(np.where(e <= delta, 0.5 * e**2, delta * e - 0.5 * delta**2), axis=-1)


def ref_log_cosh(t, p):
    return np.mean(np.log(np.cosh(p - t)), axis=-1)


def ref_kld(t, p):
    t, p = np.clip(t, EPS, 1.0), np.clip(p, EPS, 1.0)
    return np.sum(t * np.log(t / p), axis=-1)


def ref_poisson(t, p):
    return np.mean(p - t * np.log(p + EPS), axis=-1)


def _plus_minus_one(t):
    # Keras maps 0/1 labels to -1/1 when the whole batch is binary.
    return 2.0 * t - 1.0 if np.all((t == 0) | (t == 1)) else t


def ref_hinge(t, p):
    return np.mean(np.maximum(1.0 - _plus_minus_one(t) * p, 0.0), axis=-1)


def ref_squared_hinge(t, p):
    return np.mean(np.maximum(1.0 - _plus_minus_one(t) * p, 0.0) ** 2, axis=-1)


def ref_categorical_hinge(t, p):
    pos = np.sum(t * p, axis=-1)
    neg = np.max((1.0 - t) * p, axis=-1)
    return np.maximum(neg - pos + 1.0, 0.0)


def ref_cosine(t, p, axis=-1):
    def unit(x):
        return x / np.linalg.norm(x, axis=axis, keepdims=True)

    return -np.sum(unit(t) * unit(p), axis=axis)


def ref_bce(t, p, from_logits=False, label_smoothing=0.0, axis=-1):
    t = t * (1.0 - label_smoothing) + 0.5 * label_smoothing
    if from_logits:
        # -log(sigmoid(x)) = log(1 + exp(-x)); -log(1 - sigmoid(x)) = log(1 + exp(x)).
        per = t * np.logaddexp(0.0, -p) + (1.0 - t) * np.logaddexp(0.0, p)
    else:
        q = np.clip(p, EPS, ONE_MINUS_EPS)
        per = -(t * np.log(q) + (1.0 - t) * np.log(1.0 - q))
    return np.mean(per, axis=axis)


def ref_cce(t, p, from_logits=False, label_smoothing=0.0, axis=-1):
    t = t * (1.0 - label_smoothing) + label_smoothing / t.shape[axis]
    if from_logits:
        log_q = log_softmax_ref(p, axis)
    else:
        log_q = np.log(np.clip(p / np.sum(p, axis=axis, keepdims=True), EPS, ONE_MINUS_EPS))
    return -np.sum(t * log_q, axis=axis)


def ref_scce(labels, p, from_logits=False, ignore_class=None):
    labels = np.asarray(labels).astype(np.int64).reshape(p.shape[:-1])
    valid = np.ones(labels.shape, bool) if ignore_class is None else labels != ignore_class
    if from_logits:
        log_q = log_softmax_ref(p)
    else:
        log_q = np.log(np.clip(p / np.sum(p, axis=-1, keepdims=True), EPS, ONE_MINUS_EPS))
    picked = np.take_along_axis(log_q, np.where(valid, labels, 0)[..., None], axis=-1)[..., 0]
    return np.where(valid, -picked, 0.0)


# ----------------------------------------------------------------------------
# Inputs


def _f32(x):
    return np.asarray(x, dtype=np.float32)


def _uniform(low, high):
    return lambda rng, shape: _f32(rng.uniform(low, high, shape))


def _away_from_zero(low, high):
    return lambda rng, shape: _f32(rng.choice([-1.0, 1.0], shape) * rng.uniform(low, high, shape))


def _hinge_labels(rng, shape):
    kind = rng.integers(3)
    values = [(0.0, 1.0), (-1.0, 1.0), (-1.0, 0.0, 1.0)][kind]
    return _f32(rng.choice(values, shape))


def _one_hot(rng, shape):
    return _f32(np.eye(shape[-1])[rng.integers(0, shape[-1], shape[:-1])])


# name -> (function, reference, y_true maker, y_pred maker)
FUNCTIONS = {
    "mean_squared_error": (losses.mean_squared_error, ref_mse, _uniform(-2, 2), _uniform(-2, 2)),
    "mean_absolute_error": (losses.mean_absolute_error, ref_mae, _uniform(-2, 2), _uniform(-2, 2)),
    "mean_absolute_percentage_error": (
        losses.mean_absolute_percentage_error,
        ref_mape,
        _away_from_zero(0.1, 2),
        _uniform(-2, 2),
    ),
    "mean_squared_logarithmic_error": (
        losses.mean_squared_logarithmic_error,
        ref_msle,
        _uniform(-0.5, 3),
        _uniform(-0.5, 3),
    ),
    "huber": (losses.huber, ref_huber, _uniform(-3, 3), _uniform(-3, 3)),
    "huber_delta": (
        lambda t, p: losses.huber(t, p, delta=0.3),
        lambda t, p: ref_huber(t, p, 0.3),
        _uniform(-3, 3),
        _uniform(-3, 3),
    ),
    "log_cosh": (losses.log_cosh, ref_log_cosh, _uniform(-3, 3), _uniform(-3, 3)),
    "kl_divergence": (losses.kl_divergence, ref_kld, _uniform(0, 1), _uniform(0.01, 1)),
    "poisson": (losses.poisson, ref_poisson, _uniform(0, 3), _uniform(0.05, 3)),
    "hinge": (losses.hinge, ref_hinge, _hinge_labels, _uniform(-2, 2)),
    "squared_hinge": (losses.squared_hinge, ref_squared_hinge, _hinge_labels, _uniform(-2, 2)),
    "categorical_hinge": (losses.categorical_hinge, ref_categorical_hinge, _one_hot, _uniform(-2, 2)),
    "cosine_similarity": (losses.cosine_similarity, ref_cosine, _away_from_zero(0.2, 2), _away_from_zero(0.2, 2)),
}


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
@given(shape=loss_shapes(), seed=seeds)
def test_loss_function_matches_reference(name, shape, seed):
    fn, ref, make_true, make_pred = FUNCTIONS[name]
    rng = np.random.default_rng(seed)
    t, p = make_true(rng, shape), make_pred(rng, shape)
    got = fn(t, p)
    assert isinstance(got, np.ndarray) and got.dtype == np.float32
    assert got.shape == shape[:-1]
    np.testing.assert_allclose(got, ref(t.astype(np.float64), p.astype(np.float64)), rtol=2e-5, atol=2e-5)


def test_loss_functions_take_lists_ints_and_matching_ranks():
    # Integer targets are cast; (batch,) targets meet (batch, 1) predictions.
    got = losses.mean_squared_error([1, 2, 3], [[1.5], [2.0], [0.0]])
    np.testing.assert_allclose(got, [0.25, 0.0, 9.0])
    got = losses.mean_absolute_error(np.array([[1], [2]], np.int64), np.array([3.0, 5.0]))
    np.testing.assert_allclose(got, [2.0, 3.0])


def test_short_names_are_the_functions():
    pairs = [
        ("mse", "MSE", losses.mean_squared_error),
        ("mae", "MAE", losses.mean_absolute_error),
        ("mape", "MAPE", losses.mean_absolute_percentage_error),
        ("msle", "MSLE", losses.mean_squared_logarithmic_error),
        ("kld", "KLD", losses.kl_divergence),
        ("bce", "BCE", losses.binary_crossentropy),
    ]
    for lower, upper, fn in pairs:
        assert getattr(losses, lower) is fn and getattr(losses, upper) is fn
        assert losses.get(lower) is fn and losses.get(upper) is fn


def test_hinge_converts_binary_labels_per_batch():
    # All labels 0/1: converted to -1/1. A -1 among them: used as given (0 stays 0).
    p = np.array([[0.5, -0.5]], np.float32)
    np.testing.assert_allclose(losses.hinge(np.array([[1.0, 0.0]]), p), [0.5])
    np.testing.assert_allclose(losses.hinge(np.array([[-1.0, 0.0]]), p), [1.25])


# ----------------------------------------------------------------------------
# Cross-entropies


@given(
    shape=loss_shapes(),
    seed=seeds,
    from_logits=st.booleans(),
    label_smoothing=st.one_of(st.just(0.0), st.floats(0.0, 1.0)),
    soft=st.booleans(),
    axis=st.sampled_from([-1, 0]),
)
def test_binary_crossentropy(shape, seed, from_logits, label_smoothing, soft, axis):
    if axis == 0:
        shape = (max(shape[0], 1),) + shape[1:]  # a mean over an empty axis is NaN
    rng = np.random.default_rng(seed)
    t = _f32(rng.uniform(0, 1, shape) if soft else rng.integers(0, 2, shape))
    p = _f32(rng.uniform(-8, 8, shape) if from_logits else rng.uniform(0.001, 0.999, shape))
    got = losses.binary_crossentropy(t, p, from_logits=from_logits, label_smoothing=label_smoothing, axis=axis)
    want = ref_bce(t.astype(np.float64), p.astype(np.float64), from_logits, label_smoothing, axis)
    assert got.shape == want.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5)


@given(shape=loss_shapes(), seed=seeds)
def test_binary_crossentropy_logits_agree_with_probabilities(shape, seed):
    rng = np.random.default_rng(seed)
    t = _f32(rng.integers(0, 2, shape))
    x = _f32(rng.uniform(-6, 6, shape))
    from_logits = losses.binary_crossentropy(t, x, from_logits=True)
    from_probs = losses.binary_crossentropy(t, _f32(sigmoid_ref(x.astype(np.float64))))
    np.testing.assert_allclose(from_logits, from_probs, rtol=1e-4, atol=1e-5)


def test_binary_crossentropy_clips_probabilities():
    # p = 0 and p = 1 are clipped to [eps, 1 - eps]: finite losses, -log(eps) at worst.
    got = losses.binary_crossentropy(np.array([[1.0], [0.0], [1.0]]), np.array([[0.0], [1.0], [1.0]]))
    want = [-math.log(EPS), -math.log(1.0 - ONE_MINUS_EPS), -math.log(ONE_MINUS_EPS)]
    np.testing.assert_allclose(got, want, rtol=1e-5)


@st.composite
def categorical_case(draw):
    shape = draw(loss_shapes(min_last=2))
    axis = draw(st.sampled_from([-1, len(shape) - 1, 0] + ([1] if len(shape) == 3 else [])))
    if axis == 0:
        shape = (max(shape[0], 2),) + shape[1:]  # the class axis needs classes
    return shape, axis


@given(
    case=categorical_case(),
    seed=seeds,
    from_logits=st.booleans(),
    label_smoothing=st.one_of(st.just(0.0), st.floats(0.0, 1.0)),
    soft=st.booleans(),
)
def test_categorical_crossentropy(case, seed, from_logits, label_smoothing, soft):
    shape, axis = case
    rng = np.random.default_rng(seed)
    moved = np.moveaxis(np.empty(shape), axis, -1).shape
    if soft:
        t = rng.dirichlet(np.ones(moved[-1]), moved[:-1])
    else:
        t = np.eye(moved[-1])[rng.integers(0, moved[-1], moved[:-1])]
    t = _f32(np.moveaxis(t.reshape(moved), -1, axis))
    # Unnormalised positive scores test the renormalisation; logits any sign.
    p = _f32(rng.uniform(-5, 5, shape) if from_logits else rng.uniform(0.01, 2.0, shape))
    got = losses.categorical_crossentropy(t, p, from_logits=from_logits, label_smoothing=label_smoothing, axis=axis)
    want = ref_cce(t.astype(np.float64), p.astype(np.float64), from_logits, label_smoothing, axis)
    assert got.shape == want.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5)


def test_categorical_crossentropy_warns_for_one_class():
    with pytest.warns(SyntaxWarning, match="binary_crossentropy"):
        losses.categorical_crossentropy(np.ones((2, 1)), np.ones((2, 1)))


@given(
    shape=loss_shapes(min_last=2),
    seed=seeds,
    from_logits=st.booleans(),
    label_column=st.booleans(),
    ignore=st.sampled_from([None, 0, 1, -1]),
)
def test_sparse_categorical_crossentropy(shape, seed, from_logits, label_column, ignore):
    rng = np.random.default_rng(seed)
    classes = shape[-1]
    labels = rng.integers(-1 if ignore == -1 else 0, classes, shape[:-1]).astype(np.int32)
    if label_column:
        labels = labels[..., None]
    p = _f32(rng.uniform(-5, 5, shape) if from_logits else rng.uniform(0.01, 2.0, shape))
    got = losses.sparse_categorical_crossentropy(labels, p, from_logits=from_logits, ignore_class=ignore)
    want = ref_scce(labels, p.astype(np.float64), from_logits, ignore)
    assert got.shape == shape[:-1] and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5)


@given(shape=loss_shapes(min_last=2), seed=seeds, from_logits=st.booleans())
def test_sparse_matches_categorical_with_one_hot_labels(shape, seed, from_logits):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, shape[-1], shape[:-1])
    p = _f32(rng.uniform(-4, 4, shape) if from_logits else rng.uniform(0.01, 1, shape))
    sparse = losses.sparse_categorical_crossentropy(labels, p, from_logits=from_logits)
    dense = losses.categorical_crossentropy(_f32(np.eye(shape[-1])[labels]), p, from_logits=from_logits)
    np.testing.assert_allclose(sparse, dense, rtol=1e-5, atol=1e-5)


def test_crossentropy_of_probabilities_keeps_nan_rows_nan():
    # Rows where an unlabelled entry renormalises to NaN (0 / 0 in a row summing to
    # 0, inf / inf) while the labelled one stays finite: Keras's loss is NaN there,
    # since 0 * ln(NaN) is NaN, as NumPy's formula gives; the last row is finite.
    p = _f32([[1.0, -1.0, 0.0], [np.inf, 1.0, 1.0], [0.3, 0.3, 0.4]])
    labels = np.array([0, 1, 1])
    t = _f32(np.eye(3)[labels])
    with np.errstate(invalid="ignore", divide="ignore"):
        want = ref_cce(t.astype(np.float64), p.astype(np.float64))
    assert np.isnan(want[:2]).all() and np.isfinite(want[2])
    np.testing.assert_allclose(losses.categorical_crossentropy(t, p), want, rtol=1e-6, equal_nan=True)
    sparse = losses.sparse_categorical_crossentropy(labels, p)
    np.testing.assert_allclose(sparse, want, rtol=1e-6, equal_nan=True)


def test_crossentropy_of_probabilities_needs_epsilon_below_one_half():
    previous = config.epsilon()
    config.set_epsilon(0.6)
    try:
        with pytest.raises(ValueError, match=r"epsilon must be in \[0, 0.5\], got 0.6"):
            losses.categorical_crossentropy(_f32([[0.0, 1.0]]), _f32([[0.4, 0.6]]))
    finally:
        config.set_epsilon(previous)


@pytest.mark.parametrize("from_logits", [False, True])
def test_sparse_labels_out_of_range_raise(from_logits):
    p = np.full((2, 3), 0.5, np.float32)
    with pytest.raises(errors.OutOfRangeError, match="3"):
        losses.sparse_categorical_crossentropy(np.array([0, 3]), p, from_logits=from_logits)
    with pytest.raises(IndexError):
        losses.sparse_categorical_crossentropy(np.array([-1, 0]), p, from_logits=from_logits)


def test_sparse_label_shape_mismatch_is_a_value_error():
    with pytest.raises(ValueError, match=r"target.shape=\(3,\), output.shape=\(2, 4\)"):
        losses.sparse_categorical_crossentropy(np.array([0, 1, 2]), np.ones((2, 4), np.float32))
    with pytest.raises(ValueError, match="last axis"):
        losses.sparse_categorical_crossentropy(np.array([0, 1]), np.ones((2, 4), np.float32), axis=0)


# ----------------------------------------------------------------------------
# Loss objects: defaults, reductions, weights, masks


CLASSES = {
    losses.MeanSquaredError: ("mean_squared_error", losses.mean_squared_error, {}),
    losses.MeanAbsoluteError: ("mean_absolute_error", losses.mean_absolute_error, {}),
    losses.MeanAbsolutePercentageError: ("mean_absolute_percentage_error", losses.mean_absolute_percentage_error, {}),
    losses.MeanSquaredLogarithmicError: ("mean_squared_logarithmic_error", losses.mean_squared_logarithmic_error, {}),
    losses.CosineSimilarity: ("cosine_similarity", losses.cosine_similarity, {"axis": -1}),
    losses.Huber: ("huber_loss", losses.huber, {"delta": 1.0}),
    losses.LogCosh: ("log_cosh", losses.log_cosh, {}),
    losses.KLDivergence: ("kl_divergence", losses.kl_divergence, {}),
    losses.Poisson: ("poisson", losses.poisson, {}),
    losses.Hinge: ("hinge", losses.hinge, {}),
    losses.SquaredHinge: ("squared_hinge", losses.squared_hinge, {}),
    losses.CategoricalHinge: ("categorical_hinge", losses.categorical_hinge, {}),
    losses.BinaryCrossentropy: (
        "binary_crossentropy",
        losses.binary_crossentropy,
        {"from_logits": False, "label_smoothing": 0.0, "axis": -1},
    ),
    losses.CategoricalCrossentropy: (
        "categorical_crossentropy",
        losses.categorical_crossentropy,
        {"from_logits": False, "label_smoothing": 0.0, "axis": -1},
    ),
    losses.SparseCategoricalCrossentropy: (
        "sparse_categorical_crossentropy",
        losses.sparse_categorical_crossentropy,
        {"from_logits": False, "ignore_class": None},
    ),
}


@pytest.mark.parametrize("cls", list(CLASSES), ids=lambda c: c.__name__)
def test_loss_class_defaults_config_and_value(cls):
    name, fn, arguments = CLASSES[cls]
    loss = cls()
    assert loss.name == name and loss.reduction == "sum_over_batch_size" and loss.dtype == "float32"
    assert loss.get_config() == {"name": name, "reduction": "sum_over_batch_size", **arguments}
    rng = np.random.default_rng(7)
    p = _f32(rng.uniform(0.1, 1.0, (6, 4)))
    t = rng.integers(0, 4, (6,)) if cls is losses.SparseCategoricalCrossentropy else _one_hot(rng, (6, 4))
    # The class is the mean of the function; its config rebuilds an equal loss.
    np.testing.assert_allclose(loss(t, p), np.mean(fn(t, p)), rtol=1e-6)
    other = cls.from_config({**loss.get_config(), "name": "renamed", "reduction": "sum"})
    assert other.name == "renamed" and other.reduction == "sum"
    np.testing.assert_allclose(other(t, p), np.sum(fn(t, p)), rtol=1e-6)


def test_positional_arguments_follow_keras_order():
    assert losses.MeanSquaredError("sum").reduction == "sum"
    bce = losses.BinaryCrossentropy(True, 0.1, -1, "none", "b")
    assert (bce.from_logits, bce.label_smoothing, bce.reduction, bce.name) == (True, 0.1, "none", "b")
    assert losses.Huber(2.0).delta == 2.0


REDUCTIONS = ["sum_over_batch_size", "mean", "sum", "mean_with_sample_weight", "none", None]


def ref_weighted(values, w):
    """Per-sample losses times weights as documented: a scalar scales all; one
    weight per sample scales that sample's losses; full-shape weights scale each."""
    if w is None:
        return values
    w = np.asarray(w, np.float64)
    if values.ndim == 1 and w.ndim == 2:
        # (batch,) losses with (batch, 1) weights: Keras gives (batch, 1).
        return values[:, None] * w
    if 0 < w.ndim < values.ndim:
        w = w.reshape(w.shape + (1,) * (values.ndim - w.ndim))
    return values * w


def ref_reduce(weighted, w, reduction):
    if reduction in (None, "none"):
        return weighted
    total = np.sum(weighted)
    if reduction == "sum":
        return total
    divisor = np.sum(w) if reduction == "mean_with_sample_weight" and w is not None else weighted.size
    return total / divisor if divisor else 0.0


@pytest.mark.parametrize("reduction", REDUCTIONS)
@given(
    batch=batches,
    steps=st.sampled_from([None, 1, 3, 5]),
    weights=st.sampled_from([None, "scalar", "sample", "sample_column", "full"]),
    seed=seeds,
)
def test_reduction_and_sample_weight(reduction, batch, steps, weights, seed):
    rng = np.random.default_rng(seed)
    shape = (batch, 4) if steps is None else (batch, steps, 4)
    t, p = _f32(rng.uniform(-1, 1, shape)), _f32(rng.uniform(-1, 1, shape))
    w = {
        None: None,
        "scalar": np.float32(rng.uniform(0.5, 2)),
        "sample": _f32(rng.uniform(0, 2, (batch,))),
        "sample_column": _f32(rng.uniform(0, 2, (batch, 1))),
        "full": _f32(rng.uniform(0, 2, shape[:-1])),
    }[weights]
    got = losses.MeanSquaredError(reduction=reduction)(t, p, sample_weight=w)
    want = ref_reduce(ref_weighted(ref_mse(t.astype(np.float64), p.astype(np.float64)), w), w, reduction)
    assert got.shape == np.shape(want) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize("reduction", ["sum_over_batch_size", "mean", "sum", "mean_with_sample_weight", "none"])
@given(batch=batches, seed=seeds, weighted=st.booleans())
def test_ignore_class_masks_the_reduction(reduction, batch, seed, weighted):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, (batch,)).astype(np.int32)
    p = _f32(rng.uniform(-3, 3, (batch, 4)))
    w = _f32(rng.uniform(0, 2, (batch,))) if weighted else None
    loss = losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=2, reduction=reduction)
    got = loss(labels, p, sample_weight=w)
    per = ref_scce(labels, p.astype(np.float64), True, 2) * (1.0 if w is None else w)
    valid = (labels != 2).astype(np.float64)
    if reduction == "none":
        want = per
    elif reduction == "sum":
        want = per.sum()
    elif reduction == "mean_with_sample_weight":
        divisor = np.sum(valid * (1.0 if w is None else w))
        want = per.sum() / divisor if divisor else 0.0
    else:
        # The mean over the entries that count (Keras adds epsilon to their number).
        want = per.sum() / (valid.sum() + EPS)
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-6)


def test_mask_on_predictions_is_combined_with_ignore_class():
    # A `_keras_mask` on y_pred (from a masking layer) also leaves entries out.
    p = KerasTensor((None, 3))
    labels = KerasTensor((None,), "int32")
    p._keras_mask = KerasTensor((None,))
    out = losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=0)(labels, p)
    x = _f32([[1, 2, 3], [0, 1, 0], [2, 2, 2], [3, 1, 0]])
    y = np.array([1, 2, 0, 2], np.int32)
    mask = _f32([1, 0, 1, 1])
    got = Function([labels, p, p._keras_mask], out)(y, x, mask)
    per = ref_scce(y, x.astype(np.float64), True)
    counted = np.array([1.0, 0.0, 0.0, 1.0])  # entry 1 masked, entry 2 ignored
    np.testing.assert_allclose(got, np.sum(per * counted) / (counted.sum() + EPS), rtol=1e-5)


def test_empty_batch_reduces_to_zero():
    loss = losses.MeanSquaredError()
    assert float(loss(np.zeros((0, 3)), np.zeros((0, 3)))) == 0.0
    assert losses.MeanSquaredError(reduction="none")(np.zeros((0, 3)), np.zeros((0, 3))).shape == (0,)


def test_sample_weight_that_does_not_broadcast_is_rejected():
    with pytest.raises(ValueError, match=r"sample_weight of shape \(3,\)"):
        losses.MeanSquaredError()(np.zeros((2, 5, 4)), np.ones((2, 5, 4)), sample_weight=np.ones(3))


# ----------------------------------------------------------------------------
# Symbolic graphs compiled with Function agree with eager calls


def _data(kind, rng, batch, classes=5):
    """(y_true, y_pred, y_true KerasTensor) for a kind of target."""
    shape = (batch, classes)
    if kind == "sparse":
        return rng.integers(0, classes, (batch,)).astype(np.int32), KerasTensor((None,), "int32")
    if kind == "sparse_column":
        return rng.integers(0, classes, (batch, 1)).astype(np.int32), KerasTensor((None, 1), "int32")
    if kind == "one_hot":
        return _one_hot(rng, shape), KerasTensor((None, classes))
    if kind == "binary":
        return _f32(rng.integers(0, 2, shape)), KerasTensor((None, classes))
    return _f32(rng.uniform(0.1, 1.0, shape)), KerasTensor((None, classes))


SYMBOLIC_CASES = [
    (losses.MeanSquaredError, {}, "real", "probs", ref_mse),
    (losses.MeanAbsoluteError, {}, "real", "probs", ref_mae),
    (losses.MeanAbsolutePercentageError, {}, "real", "probs", ref_mape),
    (losses.MeanSquaredLogarithmicError, {}, "real", "probs", ref_msle),
    (losses.CosineSimilarity, {}, "real", "probs", ref_cosine),
    (losses.Huber, {"delta": 0.2}, "real", "probs", lambda t, p: ref_huber(t, p, 0.2)),
    (losses.LogCosh, {}, "real", "probs", ref_log_cosh),
    (losses.KLDivergence, {}, "real", "probs", ref_kld),
    (losses.Poisson, {}, "real", "probs", ref_poisson),
    (losses.Hinge, {}, "binary", "logits", ref_hinge),
    (losses.SquaredHinge, {}, "binary", "logits", ref_squared_hinge),
    (losses.CategoricalHinge, {}, "one_hot", "logits", ref_categorical_hinge),
    (
        losses.BinaryCrossentropy,
        {"from_logits": True, "label_smoothing": 0.1},
        "binary",
        "logits",
        lambda t, p: ref_bce(t, p, True, 0.1),
    ),
    (losses.BinaryCrossentropy, {}, "binary", "probs", ref_bce),
    (
        losses.CategoricalCrossentropy,
        {"from_logits": True},
        "one_hot",
        "logits",
        lambda t, p: ref_cce(t, p, True),
    ),
    (
        losses.CategoricalCrossentropy,
        {"label_smoothing": 0.2},
        "one_hot",
        "probs",
        lambda t, p: ref_cce(t, p, False, 0.2),
    ),
    (
        losses.SparseCategoricalCrossentropy,
        {"from_logits": True, "ignore_class": 4},
        "sparse",
        "logits",
        None,
    ),
    (losses.SparseCategoricalCrossentropy, {}, "sparse_column", "probs", lambda t, p: ref_scce(t, p)),
    (
        losses.SparseCategoricalCrossentropy,
        {"from_logits": True},
        "sparse",
        "logits",
        lambda t, p: ref_scce(t, p, True),
    ),
]


@pytest.mark.parametrize("reduction", ["sum_over_batch_size", "none"])
@pytest.mark.parametrize("case", SYMBOLIC_CASES, ids=lambda c: f"{c[0].__name__}{c[1] or ''}")
def test_symbolic_loss_compiles_to_the_eager_values(case, reduction):
    cls, kwargs, target, prediction, ref = case
    loss = cls(reduction=reduction, **kwargs)
    rng = np.random.default_rng(3)
    y_pred = KerasTensor((None, 5))
    weight = KerasTensor((None,))
    for batch in (4, 7):
        t, y_true = _data(target, rng, batch)
        p = _f32(rng.uniform(-3, 3, (batch, 5)) if prediction == "logits" else rng.uniform(0.05, 1, (batch, 5)))
        w = _f32(rng.uniform(0, 2, (batch,)))
        out = loss(y_true, y_pred, sample_weight=weight)
        assert isinstance(out, KerasTensor) and out.dtype == "float32"
        assert out.shape == (() if reduction == "sum_over_batch_size" else (None,))
        compiled = Function([y_true, y_pred, weight], out)(t, p, w)
        eager = loss(t, p, sample_weight=w)
        np.testing.assert_allclose(compiled, eager, rtol=1e-5, atol=1e-6)
        if ref is not None:
            want = ref_weighted(ref(np.asarray(t, np.float64), p.astype(np.float64)), w)
            want = want.mean() if reduction == "sum_over_batch_size" else want
            np.testing.assert_allclose(compiled, want, rtol=2e-5, atol=2e-5)


def test_symbolic_targets_of_rank_one_meet_one_unit_outputs():
    # (batch,) targets against (batch, 1) outputs, as compile() feeds them.
    y_true, y_pred = KerasTensor((None,)), KerasTensor((None, 1))
    out = losses.BinaryCrossentropy(from_logits=True)(y_true, y_pred)
    t, x = _f32([0, 1, 1]), _f32([[0.3], [-1.0], [2.0]])
    got = Function([y_true, y_pred], out)(t, x)
    want = np.mean(ref_bce(t[:, None].astype(np.float64), x.astype(np.float64), True))
    np.testing.assert_allclose(got, want, rtol=1e-5)


# ----------------------------------------------------------------------------
# Gradients against finite differences


def _gradient_case(name):
    """(function of y_pred, float64 reference, y_pred) for a gradient check."""
    rng = np.random.default_rng(11)
    shape = (4, 3)
    real = _f32(rng.uniform(-2, 2, shape))
    probs = _f32(rng.uniform(0.1, 0.9, shape))
    labels = rng.integers(0, 3, (4,)).astype(np.int32)
    one_hot = _f32(np.eye(3)[labels])
    binary = _f32(rng.integers(0, 2, shape))
    w = _f32([0.5, 1.0, 2.0, 0.0])
    cases = {
        "mse": (lambda p: losses.mean_squared_error(real, p), lambda p: ref_mse(real, p), probs),
        "huber": (lambda p: losses.huber(real, p), lambda p: ref_huber(real, p), probs),
        "cosine": (lambda p: losses.cosine_similarity(real, p), lambda p: ref_cosine(real, p), real[::-1].copy()),
        "bce_logits": (
            lambda x: losses.binary_crossentropy(binary, x, from_logits=True, label_smoothing=0.1),
            lambda x: ref_bce(binary, x, True, 0.1),
            real,
        ),
        "bce_probs": (lambda p: losses.binary_crossentropy(binary, p), lambda p: ref_bce(binary, p), probs),
        "cce_logits": (
            lambda x: losses.categorical_crossentropy(one_hot, x, from_logits=True),
            lambda x: ref_cce(one_hot, x, True),
            real,
        ),
        "cce_probs": (lambda p: losses.categorical_crossentropy(one_hot, p), lambda p: ref_cce(one_hot, p), probs),
        "scce_logits": (
            lambda x: losses.sparse_categorical_crossentropy(labels, x, from_logits=True),
            lambda x: ref_scce(labels, x, True),
            real,
        ),
        "scce_probs": (
            lambda p: losses.sparse_categorical_crossentropy(labels, p),
            lambda p: ref_scce(labels, p),
            probs,
        ),
        "weighted_object": (
            lambda x: losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=int(labels[0]))(
                labels, x, sample_weight=w
            ),
            lambda x: np.sum(ref_scce(labels, x, True, labels[0]) * w) / (np.sum(labels != labels[0]) + EPS),
            real,
        ),
    }
    return cases[name]


@pytest.mark.parametrize(
    "name",
    [
        "mse",
        "huber",
        "cosine",
        "bce_logits",
        "bce_probs",
        "cce_logits",
        "cce_probs",
        "scce_logits",
        "scce_probs",
        "weighted_object",
    ],
)
def test_gradient_matches_finite_differences(name):
    fn, ref, y_pred = _gradient_case(name)
    check_grad(fn, lambda p: ref(p.astype(np.float64)), [y_pred], rtol=2e-3, atol=2e-4)


def test_categorical_crossentropy_gradients_reach_soft_labels_and_unnormalised_probabilities():
    # Rows that do not sum to 1: the fused op's gradients for both inputs (the
    # graph crate's autodiff test covers probabilities the clip cuts, with an
    # epsilon large enough for finite differences).
    rng = np.random.default_rng(5)
    probs = _f32(rng.uniform(0.2, 1.5, (4, 5)))
    soft = _f32(rng.dirichlet(np.ones(5), 4))
    soft[0, 3] = 0.0
    check_grad(
        lambda t, p: losses.categorical_crossentropy(t, p),
        lambda t, p: ref_cce(t, p),
        [soft, probs],
        rtol=2e-3,
        atol=2e-4,
    )


def test_compiled_sparse_crossentropy_of_probabilities_rejects_labels_out_of_range():
    labels, y_pred = KerasTensor((None,), dtype="int32"), KerasTensor((None, 3))
    f = Function([labels, y_pred], losses.sparse_categorical_crossentropy(labels, y_pred))
    p = np.full((2, 3), 0.5, np.float32)
    np.testing.assert_allclose(f(np.array([0, 2], np.int32), p), -np.log(np.full(2, 1 / 3)), rtol=1e-6)
    with pytest.raises(errors.OutOfRangeError, match="3"):
        f(np.array([0, 3], np.int32), p)


# ----------------------------------------------------------------------------
# Custom losses, lookup, serialization, errors


class CubedError(losses.Loss):
    def call(self, y_true, y_pred):
        return ops.mean(ops.abs(ops.power(ops.subtract(y_pred, y_true), 3.0)), axis=-1)


def test_custom_loss_subclass_eager_and_symbolic():
    loss = CubedError()
    # Named from the class; a second unnamed instance is numbered, as in Keras.
    assert loss.name == "cubed_error" and CubedError().name == "cubed_error_1"
    t, p = _f32([[0, 0], [1, 1]]), _f32([[1, -2], [1, 0]])
    want = np.mean(np.mean(np.abs((p - t) ** 3), axis=-1))
    np.testing.assert_allclose(loss(t, p), want)
    y_true, y_pred = KerasTensor((None, 2)), KerasTensor((None, 2))
    np.testing.assert_allclose(Function([y_true, y_pred], loss(y_true, y_pred))(t, p), want)


def test_loss_without_call_raises():
    with pytest.raises(NotImplementedError, match="call"):
        losses.Loss()(np.zeros(2), np.zeros(2))


def test_get_resolves_every_kind_of_identifier():
    assert losses.get(None) is None
    assert losses.get("mean_squared_error") is losses.mean_squared_error
    assert losses.get("sparse_categorical_crossentropy") is losses.sparse_categorical_crossentropy
    instance = losses.get("CategoricalCrossentropy")
    assert isinstance(instance, losses.CategoricalCrossentropy) and instance.name == "categorical_crossentropy"
    assert isinstance(losses.get(losses.Huber), losses.Huber)
    huber = losses.Huber(delta=3.0)
    assert losses.get(huber) is huber
    assert losses.get(ref_mse) is ref_mse
    from_dict = losses.get({"class_name": "Huber", "config": {"delta": 2.5, "name": "h", "reduction": "sum"}})
    assert (from_dict.delta, from_dict.name, from_dict.reduction) == (2.5, "h", "sum")


@pytest.mark.parametrize(
    "identifier, y_true_shape, y_pred_shape, fn, name",
    [
        ("crossentropy", (None,), (None, 10), losses.sparse_categorical_crossentropy, "crossentropy"),
        ("ce", (None, 1), (None, 10), losses.sparse_categorical_crossentropy, "ce"),
        ("ce", (None, 7), (None, 7, 10), losses.sparse_categorical_crossentropy, "ce"),
        ("ce", (None, 1), (None, 1), losses.binary_crossentropy, "ce"),
        ("ce", (None,), (None, 1), losses.binary_crossentropy, "ce"),
        ("CE", (None, 3), (None, 3), losses.categorical_crossentropy, "CE"),
        ("mse", None, None, losses.mean_squared_error, "mse"),
        ("mean_absolute_error", None, None, losses.mean_absolute_error, "mean_absolute_error"),
        (ref_mse, None, None, ref_mse, "ref_mse"),
    ],
)
def test_resolve_wraps_functions_as_compile_does(identifier, y_true_shape, y_pred_shape, fn, name):
    loss = losses.resolve(identifier, y_true_shape, y_pred_shape)
    assert type(loss) is losses.LossFunctionWrapper and loss.fn is fn and loss.name == name


def test_resolve_objects_and_sparse_labels():
    assert losses.resolve(None) is None
    huber = losses.Huber()
    assert losses.resolve(huber) is huber
    assert isinstance(losses.resolve("SparseCategoricalCrossentropy"), losses.SparseCategoricalCrossentropy)
    with pytest.raises(ValueError, match="needs y_true_shape"):
        losses.resolve("ce")
    # The wrapped sparse loss keeps int labels, eagerly and in a compiled graph.
    loss = losses.resolve("sparse_categorical_crossentropy")
    labels, x, w = np.array([2, 0, 1], np.int32), _f32([[1, 2, 3], [0, 0, 1], [2, 1, 0]]), _f32([1, 0.5, 2])
    want = np.mean(ref_scce(labels, x.astype(np.float64)) * w)
    np.testing.assert_allclose(loss(labels, x, sample_weight=w), want, rtol=1e-6)
    y_true, y_pred, weight = KerasTensor((None,), "int32"), KerasTensor((None, 3)), KerasTensor((None,))
    compiled = Function([y_true, y_pred, weight], loss(y_true, y_pred, sample_weight=weight))
    np.testing.assert_allclose(compiled(labels, x, w), want, rtol=1e-6)


def test_get_unknown_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="Unknown loss: 'mean_squared_eror'.*mean_squared_error"):
        losses.get("mean_squared_eror")
    with pytest.raises(ValueError, match="Could not interpret loss identifier: 42"):
        losses.get(42)


@pytest.mark.parametrize("cls", list(CLASSES), ids=lambda c: c.__name__)
def test_serialize_round_trip(cls):
    loss = cls(reduction="sum", name="custom")
    config = losses.serialize(loss)
    assert config["module"] == "keras.losses" and config["class_name"] == cls.__name__
    assert config["registered_name"] is None
    restored = losses.deserialize(config)
    assert type(restored) is cls and restored.get_config() == loss.get_config()


def test_deserialize_reads_keras_configs():
    # As Keras 3 writes a loss into compile_config.
    config = {
        "module": "keras.losses",
        "class_name": "BinaryCrossentropy",
        "config": {
            "name": "bce",
            "reduction": "sum_over_batch_size",
            "from_logits": True,
            "label_smoothing": 0.0,
            "axis": -1,
        },
        "registered_name": None,
    }
    loss = losses.deserialize(config)
    assert isinstance(loss, losses.BinaryCrossentropy) and loss.from_logits and loss.name == "bce"
    fn = {
        "module": "keras.losses",
        "class_name": "function",
        "config": "mean_squared_error",
        "registered_name": "mean_squared_error",
    }
    assert losses.deserialize(fn) is losses.mean_squared_error
    assert losses.serialize(losses.mean_squared_error) == fn
    assert losses.deserialize("mse") is losses.mean_squared_error


def test_function_wrapper_config_round_trip():
    wrapper = losses.LossFunctionWrapper(losses.huber, name="h", reduction="sum", delta=0.5)
    config = wrapper.get_config()
    assert config["delta"] == 0.5 and config["fn"]["config"] == "huber"
    restored = losses.LossFunctionWrapper.from_config(config)
    assert restored.fn is losses.huber and restored.get_config() == config
    t, p = np.zeros((3, 2)), _f32(np.arange(6).reshape(3, 2))
    np.testing.assert_allclose(restored(t, p), np.sum(ref_huber(t, p.astype(np.float64), 0.5)), rtol=1e-6)


def test_custom_objects_in_deserialize():
    config = losses.serialize(CubedError(name="cubed"))
    assert config["registered_name"] == "CubedError"
    with pytest.raises(ValueError, match="Unknown loss"):
        losses.deserialize(config)
    restored = losses.deserialize(config, custom_objects={"CubedError": CubedError})
    assert isinstance(restored, CubedError) and restored.name == "cubed"


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match=r"reduction.*Received: reduction='avg'"):
        losses.MeanSquaredError(reduction="avg")
    with pytest.raises(ValueError, match="label_smoothing must be in"):
        losses.BinaryCrossentropy(label_smoothing=1.5)
    with pytest.raises(ValueError, match="label_smoothing must be in"):
        losses.categorical_crossentropy(np.ones((1, 2)), np.ones((1, 2)), label_smoothing=-0.1)
    with pytest.raises(ValueError, match="`axis` must be of type `int`"):
        losses.categorical_crossentropy(np.ones((1, 2)), np.ones((1, 2)), axis=True)
    with pytest.raises(ValueError, match="dtype"):
        losses.MeanSquaredError(dtype="float64")
    with pytest.raises(TypeError, match="fn"):
        losses.LossFunctionWrapper("mse")
