"""Tests of `pyfuncnet.metrics`.

Metric functions and objects against NumPy references written here: several
`update_state` calls accumulating, sample weights, `reset_state`; confusion counts,
precision and recall against direct threshold comparisons; AUC against
hand-computed areas and an independent reference (direct comparisons, trapezoids,
numerical integration of the interpolated PR curve); the `resolve` rules of
`compile(metrics=...)`; lookup, serialization and error messages.
"""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_losses import (
    ref_bce,
    ref_categorical_hinge,
    ref_cce,
    ref_hinge,
    ref_kld,
    ref_log_cosh,
    ref_mae,
    ref_mape,
    ref_mse,
    ref_msle,
    ref_poisson,
    ref_scce,
    ref_squared_hinge,
)

from pyfuncnet import losses, metrics

EPS = 1e-7
seeds = st.integers(0, 2**32 - 1)
batches = st.sampled_from([0, 1, 2, 3, 5, 8])


def _f32(x):
    return np.asarray(x, dtype=np.float32)


# ----------------------------------------------------------------------------
# Accuracy functions


def ref_in_top_k(labels, scores, k):
    """A label is in the top k when fewer than k scores of its row are larger."""
    out = np.zeros(labels.shape, bool)
    for i, (label, row) in enumerate(zip(labels, scores)):
        out[i] = 0 <= label < row.size and np.sum(row > row[label]) < k
    return out


@given(batch=batches, classes=st.sampled_from([1, 2, 3, 7]), seed=seeds, threshold=st.floats(0.05, 0.95))
def test_accuracy_functions(batch, classes, seed, threshold):
    rng = np.random.default_rng(seed)
    scores = _f32(rng.uniform(0, 1, (batch, classes)))
    labels = rng.integers(0, classes, (batch,))
    one_hot = np.eye(classes)[labels]
    binary = rng.integers(0, 2, (batch, classes))

    got = metrics.binary_accuracy(binary, scores, threshold=threshold)
    np.testing.assert_array_equal(got, (binary == (scores > np.float32(threshold))).astype(np.float32))
    assert got.dtype == np.float32

    expected = (labels == np.argmax(scores, axis=-1)).astype(np.float32)
    np.testing.assert_array_equal(metrics.categorical_accuracy(one_hot, scores), expected)
    np.testing.assert_array_equal(metrics.sparse_categorical_accuracy(labels, scores), expected)
    np.testing.assert_array_equal(metrics.sparse_categorical_accuracy(labels[:, None], scores), expected)
    np.testing.assert_array_equal(metrics.accuracy(labels, labels[::-1]), (labels == labels[::-1]).astype(np.float32))

    for k in (1, 2, 5):
        want = ref_in_top_k(labels, scores, k).astype(np.float32)
        np.testing.assert_array_equal(metrics.top_k_categorical_accuracy(one_hot, scores, k=k), want)
        np.testing.assert_array_equal(metrics.sparse_top_k_categorical_accuracy(labels, scores, k=k), want)
        np.testing.assert_array_equal(
            metrics.sparse_top_k_categorical_accuracy(labels[:, None], scores, k=k), want[:, None]
        )


def test_top_k_counts_ties_at_the_boundary_and_flattens_sequences():
    scores = _f32([[[0.5, 0.5, 0.1], [0.2, 0.3, 0.3]]])  # (1, 2, 3)
    # Label 1 of the first step ties with the top score: in the top 1.
    np.testing.assert_array_equal(metrics.sparse_top_k_categorical_accuracy([[1, 0]], scores, k=1), [[1.0, 0.0]])
    np.testing.assert_array_equal(metrics.sparse_top_k_categorical_accuracy([[2, 0]], scores, k=2), [[0.0, 0.0]])


# ----------------------------------------------------------------------------
# Mean, Sum and the mean of per-sample functions


def ref_weighted_mean(batches_of_values, batches_of_weights):
    """Each sample's values averaged, then the weighted mean over all samples
    (full-shape weights: weighted per value, divided by each sample's mean weight)."""
    def rows(x):
        x = np.asarray(x, np.float64)
        return x.reshape(x.shape[0], int(np.prod(x.shape[1:])))

    total = count = 0.0
    for v, w in zip(batches_of_values, batches_of_weights):
        v = rows(v)
        w = np.ones((len(v), 1)) if w is None else rows(w)
        total += (v * w).mean(axis=1).sum()
        count += w.mean(axis=1).sum()
    return total / count if count else 0.0


@given(
    sizes=st.lists(batches, min_size=1, max_size=4),
    width=st.sampled_from([None, 1, 3]),
    weights=st.sampled_from([None, "sample", "full"]),
    seed=seeds,
)
def test_mean_accumulates_weighted_values(sizes, width, weights, seed):
    rng = np.random.default_rng(seed)
    mean, total = metrics.Mean(), metrics.Sum()
    values_seen, weights_seen = [], []
    for n in sizes:
        shape = (n,) if width is None else (n, width)
        v = rng.uniform(-2, 2, shape)
        w = {None: None, "sample": rng.uniform(0, 2, (n,)), "full": rng.uniform(0, 2, shape)}[weights]
        mean.update_state(v, sample_weight=w)
        total.update_state(v, sample_weight=w)
        values_seen.append(v)
        weights_seen.append(w)
    assert isinstance(mean.result(), float) and mean.name == "mean" and total.name == "sum"
    np.testing.assert_allclose(mean.result(), ref_weighted_mean(values_seen, weights_seen), rtol=1e-10, atol=1e-12)
    want_sum = sum(
        float(np.sum(v * (1.0 if w is None else (w if w.ndim == v.ndim else w.reshape(-1, *([1] * (v.ndim - 1)))))))
        for v, w in zip(values_seen, weights_seen)
    )
    np.testing.assert_allclose(total.result(), want_sum, rtol=1e-10, atol=1e-12)
    mean.reset_state()
    total.reset_state()
    assert mean.result() == 0.0 and total.result() == 0.0


def test_mean_with_scalar_weight_and_zero_weights():
    m = metrics.Mean()
    m.update_state([1.0, 3.0], sample_weight=[0.0, 0.0])
    assert m.result() == 0.0  # nothing counted: no 0 / 0
    m.update_state([2.0, 4.0], sample_weight=[1.0, 3.0])
    assert m.result() == pytest.approx(3.5)


def _one_hot(rng, shape):
    return _f32(np.eye(shape[-1])[rng.integers(0, shape[-1], shape[:-1])])


def _ref_cosine_similarity(t, p):
    return np.sum(t * p, axis=-1) / (np.linalg.norm(t, axis=-1) * np.linalg.norm(p, axis=-1))


# class -> (float64 per-sample reference, y_true maker, y_pred maker)
MEAN_METRICS = {
    metrics.MeanSquaredError: (ref_mse, "real", "real"),
    metrics.MeanAbsoluteError: (ref_mae, "real", "real"),
    metrics.MeanAbsolutePercentageError: (ref_mape, "away", "real"),
    metrics.MeanSquaredLogarithmicError: (ref_msle, "positive", "positive"),
    metrics.LogCoshError: (ref_log_cosh, "real", "real"),
    metrics.Hinge: (ref_hinge, "binary", "real"),
    metrics.SquaredHinge: (ref_squared_hinge, "binary", "real"),
    metrics.CategoricalHinge: (ref_categorical_hinge, "one_hot", "real"),
    metrics.KLDivergence: (ref_kld, "probs", "probs"),
    metrics.Poisson: (ref_poisson, "positive", "positive"),
    metrics.BinaryCrossentropy: (ref_bce, "binary", "probs"),
    metrics.CategoricalCrossentropy: (ref_cce, "one_hot", "probs"),
    metrics.SparseCategoricalCrossentropy: (ref_scce, "labels", "probs"),
    metrics.CosineSimilarity: (_ref_cosine_similarity, "away", "away"),
    metrics.Accuracy: (lambda t, p: (t == p).astype(float)[:, 0], "labels_column", "labels_column"),
    metrics.BinaryAccuracy: (lambda t, p: (t == (p > 0.5)).astype(float), "binary", "probs"),
    metrics.CategoricalAccuracy: (
        lambda t, p: (np.argmax(t, -1) == np.argmax(p, -1)).astype(float),
        "one_hot",
        "probs",
    ),
    metrics.SparseCategoricalAccuracy: (lambda t, p: (t == np.argmax(p, -1)).astype(float), "labels", "probs"),
    metrics.TopKCategoricalAccuracy: (
        lambda t, p: ref_in_top_k(np.argmax(t, -1), p, 5).astype(float),
        "one_hot",
        "probs",
    ),
    metrics.SparseTopKCategoricalAccuracy: (
        lambda t, p: ref_in_top_k(t.astype(int), p, 5).astype(float),
        "labels",
        "probs",
    ),
}

DEFAULT_NAMES = {
    metrics.MeanSquaredError: "mean_squared_error",
    metrics.MeanAbsoluteError: "mean_absolute_error",
    metrics.MeanAbsolutePercentageError: "mean_absolute_percentage_error",
    metrics.MeanSquaredLogarithmicError: "mean_squared_logarithmic_error",
    metrics.LogCoshError: "logcosh",
    metrics.Hinge: "hinge",
    metrics.SquaredHinge: "squared_hinge",
    metrics.CategoricalHinge: "categorical_hinge",
    metrics.KLDivergence: "kl_divergence",
    metrics.Poisson: "poisson",
    metrics.BinaryCrossentropy: "binary_crossentropy",
    metrics.CategoricalCrossentropy: "categorical_crossentropy",
    metrics.SparseCategoricalCrossentropy: "sparse_categorical_crossentropy",
    metrics.CosineSimilarity: "cosine_similarity",
    metrics.Accuracy: "accuracy",
    metrics.BinaryAccuracy: "binary_accuracy",
    metrics.CategoricalAccuracy: "categorical_accuracy",
    metrics.SparseCategoricalAccuracy: "sparse_categorical_accuracy",
    metrics.TopKCategoricalAccuracy: "top_k_categorical_accuracy",
    metrics.SparseTopKCategoricalAccuracy: "sparse_top_k_categorical_accuracy",
    metrics.RootMeanSquaredError: "root_mean_squared_error",
}


def _make(kind, rng, n, classes=7):
    shape = (n, classes)
    return {
        "real": lambda: _f32(rng.uniform(-2, 2, shape)),
        "away": lambda: _f32(rng.choice([-1.0, 1.0], shape) * rng.uniform(0.2, 2, shape)),
        "positive": lambda: _f32(rng.uniform(0.05, 3, shape)),
        "probs": lambda: _f32(rng.uniform(0.02, 0.98, shape)),
        "binary": lambda: _f32(rng.integers(0, 2, shape)),
        "one_hot": lambda: _one_hot(rng, shape),
        "labels": lambda: rng.integers(0, classes, (n,)),
        "labels_column": lambda: rng.integers(0, 3, (n, 1)),
    }[kind]()


@pytest.mark.parametrize("cls", list(MEAN_METRICS), ids=lambda c: c.__name__)
@given(sizes=st.lists(batches, min_size=1, max_size=3), weighted=st.booleans(), seed=seeds)
def test_mean_metrics_accumulate_like_the_reference(cls, sizes, weighted, seed):
    ref, true_kind, pred_kind = MEAN_METRICS[cls]
    rng = np.random.default_rng(seed)
    m = cls()
    per_sample, weights = [], []
    for n in sizes:
        t, p = _make(true_kind, rng, n), _make(pred_kind, rng, n)
        w = _f32(rng.uniform(0, 2, (n,))) if weighted else None
        m.update_state(t, p, sample_weight=w)
        per_sample.append(ref(np.asarray(t, np.float64), np.asarray(p, np.float64)))
        weights.append(w)
    np.testing.assert_allclose(m.result(), ref_weighted_mean(per_sample, weights), rtol=2e-5, atol=1e-6)
    m.reset_state()
    assert m.result() == 0.0


@pytest.mark.parametrize("cls", list(DEFAULT_NAMES), ids=lambda c: c.__name__)
def test_default_names_and_config_round_trip(cls):
    m = cls()
    assert m.name == DEFAULT_NAMES[cls] and m.dtype == "float32"
    config = m.get_config()
    assert config["name"] == DEFAULT_NAMES[cls] and config["dtype"] == "float32"
    again = cls.from_config({**config, "name": "renamed"})
    assert type(again) is cls and again.get_config() == {**config, "name": "renamed"}
    restored = metrics.deserialize(metrics.serialize(m))
    assert type(restored) is cls and restored.get_config() == config


@given(sizes=st.lists(batches, min_size=1, max_size=3), weighted=st.booleans(), seed=seeds)
def test_root_mean_squared_error(sizes, weighted, seed):
    rng = np.random.default_rng(seed)
    m = metrics.RootMeanSquaredError()
    squares, weights = [], []
    for n in sizes:
        t, p = rng.uniform(-2, 2, (n, 3)), rng.uniform(-2, 2, (n, 3))
        w = rng.uniform(0, 2, (n,)) if weighted else None
        m.update_state(t, p, sample_weight=w)
        squares.append((t - p) ** 2)
        weights.append(w)
    np.testing.assert_allclose(m.result(), math.sqrt(ref_weighted_mean(squares, weights)), rtol=1e-9)


def test_metric_options_reach_the_function():
    rng = np.random.default_rng(5)
    logits = _f32(rng.uniform(-3, 3, (6, 4)))
    t = _f32(rng.integers(0, 2, (6, 4)))
    m = metrics.BinaryCrossentropy(from_logits=True, label_smoothing=0.2)
    m.update_state(t, logits)
    np.testing.assert_allclose(m.result(), np.mean(ref_bce(t, logits.astype(np.float64), True, 0.2)), rtol=1e-5)
    m = metrics.BinaryAccuracy(threshold=0.7)
    m.update_state([[1], [1], [0]], [[0.8], [0.6], [0.75]])
    assert m.result() == pytest.approx(1 / 3)
    m = metrics.TopKCategoricalAccuracy(k=2)
    m.update_state([[0, 0, 1], [0, 1, 0]], [[0.5, 0.3, 0.2], [0.3, 0.4, 0.3]])
    assert m.result() == 0.5


def test_keras_documented_examples():
    m = metrics.CategoricalAccuracy()
    m.update_state([[0, 0, 1], [0, 1, 0]], [[0.1, 0.9, 0.8], [0.05, 0.95, 0]], sample_weight=[0.7, 0.3])
    assert m.result() == pytest.approx(0.3)
    m = metrics.SparseCategoricalAccuracy()
    m.update_state([[2], [1]], [[0.1, 0.6, 0.3], [0.05, 0.95, 0]], sample_weight=[0.7, 0.3])
    assert m.result() == pytest.approx(0.3)
    m = metrics.BinaryAccuracy()
    m.update_state([[1], [1], [0], [0]], [[0.98], [1], [0], [0.6]], sample_weight=[1, 0, 0, 1])
    assert m.result() == pytest.approx(0.5)
    m = metrics.Accuracy()
    m.update_state([[1], [2], [3], [4]], [[0], [2], [3], [4]], sample_weight=[1, 1, 0, 0])
    assert m.result() == pytest.approx(0.5)


# ----------------------------------------------------------------------------
# Confusion counts, precision and recall


def ref_counts(y_true, y_pred, thresholds, weights=None):
    """(tp, fp, tn, fn) per threshold by direct comparison `p > t` in float32."""
    p = _f32(y_pred).ravel()
    positive = np.asarray(y_true).ravel() != 0
    w = np.ones(p.shape) if weights is None else np.broadcast_to(weights, np.shape(y_pred)).ravel()
    rows = []
    for t in thresholds:
        predicted = p > np.float32(t)
        rows.append(
            [
                np.sum(w * (positive & predicted)),
                np.sum(w * (~positive & predicted)),
                np.sum(w * (~positive & ~predicted)),
                np.sum(w * (positive & ~predicted)),
            ]
        )
    return np.array(rows, dtype=np.float64).T


threshold_lists = st.one_of(
    st.floats(0, 1),
    st.lists(st.floats(0, 1), min_size=1, max_size=5),
    st.sampled_from([[0.0, 0.25, 0.5, 0.75, 1.0], [0.0, 0.5, 1.0]]),  # evenly spaced: bucketed
)


@given(sizes=st.lists(batches, min_size=1, max_size=3), thresholds=threshold_lists, weighted=st.booleans(), seed=seeds)
def test_confusion_counts(sizes, thresholds, weighted, seed):
    rng = np.random.default_rng(seed)
    thr = thresholds if isinstance(thresholds, list) else [thresholds]
    made = [cls(thresholds=thresholds) for cls in (metrics.TruePositives, metrics.FalsePositives)]
    made += [cls(thresholds=thresholds) for cls in (metrics.TrueNegatives, metrics.FalseNegatives)]
    precision, recall = metrics.Precision(thresholds=thresholds), metrics.Recall(thresholds=thresholds)
    want = np.zeros((4, len(thr)))
    for n in sizes:
        t = rng.integers(0, 2, (n, 3))
        p = _f32(rng.uniform(0, 1, (n, 3)))
        w = rng.uniform(0, 2, (n, 1)) if weighted else None
        for m in made + [precision, recall]:
            m.update_state(t, p, sample_weight=None if w is None else w[:, 0])
        want += ref_counts(t, p, thr, w)
    for m, row in zip(made, want):
        got = np.atleast_1d(m.result())
        np.testing.assert_allclose(got, row, rtol=1e-9, atol=1e-9)
        assert isinstance(m.result(), float) == (len(thr) == 1)
    tp, fp, _, fn = want
    with np.errstate(invalid="ignore", divide="ignore"):
        np.testing.assert_allclose(np.atleast_1d(precision.result()), np.nan_to_num(tp / (tp + fp)), rtol=1e-9)
        np.testing.assert_allclose(np.atleast_1d(recall.result()), np.nan_to_num(tp / (tp + fn)), rtol=1e-9)


def ref_top_k_filter(p, k):
    """Only each row's k largest scores stay (the earlier index first on ties)."""
    kept = np.full(p.shape, -np.inf)
    for i, row in enumerate(p):
        order = sorted(range(row.size), key=lambda j: (-row[j], j))[:k]
        kept[i, order] = row[order]
    return kept


@given(
    batch=batches,
    seed=seeds,
    top_k=st.sampled_from([None, 1, 2]),
    class_id=st.sampled_from([None, 0, 3]),
    weighted=st.booleans(),
)
def test_precision_recall_top_k_and_class_id(batch, seed, top_k, class_id, weighted):
    rng = np.random.default_rng(seed)
    t = rng.integers(0, 2, (batch, 4))
    p = _f32(rng.uniform(0, 1, (batch, 4)))
    w = rng.uniform(0, 2, (batch,)) if weighted else None
    precision = metrics.Precision(top_k=top_k, class_id=class_id)
    recall = metrics.Recall(top_k=top_k, class_id=class_id)
    precision.update_state(t, p, sample_weight=w)
    recall.update_state(t, p, sample_weight=w)
    scores = p.astype(np.float64) if top_k is None else ref_top_k_filter(p, top_k)
    threshold = 0.5 if top_k is None else -1e10
    weights = np.ones(t.shape) if w is None else np.repeat(w[:, None], 4, axis=1)
    if class_id is not None:
        t, scores, weights = t[:, class_id], scores[:, class_id], weights[:, class_id]
    predicted, positive = scores > threshold, t != 0
    tp = np.sum(weights * (predicted & positive))
    want_p = tp / np.sum(weights * predicted) if np.sum(weights * predicted) else 0.0
    want_r = tp / np.sum(weights * positive) if np.sum(weights * positive) else 0.0
    assert precision.result() == pytest.approx(want_p) and recall.result() == pytest.approx(want_r)


def test_per_sample_weight_spreads_over_labels():
    m = metrics.TruePositives()
    m.update_state([[1, 1], [1, 0]], [[0.9, 0.8], [0.7, 0.1]], sample_weight=[2.0, 0.5])
    assert m.result() == pytest.approx(2.0 + 2.0 + 0.5)


# ----------------------------------------------------------------------------
# AUC


Y_TRUE = [0, 0, 1, 1]
Y_PRED = [0.0, 0.5, 0.3, 0.9]
# With num_thresholds=3 the thresholds are (-eps, 0.5, 1 + eps). A score counts as
# positive above a threshold: tp = [2, 1, 0], fp = [2, 0, 0], tn = [0, 2, 2],
# fn = [0, 1, 2]; so fpr = [1, 0, 0], recall = [1, .5, 0], precision = [.5, 1, 0].


@pytest.mark.parametrize(
    "curve, summation, want",
    [
        ("ROC", "interpolation", 1 * (1 + 0.5) / 2 + 0 * (0.5 + 0) / 2),
        ("ROC", "minoring", 1 * 0.5 + 0 * 0),
        ("ROC", "majoring", 1 * 1 + 0 * 0.5),
        ("PR", "minoring", 0.5 * 0.5 + 0.5 * 0),
        ("PR", "majoring", 0.5 * 1 + 0.5 * 1),
        # Interpolated PR: between the first two thresholds tp goes 2 -> 1 while
        # predicted positives go 4 -> 1: slope 1/3, intercept 1 - 1/3 = 2/3, area
        # slope * (dtp + intercept * log(4 / 1)) / positives; then tp 1 -> 0 with
        # predicted positives 1 -> 0: slope 1, area 1 * 1 / 2.
        ("PR", "interpolation", (1 / 3) * (1 + (2 / 3) * math.log(4)) / 2 + 0.5),
    ],
)
def test_auc_hand_computed(curve, summation, want):
    m = metrics.AUC(num_thresholds=3, curve=curve, summation_method=summation)
    m.update_state(Y_TRUE, Y_PRED)
    np.testing.assert_allclose(m.true_positives.numpy(), [2, 1, 0])
    np.testing.assert_allclose(m.false_positives.numpy(), [2, 0, 0])
    np.testing.assert_allclose(m.true_negatives.numpy(), [0, 2, 2])
    np.testing.assert_allclose(m.false_negatives.numpy(), [0, 1, 2])
    assert m.result() == pytest.approx(want, rel=1e-12)


def test_auc_explicit_thresholds_and_logits():
    # Thresholds (-eps, 0.4, 1 + eps): positives above 0.4 are scores 0.5 and 0.9:
    # fpr = [1, .5, 0], tpr = [1, .5, 0]; trapezoids 0.5 * 0.75 + 0.5 * 0.25.
    m = metrics.AUC(thresholds=[0.4])
    m.update_state(Y_TRUE, Y_PRED)
    assert m.result() == pytest.approx(0.5)
    assert m.num_thresholds == 3 and m.thresholds == pytest.approx([-1e-7, 0.4, 1 + 1e-7])
    p = np.array([0.1, 0.5, 0.3, 0.9])
    logits = np.log(p / (1 - p))
    a, b = metrics.AUC(num_thresholds=3), metrics.AUC(num_thresholds=3, from_logits=True)
    a.update_state(Y_TRUE, p)
    b.update_state(Y_TRUE, logits)
    assert a.result() == pytest.approx(b.result())


def test_auc_multi_label_averages_label_areas():
    # Label 0 is separated perfectly (area 1); label 1 is the hand example (0.75).
    y_true = np.array([[0, 0], [0, 0], [1, 1], [1, 1]])
    y_pred = np.array([[0.1, 0.0], [0.2, 0.5], [0.8, 0.3], [0.9, 0.9]])
    m = metrics.AUC(num_thresholds=3, multi_label=True)
    m.update_state(y_true, y_pred)
    assert m.true_positives.shape == (3, 2)
    assert m.result() == pytest.approx((1.0 + 0.75) / 2)
    weighted = metrics.AUC(num_thresholds=3, multi_label=True, label_weights=[3.0, 1.0])
    weighted.update_state(y_true, y_pred)
    assert weighted.result() == pytest.approx((3 * 1.0 + 1 * 0.75) / 4)


def ref_auc(y_true, y_pred, weights, num_thresholds, curve, summation):
    """The area from direct threshold comparisons, by the documented summation rules."""
    inner = [(i + 1) / (num_thresholds - 1) for i in range(num_thresholds - 2)]
    tp, fp, tn, fn = ref_counts(y_true, np.clip(y_pred, 0, 1), [-EPS] + inner + [1 + EPS], weights)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.nan_to_num(tp / (tp + fn))
        precision = np.nan_to_num(tp / (tp + fp))
        fpr = np.nan_to_num(fp / (fp + tn))
    if curve == "PR" and summation == "interpolation":
        return ref_pr_interpolated(tp, fp, fn)
    x, y = (fpr, recall) if curve == "ROC" else (recall, precision)
    pairs = np.stack([y[:-1], y[1:]])
    heights = {"interpolation": pairs.mean(0), "minoring": pairs.min(0), "majoring": pairs.max(0)}[summation]
    return float(np.sum((x[:-1] - x[1:]) * heights))


def ref_pr_interpolated(tp, fp, fn, points=4000):
    """Precision integrated over recall by the midpoint rule, with true and predicted
    positives varying linearly between successive thresholds."""
    area = 0.0
    for i in range(len(tp) - 1):
        high, low = tp[i] + fp[i], tp[i + 1] + fp[i + 1]
        if high <= low or tp[i] == tp[i + 1]:
            continue
        slope = (tp[i] - tp[i + 1]) / (high - low)
        predicted = low + (high - low) * (np.arange(points) + 0.5) / points
        precision = (tp[i + 1] + slope * (predicted - low)) / predicted
        area += np.sum(precision) * (high - low) / points * slope / (tp[i + 1] + fn[i + 1])
    return area


@given(
    sizes=st.lists(st.sampled_from([1, 3, 8, 20]), min_size=1, max_size=3),
    num_thresholds=st.sampled_from([2, 3, 7, 50, 200]),
    curve=st.sampled_from(["ROC", "PR"]),
    summation=st.sampled_from(["interpolation", "minoring", "majoring"]),
    weighted=st.booleans(),
    seed=seeds,
)
def test_auc_matches_reference(sizes, num_thresholds, curve, summation, weighted, seed):
    rng = np.random.default_rng(seed)
    m = metrics.AUC(num_thresholds=num_thresholds, curve=curve, summation_method=summation)
    ts, ps, ws = [], [], []
    for n in sizes:
        t = rng.integers(0, 2, (n,))
        # Scores slightly outside [0, 1] too: Keras clips them into the end buckets.
        p = _f32(rng.uniform(-0.05, 1.05, (n,)))
        w = rng.uniform(0, 2, (n,)) if weighted else None
        m.update_state(t, p, sample_weight=w)
        ts.append(t)
        ps.append(p)
        ws.append(np.ones(n) if w is None else w)
    want = ref_auc(np.concatenate(ts), np.concatenate(ps), np.concatenate(ws), num_thresholds, curve, summation)
    assert m.result() == pytest.approx(want, rel=1e-4, abs=1e-9)
    m.reset_state()
    assert m.result() == 0.0


def test_auc_config_round_trip():
    m = metrics.AUC(num_thresholds=10, curve="pr", summation_method="Minoring", name="pr_auc", label_weights=[1, 2])
    config = m.get_config()
    assert config == {
        "name": "pr_auc",
        "dtype": "float32",
        "num_thresholds": 10,
        "curve": "PR",
        "summation_method": "minoring",
        "multi_label": False,
        "num_labels": None,
        "label_weights": [1.0, 2.0],
        "from_logits": False,
    }
    assert metrics.AUC.from_config(config).get_config() == config
    explicit = metrics.AUC(thresholds=[0.7, 0.2])
    assert explicit.get_config()["thresholds"] == pytest.approx([0.2, 0.7])
    assert metrics.AUC.from_config(explicit.get_config()).thresholds == explicit.thresholds


# ----------------------------------------------------------------------------
# compile(metrics=...) resolution


RESOLVE_CASES = [
    # identifier, loss, y_true shape, y_pred shape, class, name
    ("accuracy", "binary_crossentropy", (None, 1), (None, 1), metrics.BinaryAccuracy, "accuracy"),
    ("acc", "binary_crossentropy", (None,), (None, 1), metrics.BinaryAccuracy, "acc"),
    ("accuracy", "sparse_categorical_crossentropy", (None,), (None, 10), metrics.SparseCategoricalAccuracy, "accuracy"),
    ("acc", "sparse_categorical_crossentropy", (None, 1), (None, 10), metrics.SparseCategoricalAccuracy, "acc"),
    ("acc", "sparse_categorical_crossentropy", (None, 20), (None, 20, 8), metrics.SparseCategoricalAccuracy, "acc"),
    ("accuracy", "categorical_crossentropy", (None, 10), (None, 10), metrics.CategoricalAccuracy, "accuracy"),
    # Multi-label targets with a binary loss: Keras 3 decides by shape alone.
    ("accuracy", "binary_crossentropy", (None, 10), (None, 10), metrics.CategoricalAccuracy, "accuracy"),
    ("ACC", "mse", (None,), (None, 1), metrics.BinaryAccuracy, "ACC"),
    ("crossentropy", None, (None,), (None, 5), metrics.SparseCategoricalCrossentropy, "crossentropy"),
    ("ce", None, (None, 1), (None, 1), metrics.BinaryCrossentropy, "ce"),
    ("ce", None, (None, 3), (None, 3), metrics.CategoricalCrossentropy, "ce"),
    # Targets of unknown shape: the loss tells sparse from one-hot.
    ("acc", "sparse_categorical_crossentropy", None, (None, 10), metrics.SparseCategoricalAccuracy, "acc"),
    ("acc", losses.SparseCategoricalCrossentropy(True), None, (None, 10), metrics.SparseCategoricalAccuracy, "acc"),
    ("acc", losses.sparse_categorical_crossentropy, None, (None, 10), metrics.SparseCategoricalAccuracy, "acc"),
    ("acc", "categorical_crossentropy", None, (None, 10), metrics.CategoricalAccuracy, "acc"),
    ("acc", "binary_crossentropy", None, (None, 1), metrics.BinaryAccuracy, "acc"),
    # Other strings: the metric of that name, named by the string.
    ("mae", None, (None, 1), (None, 1), metrics.MeanAbsoluteError, "mae"),
    ("mse", None, (None, 1), (None, 1), metrics.MeanSquaredError, "mse"),
    ("AUC", None, (None, 1), (None, 1), metrics.AUC, "AUC"),
    ("auc", None, (None, 1), (None, 1), metrics.AUC, "auc"),
    ("precision", None, (None, 1), (None, 1), metrics.Precision, "precision"),
    ("Recall", None, (None, 1), (None, 1), metrics.Recall, "Recall"),
    ("root_mean_squared_error", None, (None, 1), (None, 1), metrics.RootMeanSquaredError, "root_mean_squared_error"),
    ("binary_accuracy", None, (None, 1), (None, 1), metrics.BinaryAccuracy, "binary_accuracy"),
    (
        "sparse_categorical_accuracy",
        None,
        (None,),
        (None, 4),
        metrics.SparseCategoricalAccuracy,
        "sparse_categorical_accuracy",
    ),
    ("log_cosh", None, (None, 1), (None, 1), metrics.MeanMetricWrapper, "log_cosh"),
]


@pytest.mark.parametrize("identifier, loss, y_true_shape, y_pred_shape, cls, name", RESOLVE_CASES)
def test_resolve_table(identifier, loss, y_true_shape, y_pred_shape, cls, name):
    m = metrics.resolve(identifier, loss, y_true_shape, y_pred_shape)
    assert type(m) is cls and m.name == name


def test_resolved_metrics_compute_their_variant():
    scores = _f32([[0.1, 0.7, 0.2], [0.6, 0.3, 0.1]])
    sparse = metrics.resolve("acc", "sparse_categorical_crossentropy", (None,), (None, 3))
    sparse.update_state(np.array([1, 2]), scores)
    assert sparse.result() == 0.5
    categorical = metrics.resolve("accuracy", "categorical_crossentropy", (None, 3), (None, 3))
    categorical.update_state(_f32([[0, 1, 0], [1, 0, 0]]), scores)
    assert categorical.result() == 1.0
    ce = metrics.resolve("ce", None, (None,), (None, 3))
    ce.update_state(np.array([1, 0]), scores)
    assert ce.result() == pytest.approx(-(math.log(0.7) + math.log(0.6)) / 2, rel=1e-6)


def test_resolve_functions_instances_and_losses():
    assert metrics.resolve(None) is None
    instance = metrics.AUC(name="my_auc")
    assert metrics.resolve(instance, "mse", (None, 1), (None, 1)) is instance
    wrapped = metrics.resolve(ref_mse, "mse", (None, 2), (None, 2))
    assert isinstance(wrapped, metrics.MeanMetricWrapper) and wrapped.name == "ref_mse"
    wrapped.update_state(np.zeros((2, 2)), np.ones((2, 2)))
    assert wrapped.result() == 1.0
    from_loss = metrics.resolve(losses.Huber(name="h"), None, (None, 1), (None, 1))
    assert isinstance(from_loss, metrics.MeanMetricWrapper) and from_loss.name == "h"
    with pytest.raises(ValueError, match="Unknown metric: 'acuracy'"):
        metrics.resolve("acuracy", None, (None, 1), (None, 1))


# ----------------------------------------------------------------------------
# Lookup, naming, custom metrics, errors


def test_get_and_short_names():
    assert metrics.get(None) is None
    assert isinstance(metrics.get("accuracy"), metrics.Accuracy)
    assert isinstance(metrics.get("AUC"), metrics.AUC) and isinstance(metrics.get("auc"), metrics.AUC)
    assert isinstance(metrics.get("mse"), metrics.MeanSquaredError)
    assert isinstance(metrics.get(metrics.Precision), metrics.Precision)
    assert metrics.get("log_cosh") is losses.log_cosh
    assert metrics.mse is losses.mean_squared_error and metrics.mae is losses.mean_absolute_error
    assert metrics.get({"class_name": "TopKCategoricalAccuracy", "config": {"k": 3}}).k == 3
    with pytest.raises(ValueError, match="Could not interpret metric identifier"):
        metrics.get(3.5)


def test_unnamed_instances_are_numbered_as_in_keras():
    first, second = metrics.Precision(), metrics.Precision()
    assert first.name.startswith("precision") and second.name != first.name
    assert metrics.Precision(name="p").name == "p"


class Maximum(metrics.Metric):
    def __init__(self, name="maximum", dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.largest = self.add_variable((), initializer=-np.inf, name="largest")
        self.count = self.add_variable((), name="count")

    def update_state(self, y_true, y_pred, sample_weight=None):
        self.largest.assign(np.maximum(self.largest, np.max(y_pred)))
        self.count.assign_add(1)

    def result(self):
        return float(self.largest / self.count)


def test_custom_metric_subclass():
    m = Maximum()
    assert m([0], [1.0, 4.0]) == 4.0
    assert m([0], [2.0]) == 2.0  # 4 / 2 updates
    m.reset_state()
    assert float(m.largest) == 0.0 and [v.name for v in m.variables] == ["largest", "count"]
    with pytest.raises(ValueError, match="cannot assign a value of shape"):
        m.count.assign(np.zeros(2))


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match=r"threshold.*\(0, 1\)"):
        metrics.BinaryAccuracy(threshold=1.0)
    with pytest.raises(ValueError, match=r"Threshold values must be in \[0, 1\]"):
        metrics.Precision(thresholds=[0.5, 1.5])
    with pytest.raises(ValueError, match="Invalid AUC curve"):
        metrics.AUC(curve="ROCK")
    with pytest.raises(ValueError, match="summation method"):
        metrics.AUC(summation_method="trapezoid")
    with pytest.raises(ValueError, match="num_thresholds"):
        metrics.AUC(num_thresholds=1)
    with pytest.raises(ValueError, match="only when `multi_label` is True"):
        metrics.AUC(num_labels=3)
    with pytest.raises(ValueError, match="class_id"):
        metrics.Precision(class_id=1).update_state([1, 0], [0.9, 0.1])
    with pytest.raises(ValueError, match="rank 2"):
        metrics.AUC(multi_label=True).update_state([1, 0], [0.9, 0.1])
    with pytest.raises(ValueError, match="sample_weight of shape"):
        metrics.Mean().update_state(np.ones((4, 2)), sample_weight=np.ones(3))
    with pytest.raises(ValueError, match="dtype"):
        metrics.Mean(dtype="float64")
