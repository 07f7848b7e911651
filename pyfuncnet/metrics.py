"""Metrics, as `keras.metrics`.

A metric object works on arrays: `update_state(y_true, y_pred, sample_weight)`
folds a batch into float64 accumulators, `result()` reads them (a Python float, or
a float64 array for per-threshold results) and `reset_state()` zeroes them. The
trainer calls it with each batch's NumPy predictions, except for the accuracies
where they have a graph form of a batch's sum (unweighted, unmasked, one value per
sample): the trainer compiles that into its steps and folds in the sums they
return, the same values.
Metrics that are loss functions (`mse`, `binary_crossentropy`, ...) compute their
per-sample values with `pyfuncnet.losses`; the rest compute in NumPy.

`resolve` turns the entries of `compile(metrics=[...])` into metric objects,
choosing the binary, categorical or sparse variant of "accuracy" / "crossentropy"
from the shapes of the targets and predictions as Keras 3 does.
"""

import inspect

import numpy as np

from pyfuncnet import losses, ops
from pyfuncnet._symbolic import get_keras_mask
from pyfuncnet.losses import (  # noqa: F401 - re-exported under their metric names
    KLD,
    MAE,
    MAPE,
    MSE,
    MSLE,
    binary_crossentropy,
    categorical_crossentropy,
    categorical_hinge,
    hinge,
    kl_divergence,
    kld,
    log_cosh,
    mae,
    mape,
    mean_absolute_error,
    mean_absolute_percentage_error,
    mean_squared_error,
    mean_squared_logarithmic_error,
    mse,
    msle,
    poisson,
    sparse_categorical_crossentropy,
    squared_hinge,
)

# What Keras substitutes for predictions outside the top k.
_NEG_INF = -1e10


# ----------------------------------------------------------------------------
# State


class MetricVariable(np.lib.mixins.NDArrayOperatorsMixin):
    """A float64 accumulator of a metric, as Keras metric variables.

    Arithmetic and NumPy functions see its value, so `self.total / self.count`
    works in `result()`.

    Args:
        value: the initial value.
        name: a name for messages.

    Example:
        >>> v = MetricVariable(np.zeros(()), name="total")
        >>> v.assign_add(2.5)
        >>> float(v)
        2.5
    """

    def __init__(self, value, name):
        self._value = np.array(value, dtype=np.float64)
        self.name = name

    @property
    def value(self):
        """The current value (a float64 array)."""
        return self._value

    @property
    def shape(self):
        return self._value.shape

    @property
    def dtype(self):
        return "float64"

    def numpy(self):
        """A copy of the value."""
        return self._value.copy()

    def assign(self, value):
        """Replaces the value; the shape must not change."""
        new = np.asarray(value, dtype=np.float64)
        if new.shape != self._value.shape:
            raise ValueError(
                f"Metric variable '{self.name}': cannot assign a value of shape {new.shape} "
                f"to a variable of shape {self._value.shape}"
            )
        self._value = new.copy()

    def assign_add(self, delta):
        """Adds `delta` (broadcast to the variable's shape)."""
        self.assign(self._value + np.asarray(delta, dtype=np.float64))

    def assign_sub(self, delta):
        """Subtracts `delta` (broadcast to the variable's shape)."""
        self.assign(self._value - np.asarray(delta, dtype=np.float64))

    def __array__(self, dtype=None, copy=None):
        return self._value if dtype is None else self._value.astype(dtype)

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        inputs = tuple(x._value if isinstance(x, MetricVariable) else x for x in inputs)
        return getattr(ufunc, method)(*inputs, **kwargs)

    def __float__(self):
        return float(self._value)

    def __getitem__(self, key):
        return self._value[key]

    def __len__(self):
        return len(self._value)

    def __repr__(self):
        return f"<MetricVariable name={self.name}, value={self._value}>"


def _as_result(value):
    """A Python float for a scalar, a float64 array otherwise."""
    value = np.asarray(value, dtype=np.float64)
    return float(value) if value.ndim == 0 else value


def _divide_no_nan(numerator, denominator):
    numerator = np.asarray(numerator, dtype=np.float64)
    denominator = np.asarray(denominator, dtype=np.float64)
    zero = denominator == 0
    return np.where(zero, 0.0, numerator / np.where(zero, 1.0, denominator))


def _match_ranks(x1, x2, expand_rank_1=True):
    """Keras's rank matching (see `losses.squeeze_or_expand_to_same_rank`) on arrays."""
    return losses._match_ranks(x1, x2, expand_rank_1, np.expand_dims, np.squeeze)


class Metric:
    """Base class of metrics: state accumulated over batches.

    Subclasses create their state with `add_variable` in `__init__`, and implement
    `update_state` and `result`.

    Args:
        dtype: the result dtype; only float32 (the default) is supported (the
            state itself is float64).
        name: the metric name (default: the snake-case class name, numbered from
            the second unnamed instance on, as Keras does).

    Example:
        >>> class Maximum(Metric):
        ...     def __init__(self, name="maximum", dtype=None):
        ...         super().__init__(name=name, dtype=dtype)
        ...         self.largest = self.add_variable((), initializer=-np.inf, name="largest")
        ...     def update_state(self, y_true, y_pred, sample_weight=None):
        ...         self.largest.assign(max(float(self.largest), float(np.max(y_pred))))
        ...     def result(self):
        ...         return float(self.largest)
        >>> m = Maximum()
        >>> m.update_state(None, np.array([1.0, 3.0]))
        >>> m.result()
        3.0
    """

    def __init__(self, dtype=None, name=None):
        self.name = name or losses._auto_name(type(self).__name__)
        self._dtype = losses._standardize_dtype(dtype)
        self._variables = []

    @property
    def dtype(self):
        """The result dtype ("float32", as Keras reports it)."""
        return self._dtype

    @property
    def variables(self):
        """The metric's state variables."""
        return list(self._variables)

    def add_variable(self, shape=(), initializer="zeros", dtype=None, aggregation="sum", name=None):
        """Creates a float64 state variable (zeroed again by `reset_state`).

        Args:
            shape: its shape.
            initializer: "zeros", "ones", a number, an array, or a callable
                `initializer(shape, dtype=...)` (as Keras initializers are called).
            dtype: ignored (state is float64); accepted for Keras compatibility.
            aggregation: ignored (there is one replica); accepted for Keras
                compatibility.
            name: its name.

        Returns:
            A `MetricVariable`.
        """
        if not hasattr(self, "_variables"):
            raise RuntimeError(f"{type(self).__name__}: call super().__init__() before add_variable()")
        shape = tuple(shape)
        if isinstance(initializer, str):
            constants = {"zeros": 0.0, "ones": 1.0}
            if initializer not in constants:
                raise ValueError(
                    f"add_variable: initializer must be 'zeros', 'ones', a value or a callable; "
                    f"received {initializer!r}"
                )
            value = np.full(shape, constants[initializer])
        elif callable(initializer):
            value = initializer(shape, dtype="float32")
        else:
            value = np.broadcast_to(np.asarray(initializer, dtype=np.float64), shape)
        variable = MetricVariable(value, name or f"variable_{len(self._variables)}")
        if variable.shape != shape:
            raise ValueError(f"add_variable: the initializer gave shape {variable.shape}, expected {shape}")
        self._variables.append(variable)
        return variable

    add_weight = add_variable

    def update_state(self, *args, **kwargs):
        """Folds a batch into the state; implemented by subclasses."""
        raise NotImplementedError(f"{type(self).__name__} must implement update_state()")

    def result(self):
        """The metric value from the state; implemented by subclasses."""
        raise NotImplementedError(f"{type(self).__name__} must implement result()")

    def reset_state(self):
        """Zeroes every state variable."""
        for variable in self._variables:
            variable.assign(np.zeros(variable.shape))

    def __call__(self, *args, **kwargs):
        """`update_state(*args, **kwargs)`, then `result()`."""
        self.update_state(*args, **kwargs)
        return self.result()

    def get_config(self):
        """The constructor arguments, JSON-serialisable."""
        return {"name": self.name, "dtype": self.dtype}

    @classmethod
    def from_config(cls, config):
        """A metric built from `get_config()`'s dict."""
        return cls(**config)

    def __repr__(self):
        return f"<{type(self).__name__} name={self.name}>"


# ----------------------------------------------------------------------------
# Means and sums


def _reduce_to_samplewise(values, sample_weight, reduce_fn):
    """Per-sample values (reduced over all but the first axis) and the matching
    weights, as Keras's reduction metrics prepare them."""
    values = np.asarray(values, dtype=np.float64)
    if sample_weight is not None:
        sample_weight = np.asarray(sample_weight, dtype=np.float64)
        values, sample_weight = _match_ranks(values, sample_weight)
        weight_ndim = sample_weight.ndim
        if values.ndim > weight_ndim:
            values = reduce_fn(values, axis=tuple(range(weight_ndim, values.ndim)))
        try:
            sample_weight = np.broadcast_to(sample_weight, values.shape)
        except ValueError:
            raise ValueError(
                f"sample_weight of shape {sample_weight.shape} cannot be broadcast to values of shape {values.shape}"
            ) from None
        values = values * sample_weight
        if weight_ndim > 1:
            sample_weight = reduce_fn(sample_weight, axis=tuple(range(1, weight_ndim)))
    if values.ndim > 1:
        values = reduce_fn(values, axis=tuple(range(1, values.ndim)))
    return values, sample_weight


class Sum(Metric):
    """The (weighted) sum of all values seen.

    Args:
        name: the metric name.
        dtype: see `Metric`.

    Example:
        >>> m = Sum()
        >>> m.update_state([1, 3, 5, 7])
        >>> m.result()
        16.0
    """

    def __init__(self, name="sum", dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.total = self.add_variable((), name="total")

    def update_state(self, values, sample_weight=None):
        """Adds `sum(values * sample_weight)`.

        Args:
            values: an array-like of values.
            sample_weight: optional weights broadcastable to `values`.
        """
        values, _ = _reduce_to_samplewise(values, sample_weight, np.sum)
        self.total.assign_add(np.sum(values))

    def result(self):
        return _as_result(self.total)


class Mean(Metric):
    """The (weighted) mean of all values seen: `sum(values * w) / sum(w)`.

    Args:
        name: the metric name.
        dtype: see `Metric`.

    Example:
        >>> m = Mean()
        >>> m.update_state([1, 3, 5, 7], sample_weight=[1, 1, 0, 0])
        >>> m.result()
        2.0
    """

    def __init__(self, name="mean", dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.total = self.add_variable((), name="total")
        self.count = self.add_variable((), name="count")

    def update_state(self, values, sample_weight=None):
        """Folds in `values`, each sample weighted by `sample_weight`.

        Args:
            values: an array-like; values beyond the first axis are averaged per sample.
            sample_weight: optional weights: a scalar, one per sample, or one per value.
        """
        values, sample_weight = _reduce_to_samplewise(values, sample_weight, np.mean)
        self.total.assign_add(np.sum(values))
        if sample_weight is not None:
            self.count.assign_add(np.sum(sample_weight))
        else:
            self.count.assign_add(values.shape[0] if values.ndim else 1)

    def result(self):
        return _as_result(_divide_no_nan(self.total, self.count))

    def _add_batch_sum(self, total, count):
        """Folds in a batch's values summed elsewhere (see
        `MeanMetricWrapper._batch_sum_in_graph`): `count` unweighted values adding up to
        `total`."""
        self.total.assign_add(total)
        self.count.assign_add(count)


class MeanMetricWrapper(Mean):
    """The mean of `fn(y_true, y_pred, **kwargs)` over all samples seen.

    Args:
        fn: a function returning per-sample (or per-element) values.
        name: the metric name.
        dtype: see `Metric`.
        **kwargs: passed to `fn`.

    Example:
        >>> m = MeanMetricWrapper(mean_absolute_error, name="mae")
        >>> m.update_state(np.array([[0.0], [0.0]]), np.array([[1.0], [3.0]]))
        >>> m.result()
        2.0
    """

    def __init__(self, fn, name=None, dtype=None, **kwargs):
        if not callable(fn):
            raise TypeError(f"MeanMetricWrapper: `fn` must be callable; received {fn!r}")
        super().__init__(name=name, dtype=dtype)
        self._fn = fn
        self._fn_kwargs = kwargs

    def update_state(self, y_true, y_pred, sample_weight=None):
        """Folds in `fn(y_true, y_pred)` weighted by `sample_weight`.

        Args:
            y_true: the targets.
            y_pred: the predictions.
            sample_weight: optional weights, one per sample or per value.
        """
        mask = get_keras_mask(y_pred)
        values = self._fn(y_true, y_pred, **self._fn_kwargs)
        if mask is not None:
            # Masked entries (padding steps) weigh 0, as in Keras.
            mask = np.asarray(mask, dtype=np.float64)
            if sample_weight is None:
                sample_weight = mask
            else:
                mask, sample_weight = _match_ranks(mask, np.asarray(sample_weight, dtype=np.float64))
                sample_weight = sample_weight * mask
        super().update_state(values, sample_weight=sample_weight)

    def _batch_sum_in_graph(self, y_true, y_pred):
        """The sum of a batch's values as a symbolic scalar, for a compiled step to
        compute beside the loss, where each sample has one value: what `update_state`
        adds to `total` without weights or a mask (the caller checks those), and
        `count` grows by the batch size. None for functions without such a form, for
        shapes that give a sample several values, and for subclasses that update
        their state their own way.

        Args:
            y_true: the symbolic targets, as the step feeds them.
            y_pred: the model's symbolic output.
        """
        if type(self).update_state is not MeanMetricWrapper.update_state or type(self).result is not Mean.result:
            return None
        if "update_state" in vars(self) or "result" in vars(self):
            return None
        # By identity: a user's callable need not be hashable.
        in_graph = next((form for fn, form in _BATCH_SUMS_IN_GRAPH if fn is self._fn), None)
        return None if in_graph is None else in_graph(y_true, y_pred, **self._fn_kwargs)

    def get_config(self):
        config = super().get_config()
        config["fn"] = serialize(self._fn)
        config.update(self._fn_kwargs)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if "fn" in config:
            config["fn"] = deserialize(config["fn"])
        return cls(**config)


class _BuiltinMeanMetric(MeanMetricWrapper):
    """A mean of one of the built-in functions: its keyword arguments become
    attributes, and its config is its constructor arguments."""

    def __init__(self, fn, name, dtype, **kwargs):
        super().__init__(fn, name=name, dtype=dtype, **kwargs)
        for key, value in kwargs.items():
            setattr(self, key, value)

    def get_config(self):
        config = Metric.get_config(self)
        config.update(self._fn_kwargs)
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**config)


# ----------------------------------------------------------------------------
# Accuracy


def accuracy(y_true, y_pred):
    """1.0 where `y_pred == y_true`, else 0.0 (elementwise).

    Args:
        y_true: the targets.
        y_pred: the predictions.

    Returns:
        A float32 array.

    Example:
        >>> accuracy(np.array([1, 2]), np.array([1, 3]))
        array([1., 0.], dtype=float32)
    """
    y_pred = np.asarray(y_pred)
    y_true = np.asarray(y_true).astype(y_pred.dtype)
    y_true, y_pred = _match_ranks(y_true, y_pred)
    return np.equal(y_true, y_pred).astype(np.float32)


def binary_accuracy(y_true, y_pred, threshold=0.5):
    """1.0 where `(y_pred > threshold) == y_true`, else 0.0 (elementwise).

    Args:
        y_true: 0/1 targets.
        y_pred: probabilities (or scores compared with `threshold`).
        threshold: the decision threshold.

    Returns:
        A float32 array.

    Example:
        >>> binary_accuracy(np.array([[1], [0]]), np.array([[0.7], [0.6]]))
        array([[1.],
               [0.]], dtype=float32)
    """
    y_pred = np.asarray(y_pred, dtype=np.float32)
    y_true = np.asarray(y_true, dtype=np.float32)
    y_true, y_pred = _match_ranks(y_true, y_pred)
    predicted = (y_pred > np.float32(threshold)).astype(np.float32)
    return np.equal(y_true, predicted).astype(np.float32)


def categorical_accuracy(y_true, y_pred):
    """1.0 where `argmax(y_true, -1) == argmax(y_pred, -1)`, else 0.0.

    Args:
        y_true: one-hot targets, shape `(..., classes)`.
        y_pred: scores of the same shape.

    Returns:
        A float32 array with the class axis removed.

    Example:
        >>> categorical_accuracy(np.array([[0, 1], [1, 0]]), np.array([[0.2, 0.8], [0.3, 0.7]]))
        array([1., 0.], dtype=float32)
    """
    labels = np.argmax(np.asarray(y_true), axis=-1)
    y_pred = np.asarray(y_pred)
    labels_shape = labels.shape
    if labels.ndim == y_pred.ndim:
        labels = np.squeeze(labels, -1)
    matches = np.equal(labels, np.argmax(y_pred, axis=-1)).astype(np.float32)
    return matches.reshape(labels_shape)


def sparse_categorical_accuracy(y_true, y_pred):
    """1.0 where `y_true == argmax(y_pred, -1)`, else 0.0.

    Args:
        y_true: integer labels, shape `(...)` or `(..., 1)`.
        y_pred: scores, shape `(..., classes)`.

    Returns:
        A float32 array of the labels' shape (a trailing size-1 axis dropped).

    Example:
        >>> sparse_categorical_accuracy(np.array([[1], [1]]), np.array([[0.2, 0.8], [0.3, 0.1]]))
        array([1., 0.], dtype=float32)
    """
    y_pred = np.asarray(y_pred, dtype=np.float32)
    y_true = np.asarray(y_true, dtype=np.float32)
    true_shape = y_true.shape
    if y_true.ndim == y_pred.ndim and y_true.shape[-1] == 1:
        y_true = np.squeeze(y_true, -1)
    matches = np.equal(y_true, np.argmax(y_pred, axis=-1)).astype(np.float32).reshape(true_shape)
    if matches.ndim > 1 and matches.shape[-1] == 1:
        matches = np.squeeze(matches, -1)
    return matches


# The accuracies' batch sums as graph ops, for one value per sample (predictions of
# shape (batch, classes), or (batch, 1) for binary ones): the same matches as the
# NumPy functions above (labels compared as float32, argmax taking the first maximum
# and a NaN as NumPy's does), summed in float32, exact below 2**24 samples a batch.


def _matches_sum(matches):
    return ops.sum(ops.cast(matches, "float32"))


def _binary_accuracy_sum(y_true, y_pred, threshold=0.5):
    if threshold is None or len(y_pred.shape) != 2 or y_pred.shape[-1] != 1:
        return None
    labels = ops.cast(y_true, "float32")
    if len(labels.shape) == 1:
        labels = ops.expand_dims(labels, -1)
    elif len(labels.shape) != 2 or labels.shape[-1] != 1:
        return None
    predicted = ops.cast(ops.greater(y_pred, np.float32(threshold)), "float32")
    return _matches_sum(ops.equal(labels, predicted))


def _categorical_accuracy_sum(y_true, y_pred):
    if len(y_true.shape) != 2 or len(y_pred.shape) != 2:
        return None
    return _matches_sum(ops.equal(ops.argmax(y_true, axis=-1), ops.argmax(y_pred, axis=-1)))


def _sparse_categorical_accuracy_sum(y_true, y_pred):
    if len(y_pred.shape) != 2:
        return None
    labels = ops.cast(y_true, "float32")
    if len(labels.shape) == 2 and labels.shape[-1] == 1:
        labels = ops.squeeze(labels, -1)
    elif len(labels.shape) != 1:
        return None
    return _matches_sum(ops.equal(labels, ops.cast(ops.argmax(y_pred, axis=-1), "float32")))


_BATCH_SUMS_IN_GRAPH = (
    (binary_accuracy, _binary_accuracy_sum),
    (categorical_accuracy, _categorical_accuracy_sum),
    (sparse_categorical_accuracy, _sparse_categorical_accuracy_sum),
)


def _in_top_k(labels, scores, k):
    """Whether each label's score is among the `k` largest of its row (ties at the
    k-th value count as inside). Labels outside `[0, classes)` are never inside."""
    classes = scores.shape[-1]
    inside_range = (labels >= 0) & (labels < classes)
    if k >= classes:
        return inside_range
    if k <= 0:
        return np.zeros(labels.shape, dtype=bool)
    kth_largest = np.partition(scores, classes - k, axis=-1)[:, classes - k]
    safe = np.where(inside_range, labels, 0)
    label_scores = np.take_along_axis(scores, safe[:, None], axis=-1)[:, 0]
    return inside_range & (label_scores >= kth_largest)


def _top_k_matches(labels, y_pred, k):
    """Top-k matches of label indices against scores, shaped like the labels."""
    y_pred = np.asarray(y_pred, dtype=np.float32)
    labels_shape = labels.shape
    scores = y_pred.reshape(-1, y_pred.shape[-1]) if y_pred.ndim > 2 else y_pred
    flat = labels.reshape(-1).astype(np.int64)
    return _in_top_k(flat, scores, int(k)).astype(np.float32).reshape(labels_shape)


def top_k_categorical_accuracy(y_true, y_pred, k=5):
    """1.0 where the true class (`argmax(y_true)`) is among the `k` highest scores.

    Args:
        y_true: one-hot targets, shape `(..., classes)`.
        y_pred: scores of the same shape.
        k: how many top scores count.

    Returns:
        A float32 array with the class axis removed.

    Example:
        >>> top_k_categorical_accuracy(np.array([[0, 0, 1]]), np.array([[0.5, 0.3, 0.2]]), k=2)
        array([0.], dtype=float32)
    """
    return _top_k_matches(np.argmax(np.asarray(y_true), axis=-1), y_pred, k)


def sparse_top_k_categorical_accuracy(y_true, y_pred, k=5):
    """1.0 where the integer label is among the `k` highest scores.

    Args:
        y_true: integer labels, shape `(batch,)` or `(batch, 1)`.
        y_pred: scores, shape `(batch, classes)`.
        k: how many top scores count.

    Returns:
        A float32 array of the labels' shape.

    Example:
        >>> sparse_top_k_categorical_accuracy(np.array([1]), np.array([[0.5, 0.3, 0.2]]), k=2)
        array([1.], dtype=float32)
    """
    return _top_k_matches(np.asarray(y_true), y_pred, k)


class Accuracy(_BuiltinMeanMetric):
    """How often predictions equal labels (see `accuracy`).

    Args:
        name: the metric name.
        dtype: see `Metric`.

    Example:
        >>> m = Accuracy()
        >>> m.update_state([[1], [2], [3], [4]], [[0], [2], [3], [4]])
        >>> m.result()
        0.75
    """

    def __init__(self, name="accuracy", dtype=None):
        super().__init__(accuracy, name, dtype)


class BinaryAccuracy(_BuiltinMeanMetric):
    """How often thresholded predictions match binary labels (see `binary_accuracy`).

    Args:
        name: the metric name.
        dtype: see `Metric`.
        threshold: in (0, 1); predictions above it count as 1.

    Example:
        >>> m = BinaryAccuracy()
        >>> m.update_state([[1], [1], [0], [0]], [[0.98], [1], [0], [0.6]])
        >>> m.result()
        0.75
    """

    def __init__(self, name="binary_accuracy", dtype=None, threshold=0.5):
        if threshold is not None and not 0 < threshold < 1:
            raise ValueError(
                f"Invalid value for argument `threshold`. Expected a value in interval (0, 1). "
                f"Received: threshold={threshold}"
            )
        super().__init__(binary_accuracy, name, dtype, threshold=threshold)


class CategoricalAccuracy(_BuiltinMeanMetric):
    """How often the top prediction matches the one-hot label (see `categorical_accuracy`).

    Args:
        name: the metric name.
        dtype: see `Metric`.

    Example:
        >>> m = CategoricalAccuracy()
        >>> m.update_state([[0, 0, 1], [0, 1, 0]], [[0.1, 0.9, 0.8], [0.05, 0.95, 0]])
        >>> m.result()
        0.5
    """

    def __init__(self, name="categorical_accuracy", dtype=None):
        super().__init__(categorical_accuracy, name, dtype)


class SparseCategoricalAccuracy(_BuiltinMeanMetric):
    """How often the top prediction matches the integer label (see
    `sparse_categorical_accuracy`).

    Args:
        name: the metric name.
        dtype: see `Metric`.

    Example:
        >>> m = SparseCategoricalAccuracy()
        >>> m.update_state([[2], [1]], [[0.1, 0.6, 0.3], [0.05, 0.95, 0]])
        >>> m.result()
        0.5
    """

    def __init__(self, name="sparse_categorical_accuracy", dtype=None):
        super().__init__(sparse_categorical_accuracy, name, dtype)


class TopKCategoricalAccuracy(_BuiltinMeanMetric):
    """How often the one-hot label is among the top `k` predictions.

    Args:
        k: how many top predictions count.
        name: the metric name.
        dtype: see `Metric`.

    Example:
        >>> m = TopKCategoricalAccuracy(k=1)
        >>> m.update_state([[0, 0, 1], [0, 1, 0]], [[0.1, 0.9, 0.8], [0.05, 0.95, 0]])
        >>> m.result()
        0.5
    """

    def __init__(self, k=5, name="top_k_categorical_accuracy", dtype=None):
        super().__init__(top_k_categorical_accuracy, name, dtype, k=k)


class SparseTopKCategoricalAccuracy(_BuiltinMeanMetric):
    """How often the integer label is among the top `k` predictions.

    Args:
        k: how many top predictions count.
        name: the metric name.
        dtype: see `Metric`.

    Example:
        >>> m = SparseTopKCategoricalAccuracy(k=1)
        >>> m.update_state([2, 1], [[0.1, 0.9, 0.8], [0.05, 0.95, 0]])
        >>> m.result()
        0.5
    """

    def __init__(self, k=5, name="sparse_top_k_categorical_accuracy", dtype=None):
        super().__init__(sparse_top_k_categorical_accuracy, name, dtype, k=k)


# ----------------------------------------------------------------------------
# Regression and probabilistic metrics


def cosine_similarity(y_true, y_pred, axis=-1):
    """Cosine similarity `sum(normalize(y_true) * normalize(y_pred), axis)`: 1 for
    the same direction, -1 for opposite ones, 0 when either vector is zero.

    Args:
        y_true: the targets.
        y_pred: the predictions, the same shape.
        axis: the axis along which the similarity is computed.

    Returns:
        A float64 array with `axis` removed.

    Example:
        >>> cosine_similarity(np.array([[0.0, 1.0], [1.0, 1.0]]), np.array([[1.0, 0.0], [-1.0, -1.0]]))
        array([ 0., -1.])
    """
    y_true = np.asarray(y_true, dtype=np.float64)
    y_pred = np.asarray(y_pred, dtype=np.float64)
    y_true, y_pred = _match_ranks(y_true, y_pred)

    def normalize(x):
        norm = np.sqrt(np.sum(np.square(x), axis=axis, keepdims=True))
        return x / np.maximum(norm, 1e-12)

    return np.sum(normalize(y_true) * normalize(y_pred), axis=axis)


class MeanSquaredError(_BuiltinMeanMetric):
    """Mean of `mean_squared_error` over the samples.

    Args:
        name: the metric name.
        dtype: see `Metric`.

    Example:
        >>> m = MeanSquaredError()
        >>> m.update_state([[0, 1], [0, 0]], [[1, 1], [0, 0]])
        >>> m.result()
        0.25
    """

    def __init__(self, name="mean_squared_error", dtype=None):
        super().__init__(mean_squared_error, name, dtype)


class MeanAbsoluteError(_BuiltinMeanMetric):
    """Mean of `mean_absolute_error` over the samples.

    Args:
        name: the metric name.
        dtype: see `Metric`.

    Example:
        >>> m = MeanAbsoluteError()
        >>> m.update_state([[0, 1], [0, 0]], [[1, 1], [0, 0]])
        >>> m.result()
        0.25
    """

    def __init__(self, name="mean_absolute_error", dtype=None):
        super().__init__(mean_absolute_error, name, dtype)


class MeanAbsolutePercentageError(_BuiltinMeanMetric):
    """Mean of `mean_absolute_percentage_error` over the samples.

    Args:
        name: the metric name.
        dtype: see `Metric`.

    Example:
        >>> m = MeanAbsolutePercentageError()
        >>> m.update_state([[2.0, 4.0]], [[1.0, 4.0]])
        >>> m.result()
        25.0
    """

    def __init__(self, name="mean_absolute_percentage_error", dtype=None):
        super().__init__(mean_absolute_percentage_error, name, dtype)


class MeanSquaredLogarithmicError(_BuiltinMeanMetric):
    """Mean of `mean_squared_logarithmic_error` over the samples.

    Args:
        name: the metric name.
        dtype: see `Metric`.

    Example:
        >>> m = MeanSquaredLogarithmicError()
        >>> m.update_state([[0.0, 0.0]], [[0.0, 0.0]])
        >>> m.result()
        0.0
    """

    def __init__(self, name="mean_squared_logarithmic_error", dtype=None):
        super().__init__(mean_squared_logarithmic_error, name, dtype)


class RootMeanSquaredError(Mean):
    """`sqrt(mean(square(y_pred - y_true)))` over all values seen.

    Args:
        name: the metric name.
        dtype: see `Metric`.

    Example:
        >>> m = RootMeanSquaredError()
        >>> m.update_state([[0, 1], [0, 0]], [[1, 1], [0, 0]])
        >>> m.result()
        0.5
    """

    def __init__(self, name="root_mean_squared_error", dtype=None):
        super().__init__(name=name, dtype=dtype)

    def update_state(self, y_true, y_pred, sample_weight=None):
        """Folds in the squared errors, weighted by `sample_weight`.

        Args:
            y_true: the targets.
            y_pred: the predictions.
            sample_weight: optional weights, one per sample or per value.
        """
        y_true = np.asarray(y_true, dtype=np.float64)
        y_pred = np.asarray(y_pred, dtype=np.float64)
        y_true, y_pred = _match_ranks(y_true, y_pred)
        super().update_state(np.square(y_pred - y_true), sample_weight=sample_weight)

    def result(self):
        return _as_result(np.sqrt(_divide_no_nan(self.total, self.count)))


class CosineSimilarity(_BuiltinMeanMetric):
    """Mean cosine similarity (see `cosine_similarity`).

    Args:
        name: the metric name.
        dtype: see `Metric`.
        axis: the axis along which the similarity is computed.

    Example:
        >>> m = CosineSimilarity()
        >>> m.update_state([[0.0, 1.0], [1.0, 1.0]], [[1.0, 0.0], [1.0, 1.0]])
        >>> round(m.result(), 6)
        0.5
    """

    def __init__(self, name="cosine_similarity", dtype=None, axis=-1):
        super().__init__(cosine_similarity, name, dtype, axis=axis)


class LogCoshError(_BuiltinMeanMetric):
    """Mean of `log_cosh` over the samples.

    Args:
        name: the metric name.
        dtype: see `Metric`.

    Example:
        >>> m = LogCoshError()
        >>> m.update_state([[0.0]], [[0.0]])
        >>> m.result()
        0.0
    """

    def __init__(self, name="logcosh", dtype=None):
        super().__init__(log_cosh, name, dtype)


class Hinge(_BuiltinMeanMetric):
    """Mean of `hinge` over the samples.

    Args:
        name: the metric name.
        dtype: see `Metric`.

    Example:
        >>> m = Hinge()
        >>> m.update_state([[1.0, 0.0]], [[0.5, 0.5]])
        >>> m.result()
        1.0
    """

    def __init__(self, name="hinge", dtype=None):
        super().__init__(hinge, name, dtype)


class SquaredHinge(_BuiltinMeanMetric):
    """Mean of `squared_hinge` over the samples.

    Args:
        name: the metric name.
        dtype: see `Metric`.

    Example:
        >>> m = SquaredHinge()
        >>> m.update_state([[1.0, 0.0]], [[0.5, 0.5]])
        >>> m.result()
        1.25
    """

    def __init__(self, name="squared_hinge", dtype=None):
        super().__init__(squared_hinge, name, dtype)


class CategoricalHinge(_BuiltinMeanMetric):
    """Mean of `categorical_hinge` over the samples.

    Args:
        name: the metric name.
        dtype: see `Metric`.

    Example:
        >>> m = CategoricalHinge()
        >>> m.update_state([[0.0, 1.0]], [[0.5, 0.5]])
        >>> m.result()
        1.0
    """

    def __init__(self, name="categorical_hinge", dtype=None):
        super().__init__(categorical_hinge, name, dtype)


class KLDivergence(_BuiltinMeanMetric):
    """Mean of `kl_divergence` over the samples.

    Args:
        name: the metric name.
        dtype: see `Metric`.

    Example:
        >>> m = KLDivergence()
        >>> m.update_state([[0.5, 0.5]], [[0.5, 0.5]])
        >>> m.result()
        0.0
    """

    def __init__(self, name="kl_divergence", dtype=None):
        super().__init__(kl_divergence, name, dtype)


class Poisson(_BuiltinMeanMetric):
    """Mean of `poisson` over the samples.

    Args:
        name: the metric name.
        dtype: see `Metric`.

    Example:
        >>> m = Poisson()
        >>> m.update_state([[0.0]], [[2.0]])
        >>> m.result()
        2.0
    """

    def __init__(self, name="poisson", dtype=None):
        super().__init__(poisson, name, dtype)


class BinaryCrossentropy(_BuiltinMeanMetric):
    """Mean of `binary_crossentropy` over the samples.

    Args:
        name: the metric name.
        dtype: see `Metric`.
        from_logits: whether `y_pred` holds logits.
        label_smoothing: in [0, 1] (see `losses.binary_crossentropy`).

    Example:
        >>> m = BinaryCrossentropy(from_logits=True)
        >>> m.update_state([[1.0]], [[0.0]])
        >>> round(m.result(), 6)
        0.693147
    """

    def __init__(self, name="binary_crossentropy", dtype=None, from_logits=False, label_smoothing=0):
        super().__init__(
            binary_crossentropy, name, dtype, from_logits=from_logits, label_smoothing=label_smoothing
        )


class CategoricalCrossentropy(_BuiltinMeanMetric):
    """Mean of `categorical_crossentropy` over the samples.

    Args:
        name: the metric name.
        dtype: see `Metric`.
        from_logits: whether `y_pred` holds logits.
        label_smoothing: in [0, 1] (see `losses.categorical_crossentropy`).
        axis: the class axis.

    Example:
        >>> m = CategoricalCrossentropy()
        >>> m.update_state([[0.0, 1.0]], [[0.5, 0.5]])
        >>> round(m.result(), 6)
        0.693147
    """

    def __init__(self, name="categorical_crossentropy", dtype=None, from_logits=False, label_smoothing=0, axis=-1):
        super().__init__(
            categorical_crossentropy,
            name,
            dtype,
            from_logits=from_logits,
            label_smoothing=label_smoothing,
            axis=axis,
        )


class SparseCategoricalCrossentropy(_BuiltinMeanMetric):
    """Mean of `sparse_categorical_crossentropy` over the samples.

    Args:
        name: the metric name.
        dtype: see `Metric`.
        from_logits: whether `y_pred` holds logits.
        axis: the class axis (only the last axis is supported).

    Example:
        >>> m = SparseCategoricalCrossentropy()
        >>> m.update_state([1], [[0.5, 0.5]])
        >>> round(m.result(), 6)
        0.693147
    """

    def __init__(self, name="sparse_categorical_crossentropy", dtype=None, from_logits=False, axis=-1):
        super().__init__(sparse_categorical_crossentropy, name, dtype, from_logits=from_logits, axis=axis)


# ----------------------------------------------------------------------------
# Confusion-matrix metrics


def _parse_thresholds(thresholds, default):
    """The thresholds as a list of floats (the default when None); user values
    must lie in [0, 1]."""
    if thresholds is None:
        return [float(default)]
    values = list(np.ravel(thresholds)) if isinstance(thresholds, (list, tuple, np.ndarray)) else [thresholds]
    invalid = [t for t in values if t is None or not 0 <= t <= 1]
    if invalid:
        raise ValueError(f"Threshold values must be in [0, 1]. Received: {invalid}")
    return [float(t) for t in values]


def _evenly_spaced(thresholds):
    """Whether the thresholds are `0, 1/(n-1), ..., 1` (n >= 3), within epsilon: then
    Keras buckets predictions arithmetically instead of comparing."""
    n = len(thresholds)
    if n < 3:
        return False
    even = np.arange(n, dtype=np.float32) / (n - 1)
    return bool(np.allclose(thresholds, even, atol=1e-7))


def _filter_top_k(scores, k):
    """Scores outside the `k` largest of each row (earlier index first on ties)
    replaced by -1e10."""
    top = np.argsort(-scores, axis=-1, kind="stable")[..., :k]
    keep = np.zeros(scores.shape, dtype=bool)
    np.put_along_axis(keep, top, True, axis=-1)
    return np.where(keep, scores, np.float32(_NEG_INF))


def _align_sample_weight(sample_weight, shape):
    """`sample_weight` broadcast to the predictions' shape: a weight with one value
    per sample spreads over the sample's labels."""
    weight = np.asarray(sample_weight, dtype=np.float64)
    if weight.ndim == len(shape) + 1 and weight.shape[-1] == 1:
        weight = np.squeeze(weight, -1)
    if 0 < weight.ndim < len(shape):
        weight = weight.reshape(weight.shape + (1,) * (len(shape) - weight.ndim))
    try:
        return np.broadcast_to(weight, shape)
    except ValueError:
        raise ValueError(
            f"sample_weight of shape {np.shape(sample_weight)} cannot be broadcast to predictions of shape {shape}"
        ) from None


def _buckets(y_pred, thresholds, evenly):
    """For each prediction, the index of the highest threshold it exceeds (-1 for
    none): it counts as positive at thresholds `0 .. bucket`.

    Evenly spaced thresholds use Keras's arithmetic `ceil(p * (n - 1)) - 1` on
    predictions clipped to [0, 1] (float32, as Keras computes it); with the
    epsilon end points AUC adds, the first threshold takes every prediction.
    Other thresholds are compared directly (`p > t`, float32)."""
    n = len(thresholds)
    if evenly:
        p = np.clip(y_pred, 0.0, 1.0).astype(np.float32)
        bucket = np.ceil(p * np.float32(n - 1)) - 1
        if thresholds[0] < 0.0 or thresholds[-1] > 1.0:
            bucket = np.maximum(bucket, 0)
        return bucket.astype(np.int64)
    ascending = np.sort(np.asarray(thresholds, dtype=np.float32))
    exceeded = np.searchsorted(ascending, y_pred, side="left")
    return np.where(np.isnan(y_pred), 0, exceeded).astype(np.int64) - 1


def _positive_sums(bucket, weights, n):
    """`out[r, i] = sum(weights[r] where bucket[r] >= i)` for i < n, for each row r
    (one row per label) of the 2-D `bucket` and `weights`."""
    rows = bucket.shape[0]
    # Shifted buckets -1 .. n-1 -> 0 .. n, one block of n + 1 bins per row.
    bins = bucket + 1 + np.arange(rows)[:, None] * (n + 1)
    counts = np.bincount(bins.ravel(), weights=weights.ravel(), minlength=rows * (n + 1))
    counts = counts.reshape(rows, n + 1)
    at_or_above = np.cumsum(counts[:, ::-1], axis=1)[:, ::-1]
    return at_or_above[:, 1:]


def _confusion_counts(
    y_true,
    y_pred,
    thresholds,
    sample_weight=None,
    top_k=None,
    class_id=None,
    multi_label=False,
    label_weights=None,
    evenly=False,
):
    """True/false positives/negatives per threshold, as Keras's confusion-matrix
    update computes them.

    Returns:
        A dict "tp", "fp", "tn", "fn" of float64 arrays of shape `(thresholds,)`,
        or `(thresholds, labels)` when `multi_label`.
    """
    y_pred = np.asarray(y_pred, dtype=np.float32)
    y_true = np.asarray(y_true, dtype=np.float32)
    y_pred, y_true = _match_ranks(y_pred, y_true)
    if y_true.shape != y_pred.shape:
        try:
            y_true = np.broadcast_to(y_true, y_pred.shape)
        except ValueError:
            raise ValueError(
                f"y_true of shape {y_true.shape} does not match y_pred of shape {y_pred.shape}"
            ) from None
    weights = None if sample_weight is None else _align_sample_weight(sample_weight, y_pred.shape)
    if top_k is not None:
        y_pred = _filter_top_k(y_pred, top_k)
    if class_id is not None:
        if y_pred.ndim < 2:
            raise ValueError(
                "When class_id is provided, y_pred must be a 2D array with shape (num_samples, num_classes), "
                f"found shape: {y_pred.shape}"
            )
        keep = (Ellipsis, slice(class_id, class_id + 1))
        y_true, y_pred = y_true[keep], y_pred[keep]
        weights = None if weights is None else weights[keep]
    if label_weights is not None and not multi_label:
        spread = np.broadcast_to(np.asarray(label_weights, dtype=np.float64), y_pred.shape)
        weights = spread if weights is None else weights * spread
    if weights is None:
        weights = np.ones((), dtype=np.float64)
    weights = np.broadcast_to(np.asarray(weights, dtype=np.float64), y_pred.shape)
    positive = (y_true != 0).astype(np.float64)
    if multi_label:
        if y_pred.ndim != 2:
            raise ValueError(f"multi_label needs y_pred of shape (samples, labels); received {y_pred.shape}")
        # One row per label.
        y_pred, positive, weights = y_pred.T, positive.T, weights.T
    else:
        y_pred, positive, weights = y_pred.reshape(1, -1), positive.reshape(1, -1), weights.reshape(1, -1)
    n = len(thresholds)
    bucket = _buckets(y_pred, thresholds, evenly)
    true_weights, false_weights = positive * weights, (1.0 - positive) * weights
    tp = _positive_sums(bucket, true_weights, n)
    fp = _positive_sums(bucket, false_weights, n)
    fn = true_weights.sum(axis=1, keepdims=True) - tp
    tn = false_weights.sum(axis=1, keepdims=True) - fp
    if not evenly:
        # Sums were taken in ascending threshold order; return the given order.
        rank = np.argsort(np.argsort(np.asarray(thresholds, dtype=np.float32), kind="stable"), kind="stable")
        tp, fp, tn, fn = (c[:, rank] for c in (tp, fp, tn, fn))
    counts = {"tp": tp, "fp": fp, "tn": tn, "fn": fn}
    return {k: (v.T if multi_label else v[0]) for k, v in counts.items()}


class _ConfusionMatrixConditionCount(Metric):
    """One confusion-matrix count per threshold."""

    _condition = None

    def __init__(self, thresholds=None, name=None, dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.init_thresholds = thresholds
        self.thresholds = _parse_thresholds(thresholds, default=0.5)
        self._thresholds_distributed_evenly = _evenly_spaced(self.thresholds)
        self.accumulator = self.add_variable((len(self.thresholds),), name="accumulator")

    def update_state(self, y_true, y_pred, sample_weight=None):
        """Folds in a batch: a prediction is positive at a threshold it exceeds.

        Args:
            y_true: labels (nonzero = positive).
            y_pred: scores, usually probabilities in [0, 1].
            sample_weight: optional weights, one per sample or per value.
        """
        counts = _confusion_counts(
            y_true, y_pred, self.thresholds, sample_weight, evenly=self._thresholds_distributed_evenly
        )
        self.accumulator.assign_add(counts[self._condition])

    def result(self):
        return _as_result(self.accumulator[0] if len(self.thresholds) == 1 else self.accumulator)

    def get_config(self):
        config = super().get_config()
        config["thresholds"] = self.init_thresholds
        return config


def _confusion_doc(what, example_value):
    return f"""The weighted number of {what}.

    Args:
        thresholds: a float or a list of floats in [0, 1] (default 0.5); a
            prediction above a threshold is positive. With several thresholds the
            result has one count per threshold.
        name: the metric name.
        dtype: see `Metric`.

    Example:
        >>> m = {{cls}}()
        >>> m.update_state([0, 1, 1, 1], [1, 0, 1, 1])
        >>> m.result()
        {example_value}
    """


class TruePositives(_ConfusionMatrixConditionCount):
    __doc__ = _confusion_doc("true positives", "2.0").format(cls="TruePositives")
    _condition = "tp"


class FalsePositives(_ConfusionMatrixConditionCount):
    __doc__ = _confusion_doc("false positives", "1.0").format(cls="FalsePositives")
    _condition = "fp"


class TrueNegatives(_ConfusionMatrixConditionCount):
    __doc__ = _confusion_doc("true negatives", "0.0").format(cls="TrueNegatives")
    _condition = "tn"


class FalseNegatives(_ConfusionMatrixConditionCount):
    __doc__ = _confusion_doc("false negatives", "1.0").format(cls="FalseNegatives")
    _condition = "fn"


class _PrecisionRecall(Metric):
    """Shared state of `Precision` and `Recall`: true positives and the count that
    completes the denominator (false positives or false negatives)."""

    _other = None

    def __init__(self, thresholds=None, top_k=None, class_id=None, name=None, dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.init_thresholds = thresholds
        self.top_k = top_k
        self.class_id = class_id
        self.thresholds = _parse_thresholds(thresholds, default=0.5 if top_k is None else _NEG_INF)
        self._thresholds_distributed_evenly = _evenly_spaced(self.thresholds)
        size = (len(self.thresholds),)
        self.true_positives = self.add_variable(size, name="true_positives")
        other_name = {"fp": "false_positives", "fn": "false_negatives"}[self._other]
        self._other_count = self.add_variable(size, name=other_name)

    def update_state(self, y_true, y_pred, sample_weight=None):
        """Folds in a batch.

        Args:
            y_true: labels (nonzero = positive).
            y_pred: scores, usually probabilities in [0, 1].
            sample_weight: optional weights, one per sample or per value.
        """
        counts = _confusion_counts(
            y_true,
            y_pred,
            self.thresholds,
            sample_weight,
            top_k=self.top_k,
            class_id=self.class_id,
            evenly=self._thresholds_distributed_evenly,
        )
        self.true_positives.assign_add(counts["tp"])
        self._other_count.assign_add(counts[self._other])

    def result(self):
        value = _divide_no_nan(self.true_positives, self.true_positives + self._other_count)
        return _as_result(value[0] if len(self.thresholds) == 1 else value)

    def get_config(self):
        config = super().get_config()
        config.update({"thresholds": self.init_thresholds, "top_k": self.top_k, "class_id": self.class_id})
        return config


_PRECISION_RECALL_ARGS = """
    Args:
        thresholds: a float or a list of floats in [0, 1]; a prediction above a
            threshold is positive. Default 0.5, or no threshold with `top_k`. With
            several thresholds the result has one value per threshold.
        top_k: only the `k` highest scores of each sample count as predictions.
        class_id: compute the metric for this class (the index in the last axis).
        name: the metric name.
        dtype: see `Metric`."""


class Precision(_PrecisionRecall):
    __doc__ = f"""Precision: `true_positives / (true_positives + false_positives)`.
{_PRECISION_RECALL_ARGS}

    Example:
        >>> m = Precision()
        >>> m.update_state([0, 1, 1, 1], [1, 0, 1, 1])
        >>> round(m.result(), 6)
        0.666667
    """
    _other = "fp"

    @property
    def false_positives(self):
        return self._other_count


class Recall(_PrecisionRecall):
    __doc__ = f"""Recall: `true_positives / (true_positives + false_negatives)`.
{_PRECISION_RECALL_ARGS}

    Example:
        >>> m = Recall()
        >>> m.update_state([0, 1, 1, 1], [1, 0, 1, 1])
        >>> round(m.result(), 6)
        0.666667
    """
    _other = "fn"

    @property
    def false_negatives(self):
        return self._other_count


_CURVES = {"ROC": "ROC", "PR": "PR", "PRGAIN": "PRGAIN"}
_SUMMATIONS = ("interpolation", "majoring", "minoring")


class AUC(Metric):
    """Area under the ROC or precision-recall curve, from confusion counts at
    `num_thresholds` thresholds (a Riemann sum, as Keras approximates it).

    Args:
        num_thresholds: the number of thresholds (> 1), evenly spaced in [0, 1]
            (the end points are moved epsilon outwards so 0 and 1 predictions count).
        curve: "ROC", "PR" or "PRGAIN".
        summation_method: "interpolation" (trapezoids; for PR, Davis & Goadrich's
            interpolation of precision), "minoring" or "majoring" (left / right
            rectangles).
        name: the metric name.
        dtype: see `Metric`.
        thresholds: explicit thresholds in [0, 1] (overrides `num_thresholds`).
        multi_label: with 2-D labels, compute one curve per label and average the
            areas, rather than one curve over all entries.
        num_labels: the number of labels, when `multi_label` (else taken from the
            first batch).
        label_weights: per-label weights: of the entries (not `multi_label`) or of
            the label areas' average (`multi_label`).
        from_logits: whether `y_pred` holds logits (a sigmoid is applied first).

    Example:
        >>> m = AUC(num_thresholds=3)
        >>> m.update_state([0, 0, 1, 1], [0, 0.5, 0.3, 0.9])
        >>> m.result()
        0.75
    """

    def __init__(
        self,
        num_thresholds=200,
        curve="ROC",
        summation_method="interpolation",
        name=None,
        dtype=None,
        thresholds=None,
        multi_label=False,
        num_labels=None,
        label_weights=None,
        from_logits=False,
    ):
        curve_key = str(curve).upper()
        if curve_key not in _CURVES:
            raise ValueError(f'Invalid AUC curve value: "{curve}". Expected values are {list(_CURVES)}')
        method = str(summation_method).lower()
        if method not in _SUMMATIONS:
            raise ValueError(
                f'Invalid AUC summation method value: "{summation_method}". Expected values are {list(_SUMMATIONS)}'
            )
        self._init_from_thresholds = thresholds is not None
        if thresholds is not None:
            inner = sorted(_parse_thresholds(thresholds, default=None))
            self.num_thresholds = len(inner) + 2
            self._thresholds_distributed_evenly = _evenly_spaced([0.0] + inner + [1.0])
        else:
            if isinstance(num_thresholds, bool) or not isinstance(num_thresholds, int) or num_thresholds <= 1:
                raise ValueError(
                    f"Argument `num_thresholds` must be an integer > 1. Received: num_thresholds={num_thresholds}"
                )
            self.num_thresholds = num_thresholds
            inner = [(i + 1) / (num_thresholds - 1) for i in range(num_thresholds - 2)]
            self._thresholds_distributed_evenly = True
        eps = 1e-7
        self._thresholds = np.array([0.0 - eps] + inner + [1.0 + eps])
        self.curve = _CURVES[curve_key]
        self.summation_method = method
        super().__init__(name=name, dtype=dtype)
        self.multi_label = bool(multi_label)
        self.num_labels = num_labels
        if label_weights is not None:
            label_weights = np.asarray(label_weights, dtype=np.float64)
            if np.any(label_weights < 0):
                raise ValueError(f"All values of `label_weights` must be non-negative; received {label_weights}")
        self.label_weights = label_weights
        self._from_logits = bool(from_logits)
        self._built = False
        if self.multi_label:
            if num_labels:
                self._build(num_labels)
        else:
            if num_labels:
                raise ValueError("`num_labels` is needed only when `multi_label` is True.")
            self._build(None)

    @property
    def thresholds(self):
        """The thresholds, including the two epsilon end points."""
        return list(self._thresholds)

    def _build(self, num_labels):
        shape = (self.num_thresholds,) if num_labels is None else (self.num_thresholds, num_labels)
        self._num_labels = num_labels
        self.true_positives = self.add_variable(shape, name="true_positives")
        self.false_positives = self.add_variable(shape, name="false_positives")
        self.true_negatives = self.add_variable(shape, name="true_negatives")
        self.false_negatives = self.add_variable(shape, name="false_negatives")
        self._built = True

    def update_state(self, y_true, y_pred, sample_weight=None):
        """Folds in a batch.

        Args:
            y_true: labels (nonzero = positive); `(samples, labels)` when `multi_label`.
            y_pred: probabilities (logits with `from_logits`), the labels' shape.
            sample_weight: optional weights, one per sample or per value.
        """
        y_pred = np.asarray(y_pred, dtype=np.float32)
        if self.multi_label:
            if y_pred.ndim != 2:
                raise ValueError(
                    f"`y_pred` must have rank 2 when `multi_label=True`. Found rank {y_pred.ndim}. "
                    f"Full shape received for `y_pred`: {y_pred.shape}"
                )
            if not self._built:
                self._build(y_pred.shape[1])
            if y_pred.shape[1] != self._num_labels:
                raise ValueError(f"AUC: expected {self._num_labels} labels, got y_pred of shape {y_pred.shape}")
        if self._from_logits:
            y_pred = (0.5 * (1.0 + np.tanh(0.5 * y_pred))).astype(np.float32)
        counts = _confusion_counts(
            y_true,
            y_pred,
            self._thresholds,
            sample_weight,
            multi_label=self.multi_label,
            label_weights=None if self.multi_label else self.label_weights,
            evenly=self._thresholds_distributed_evenly,
        )
        self.true_positives.assign_add(counts["tp"])
        self.false_positives.assign_add(counts["fp"])
        self.true_negatives.assign_add(counts["tn"])
        self.false_negatives.assign_add(counts["fn"])

    def _average_over_labels(self, by_threshold):
        """The area: summed over thresholds, then averaged over labels."""
        area = by_threshold.sum(axis=0)
        if not self.multi_label:
            return _as_result(area)
        if self.label_weights is None:
            return _as_result(area.mean())
        return _as_result(_divide_no_nan(np.sum(area * self.label_weights), np.sum(self.label_weights)))

    def _interpolated_pr_area(self):
        """PR area with precision interpolated between thresholds (Davis & Goadrich
        2006): true and predicted positives vary linearly between successive
        thresholds, which integrates in closed form."""
        tp, fp, fn = (np.asarray(v) for v in (self.true_positives, self.false_positives, self.false_negatives))
        predicted = tp + fp
        d_tp = tp[:-1] - tp[1:]
        d_predicted = predicted[:-1] - predicted[1:]
        slope = _divide_no_nan(d_tp, np.maximum(d_predicted, 0))
        intercept = tp[1:] - slope * predicted[1:]
        both_positive = (predicted[:-1] > 0) & (predicted[1:] > 0)
        ratio = np.where(both_positive, _divide_no_nan(predicted[:-1], np.maximum(predicted[1:], 0)), 1.0)
        positives = np.maximum(tp[1:] + fn[1:], 0)
        return _divide_no_nan(slope * (d_tp + intercept * np.log(ratio)), positives)

    def result(self):
        if not self._built:
            return 0.0
        if self.curve == "PR" and self.summation_method == "interpolation":
            return self._average_over_labels(self._interpolated_pr_area())
        counts = (self.true_positives, self.false_positives, self.true_negatives, self.false_negatives)
        tp, fp, tn, fn = (np.asarray(v) for v in counts)
        recall = _divide_no_nan(tp, tp + fn)
        if self.curve == "ROC":
            x, y = _divide_no_nan(fp, fp + tn), recall
        elif self.curve == "PR":
            x, y = recall, _divide_no_nan(tp, tp + fp)
        else:
            # Precision-recall gain (Flach & Kull 2015), with the gains clamped
            # where they are undefined (no true positives) or negative.
            scale = _divide_no_nan(tp + fn, tn + fp)
            recall_gain = np.maximum(np.where(tp == 0, 0.0, 1.0 - scale * _divide_no_nan(fn, tp)), 0.0)
            precision_gain = np.where(tp == 0, 1.0, 1.0 - scale * _divide_no_nan(fp, tp))
            x, y = recall_gain, precision_gain
        if self.summation_method == "interpolation":
            heights = (y[:-1] + y[1:]) / 2.0
        elif self.summation_method == "minoring":
            heights = np.minimum(y[:-1], y[1:])
        else:
            heights = np.maximum(y[:-1], y[1:])
        return self._average_over_labels((x[:-1] - x[1:]) * heights)

    def reset_state(self):
        if self._built:
            super().reset_state()

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_thresholds": self.num_thresholds,
                "curve": self.curve,
                "summation_method": self.summation_method,
                "multi_label": self.multi_label,
                "num_labels": self.num_labels,
                "label_weights": None if self.label_weights is None else self.label_weights.tolist(),
                "from_logits": self._from_logits,
            }
        )
        if self._init_from_thresholds:
            config["thresholds"] = [float(t) for t in self._thresholds[1:-1]]
        return config


# ----------------------------------------------------------------------------
# Lookup, serialization and compile-time resolution


_FUNCTIONS = (
    accuracy,
    binary_accuracy,
    categorical_accuracy,
    sparse_categorical_accuracy,
    top_k_categorical_accuracy,
    sparse_top_k_categorical_accuracy,
    cosine_similarity,
    mean_squared_error,
    mean_absolute_error,
    mean_absolute_percentage_error,
    mean_squared_logarithmic_error,
    log_cosh,
    hinge,
    squared_hinge,
    categorical_hinge,
    kl_divergence,
    poisson,
    binary_crossentropy,
    categorical_crossentropy,
    sparse_categorical_crossentropy,
)
_CLASSES = (
    Metric,
    Mean,
    Sum,
    MeanMetricWrapper,
    Accuracy,
    BinaryAccuracy,
    CategoricalAccuracy,
    SparseCategoricalAccuracy,
    TopKCategoricalAccuracy,
    SparseTopKCategoricalAccuracy,
    MeanSquaredError,
    MeanAbsoluteError,
    MeanAbsolutePercentageError,
    MeanSquaredLogarithmicError,
    RootMeanSquaredError,
    CosineSimilarity,
    LogCoshError,
    Hinge,
    SquaredHinge,
    CategoricalHinge,
    KLDivergence,
    Poisson,
    BinaryCrossentropy,
    CategoricalCrossentropy,
    SparseCategoricalCrossentropy,
    TruePositives,
    FalsePositives,
    TrueNegatives,
    FalseNegatives,
    Precision,
    Recall,
    AUC,
)
# Functions by name, then classes by name and snake-case name (a class wins
# over the function it wraps), then Keras's short names.
_OBJECTS = {fn.__name__: fn for fn in _FUNCTIONS}
_OBJECTS.update({cls.__name__: cls for cls in _CLASSES})
_OBJECTS.update({losses._to_snake_case(cls.__name__): cls for cls in _CLASSES})
_OBJECTS.update(
    {
        "mse": MeanSquaredError,
        "MSE": MeanSquaredError,
        "mae": MeanAbsoluteError,
        "MAE": MeanAbsoluteError,
        "mape": MeanAbsolutePercentageError,
        "MAPE": MeanAbsolutePercentageError,
        "msle": MeanSquaredLogarithmicError,
        "MSLE": MeanSquaredLogarithmicError,
        "bce": BinaryCrossentropy,
        "BCE": BinaryCrossentropy,
    }
)


def serialize(metric):
    """The Keras 3 serialization of a metric (a dict), or None.

    Args:
        metric: a `Metric` instance or a metric function.

    Returns:
        `{"module", "class_name", "config", "registered_name"}` as `keras.metrics.serialize`.

    Example:
        >>> serialize(AUC())["config"]["curve"]
        'ROC'
    """
    return losses._serialize(metric, "keras.metrics", _OBJECTS)


def deserialize(config, custom_objects=None):
    """A metric from its name or its `serialize` dict.

    Args:
        config: a name or a dict with "class_name" and "config".
        custom_objects: a dict of user classes / functions by name.

    Returns:
        A `Metric` instance or a metric function.

    Example:
        >>> deserialize({"class_name": "Precision", "config": {"thresholds": 0.3}}).thresholds
        [0.3]
    """
    return losses._deserialize(config, custom_objects, _OBJECTS, "metric")


def get(identifier):
    """A metric from a name, config dict, function, class or instance.

    Args:
        identifier: None; a class name, its snake-case name or a short name
            ("AUC", "auc", "mse", ...), giving an instance; a function name
            ("binary_accuracy" gives the class, "log_cosh" the function); a
            `serialize` dict; a callable; a `Metric` class or instance.

    Returns:
        A `Metric` instance, a function, or None.

    Example:
        >>> get("mse").name
        'mean_squared_error'
    """
    if identifier is None:
        return None
    if isinstance(identifier, dict):
        obj = deserialize(identifier)
    elif isinstance(identifier, str):
        obj = losses._lookup(identifier, None, _OBJECTS, "metric")
    else:
        obj = identifier
    if inspect.isclass(obj):
        return obj()
    if callable(obj) or isinstance(obj, Metric):
        return obj
    raise ValueError(f"Could not interpret metric identifier: {identifier!r}")


_BY_LABEL_KIND = {
    "accuracy": {
        "binary": BinaryAccuracy,
        "sparse": SparseCategoricalAccuracy,
        "categorical": CategoricalAccuracy,
    },
    "crossentropy": {
        "binary": BinaryCrossentropy,
        "sparse": SparseCategoricalCrossentropy,
        "categorical": CategoricalCrossentropy,
    },
}
_SHORTCUTS = {"accuracy": "accuracy", "acc": "accuracy", "crossentropy": "crossentropy", "ce": "crossentropy"}


def _is_sparse_loss(loss):
    if isinstance(loss, str):
        loss = losses.get(loss)
    if inspect.isclass(loss):
        return issubclass(loss, losses.SparseCategoricalCrossentropy)
    if isinstance(loss, losses.LossFunctionWrapper):
        return loss.fn is losses.sparse_categorical_crossentropy
    return loss is losses.sparse_categorical_crossentropy


def _label_kind(loss, y_true_shape, y_pred_shape):
    """"binary", "sparse" or "categorical" targets: Keras 3's shape rule (see
    `losses.resolve`); without `y_true_shape`, binary for one output unit, else
    sparse exactly when the loss is a sparse categorical cross-entropy."""
    if y_true_shape is not None:
        return losses._target_kind(y_true_shape, y_pred_shape)
    if not y_pred_shape:
        raise ValueError(f"resolve: y_pred_shape must have at least one axis; received {y_pred_shape!r}")
    if y_pred_shape[-1] == 1:
        return "binary"
    return "sparse" if _is_sparse_loss(loss) else "categorical"


def resolve(identifier, loss=None, y_true_shape=None, y_pred_shape=None):
    """The metric object for one entry of `compile(metrics=[...])`.

    "accuracy" / "acc" become `BinaryAccuracy`, `SparseCategoricalAccuracy` or
    `CategoricalAccuracy`, and "crossentropy" / "ce" the matching cross-entropy,
    chosen from the shapes as Keras 3 does (see `losses.resolve`); they keep the
    user's string as their name. Other strings give the metric of that name,
    named by the string; functions are wrapped in `MeanMetricWrapper` and named
    by `__name__`; `Metric` instances pass through.

    Args:
        identifier: a string, function, `Metric` class or instance, config dict, or None.
        loss: the output's loss (identifier, function or `Loss`); decides between
            sparse and categorical targets when `y_true_shape` is unknown.
        y_true_shape: the targets' shape (None dims allowed), or None if unknown.
        y_pred_shape: the model output's shape (None dims allowed).

    Returns:
        A `Metric`, or None for None.

    Example:
        >>> resolve("acc", "sparse_categorical_crossentropy", (None,), (None, 10)).name
        'acc'
    """
    if identifier is None:
        return None
    if isinstance(identifier, Metric):
        return identifier
    if isinstance(identifier, str) and identifier.lower() in _SHORTCUTS:
        family = _BY_LABEL_KIND[_SHORTCUTS[identifier.lower()]]
        return family[_label_kind(loss, y_true_shape, y_pred_shape)](name=identifier)
    obj = get(identifier)
    if isinstance(obj, Metric):
        metric = obj
    else:
        metric = MeanMetricWrapper(obj, name=getattr(obj, "__name__", None) or getattr(obj, "name", None))
    if isinstance(identifier, str):
        metric.name = identifier
    return metric


__all__ = [
    "Metric",
    "MetricVariable",
    "get",
    "serialize",
    "deserialize",
    "resolve",
    "mse",
    "MSE",
    "mae",
    "MAE",
    "mape",
    "MAPE",
    "msle",
    "MSLE",
    "kld",
    "KLD",
] + [fn.__name__ for fn in _FUNCTIONS] + [cls.__name__ for cls in _CLASSES[1:]]
