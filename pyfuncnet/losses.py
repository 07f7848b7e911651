"""Loss functions and `Loss` objects, as `keras.losses`.

Every loss is written with `pyfuncnet.ops`, so it runs eagerly on arrays (float32,
differentiable under a `GradientTape`) and records graph nodes on symbolic
`KerasTensor`s: that is how `compile(loss=...)` puts the loss into the native
training step. Cross-entropies on logits use the core's fused
`softmax_cross_entropy` / `sigmoid_cross_entropy` ops (stable, and one kernel each
way instead of a chain of elementwise ops); categorical cross-entropies of
probabilities use its `categorical_crossentropy` op, Keras's renormalise-and-clip
formula as one kernel each way.

Loss functions return one value per sample, reduced over the last axis as Keras 3
does. `Loss` objects add sample weights, masks and the reduction to a scalar.
"""

import inspect
import math
import re
import warnings

import numpy as np

from pyfuncnet import config, ops
from pyfuncnet._symbolic import KerasTensor, get_keras_mask
from pyfuncnet._variable import Variable

REDUCTIONS = ("sum_over_batch_size", "sum", "mean", "mean_with_sample_weight", "none", None)


# ----------------------------------------------------------------------------
# Names


_name_uids = {}


def _to_snake_case(name):
    """"MeanSquaredError" -> "mean_squared_error", "AUC" -> "auc"."""
    name = re.sub(r"\W+", "", name)
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


def _auto_name(class_name):
    """A default object name as Keras makes one: the snake-case class name, with
    `_1`, `_2`, ... appended from the second object of that name on."""
    base = _to_snake_case(class_name)
    count = _name_uids.get(base, 0)
    _name_uids[base] = count + 1
    return base if count == 0 else f"{base}_{count}"


def _clear_auto_names():
    """Restarts the numbering of default names (what `clear_session` does in Keras)."""
    _name_uids.clear()


def _standardize_dtype(dtype):
    """The compute dtype: float32, the only float type pyfuncnet computes in.
    Accepts None, "float32" and a serialized float32 dtype policy."""
    if isinstance(dtype, dict):
        dtype = dtype.get("config", {}).get("name")
    if dtype is None:
        return "float32"
    try:
        if np.dtype(dtype) == np.float32:
            return "float32"
    except TypeError:
        pass  # not a NumPy dtype name (e.g. "mixed_float16"): rejected below
    raise ValueError(f"dtype: pyfuncnet computes losses and metrics in float32; received dtype={dtype!r}")


# ----------------------------------------------------------------------------
# Tensor helpers (eager arrays, tape-tracked values and symbolic tensors alike)


def _as_float(x):
    """`x` as a float32 tensor. Symbolic tensors, Variables and arrays are cast
    through `ops` when needed (so a tape or graph still follows them)."""
    if isinstance(x, (KerasTensor, Variable, np.ndarray)):
        return x if str(x.dtype) == "float32" else ops.cast(x, "float32")
    return np.asarray(x, dtype=np.float32)


def _as_labels(x):
    """Class indices as int32."""
    if isinstance(x, (KerasTensor, Variable, np.ndarray)):
        return x if str(x.dtype) == "int32" else ops.cast(x, "int32")
    return np.asarray(x).astype(np.int32)


def _match_ranks(x1, x2, expand_rank_1, expand_dims, squeeze):
    """Keras's rank matching of two tensors whose ranks differ by one: a trailing
    size-1 axis is squeezed from the larger, or (when the smaller has rank 1 and
    `expand_rank_1`) a trailing axis is added to the smaller."""
    r1, r2 = len(ops.shape(x1)), len(ops.shape(x2))
    if r1 == r2 + 1 and ops.shape(x1)[-1] == 1:
        if r2 == 1 and expand_rank_1:
            x2 = expand_dims(x2, -1)
        else:
            x1 = squeeze(x1, -1)
    elif r2 == r1 + 1 and ops.shape(x2)[-1] == 1:
        if r1 == 1 and expand_rank_1:
            x1 = expand_dims(x1, -1)
        else:
            x2 = squeeze(x2, -1)
    return x1, x2


def squeeze_or_expand_to_same_rank(x1, x2, expand_rank_1=True):
    """Makes `x1` and `x2` the same rank when they differ by a trailing size-1 axis.

    Args:
        x1, x2: tensors (arrays or symbolic).
        expand_rank_1: give a rank-1 tensor a trailing axis rather than squeezing
            the other one.

    Returns:
        `(x1, x2)`, possibly reshaped.

    Example:
        >>> a, b = squeeze_or_expand_to_same_rank(np.zeros(4), np.zeros((4, 1)))
        >>> a.shape, b.shape
        ((4, 1), (4, 1))
    """
    return _match_ranks(x1, x2, expand_rank_1, ops.expand_dims, ops.squeeze)


def _float_pair(y_true, y_pred):
    """Both as float32 with matching ranks, as Keras prepares regression targets."""
    return squeeze_or_expand_to_same_rank(_as_float(y_true), _as_float(y_pred))


def _dims_compatible(a, b):
    return a == b or a == 1 or b == 1


def _align_weights(values, sample_weight):
    """`sample_weight` shaped to multiply `values`: Keras's rank matching first; then
    a weight of lower rank matching the leading axes (one weight per sample of a
    (batch, steps) loss) gets trailing axes, as documented for per-sample weights;
    any other weight broadcasts as NumPy does. A scalar weight is left out of the
    rank matching (which would squeeze a batch of one)."""
    if not ops.shape(sample_weight):
        return values, sample_weight
    values, sample_weight = squeeze_or_expand_to_same_rank(values, sample_weight)
    v_shape, w_shape = tuple(ops.shape(values)), tuple(ops.shape(sample_weight))
    if len(w_shape) >= len(v_shape):
        return values, sample_weight
    if all(_dims_compatible(v, w) for v, w in zip(v_shape, w_shape)):
        return values, ops.expand_dims(sample_weight, tuple(range(len(w_shape), len(v_shape))))
    if all(_dims_compatible(v, w) for v, w in zip(v_shape[::-1], w_shape[::-1])):
        return values, sample_weight
    raise ValueError(
        f"sample_weight of shape {w_shape} cannot be broadcast to the loss values of shape {v_shape}"
    )


def _element_count(x):
    """The number of elements of `x` (a Python float when its shape is known)."""
    shape = tuple(ops.shape(x))
    if None not in shape:
        return float(math.prod(shape))
    return ops.sum(ops.add(ops.multiply(x, 0.0), 1.0))


def _divide_no_nan(numerator, denominator):
    """`numerator / denominator`, 0 where the denominator is 0."""
    zero = ops.equal(denominator, 0.0)
    safe = ops.where(zero, 1.0, denominator)
    return ops.where(zero, 0.0, ops.divide(numerator, safe))


def standardize_reduction(reduction):
    """Checks a `reduction` argument.

    Args:
        reduction: one of "sum_over_batch_size", "sum", "mean",
            "mean_with_sample_weight", "none" or None.

    Returns:
        The reduction.

    Example:
        >>> standardize_reduction("sum")
        'sum'
    """
    if not (reduction is None or isinstance(reduction, str) and reduction in REDUCTIONS):
        raise ValueError(
            f"Invalid value for argument `reduction`. Expected one of {list(REDUCTIONS)}. "
            f"Received: reduction={reduction!r}"
        )
    return reduction


def _reduce_values(values, sample_weight, reduction):
    if reduction is None or reduction == "none" or not ops.shape(values):
        return values
    if reduction == "sum":
        return ops.sum(values)
    if reduction == "mean_with_sample_weight" and sample_weight is not None:
        return _divide_no_nan(ops.sum(values), ops.sum(sample_weight))
    shape = tuple(ops.shape(values))
    if None not in shape and not math.prod(shape):
        return np.zeros((), np.float32)  # an empty batch: 0, not 0 / 0
    return ops.mean(values)


def reduce_weighted_values(values, sample_weight=None, mask=None, reduction="sum_over_batch_size"):
    """Weights per-sample losses and reduces them, as `Loss.__call__` does.

    Args:
        values: the per-sample losses.
        sample_weight: weights broadcastable to `values` (see `Loss.__call__`).
        mask: a 0/1 (or bool) tensor of `values`' shape; masked entries count
            neither in the sum nor, for "sum_over_batch_size" / "mean", in the divisor.
        reduction: see `Loss`.

    Returns:
        A scalar, or the weighted values for reduction "none" / None.

    Example:
        >>> reduce_weighted_values(np.array([1.0, 3.0]), sample_weight=np.array([1.0, 0.0]))
        array(0.5, dtype=float32)
    """
    reduction = standardize_reduction(reduction)
    values = _as_float(values)
    if sample_weight is not None:
        sample_weight = _as_float(sample_weight)
    if mask is not None:
        mask = _as_float(mask)
        if reduction in ("sum_over_batch_size", "mean"):
            # Valid entries weigh total / valid (0 when none is valid), so the mean
            # over all entries is the mean over the valid ones (Keras's formula).
            weight = _divide_no_nan(_element_count(mask), ops.sum(mask))
            mask = ops.where(mask, weight, 0.0)
        if sample_weight is not None:
            mask, sample_weight = squeeze_or_expand_to_same_rank(mask, sample_weight)
            sample_weight = ops.multiply(sample_weight, mask)
        else:
            sample_weight = mask
    if sample_weight is not None:
        values, sample_weight = _align_weights(values, sample_weight)
        values = ops.multiply(values, sample_weight)
    return _reduce_values(values, sample_weight, reduction)


# ----------------------------------------------------------------------------
# Loss functions


def mean_squared_error(y_true, y_pred):
    """Mean squared error over the last axis: `mean(square(y_true - y_pred), axis=-1)`.

    Args:
        y_true: targets, shape `(batch, d0, ..., dN)`.
        y_pred: predictions, the same shape.

    Returns:
        Losses of shape `(batch, d0, ..., dN-1)`.

    Example:
        >>> mean_squared_error(np.array([[0.0, 1.0]]), np.array([[1.0, 1.0]]))
        array([0.5], dtype=float32)
    """
    y_true, y_pred = _float_pair(y_true, y_pred)
    return ops.mean(ops.squared_difference(y_true, y_pred), axis=-1)


def mean_absolute_error(y_true, y_pred):
    """Mean absolute error over the last axis: `mean(abs(y_true - y_pred), axis=-1)`.

    Args:
        y_true: targets, shape `(batch, d0, ..., dN)`.
        y_pred: predictions, the same shape.

    Returns:
        Losses of shape `(batch, d0, ..., dN-1)`.

    Example:
        >>> mean_absolute_error(np.array([[0.0, 1.0]]), np.array([[1.0, 3.0]]))
        array([1.5], dtype=float32)
    """
    y_true, y_pred = _float_pair(y_true, y_pred)
    return ops.mean(ops.abs(ops.subtract(y_true, y_pred)), axis=-1)


def mean_absolute_percentage_error(y_true, y_pred):
    """`100 * mean(abs((y_true - y_pred) / maximum(abs(y_true), epsilon)), axis=-1)`.

    Args:
        y_true: targets, shape `(batch, d0, ..., dN)`.
        y_pred: predictions, the same shape.

    Returns:
        Losses of shape `(batch, d0, ..., dN-1)`.

    Example:
        >>> mean_absolute_percentage_error(np.array([[2.0, 4.0]]), np.array([[1.0, 4.0]]))
        array([25.], dtype=float32)
    """
    y_true, y_pred = _float_pair(y_true, y_pred)
    scale = ops.maximum(ops.abs(y_true), config.epsilon())
    diff = ops.abs(ops.divide(ops.subtract(y_true, y_pred), scale))
    return ops.multiply(ops.mean(diff, axis=-1), 100.0)


def mean_squared_logarithmic_error(y_true, y_pred):
    """`mean(square(log(1 + max(y_pred, eps)) - log(1 + max(y_true, eps))), axis=-1)`.

    Args:
        y_true: targets, shape `(batch, d0, ..., dN)`.
        y_pred: predictions, the same shape.

    Returns:
        Losses of shape `(batch, d0, ..., dN-1)`.

    Example:
        >>> np.round(mean_squared_logarithmic_error(np.array([[0.0]]), np.array([[np.e - 1]])), 4)
        array([1.], dtype=float32)
    """
    y_true, y_pred = _float_pair(y_true, y_pred)
    eps = config.epsilon()
    first = ops.log1p(ops.maximum(y_pred, eps))
    second = ops.log1p(ops.maximum(y_true, eps))
    return ops.mean(ops.squared_difference(first, second), axis=-1)


def _l2_normalize(x, axis):
    square_sum = ops.sum(ops.square(x), axis=axis, keepdims=True)
    return ops.multiply(x, ops.rsqrt(ops.maximum(square_sum, 1e-12)))


def cosine_similarity(y_true, y_pred, axis=-1):
    """Negative cosine similarity: `-sum(l2_normalize(y_true) * l2_normalize(y_pred), axis)`.

    Between -1 (same direction) and 1 (opposite); 0 when either vector is zero.

    Args:
        y_true: targets.
        y_pred: predictions, the same shape.
        axis: the axis along which the similarity is computed.

    Returns:
        Losses with `axis` removed.

    Example:
        >>> np.round(cosine_similarity(np.array([[0.0, 1.0], [1.0, 1.0]]), np.array([[1.0, 0.0], [1.0, 1.0]])), 4)
        array([-0., -1.], dtype=float32)
    """
    y_true, y_pred = _float_pair(y_true, y_pred)
    product = ops.multiply(_l2_normalize(y_true, axis), _l2_normalize(y_pred, axis))
    return ops.negative(ops.sum(product, axis=axis))


def huber(y_true, y_pred, delta=1.0):
    """Huber loss: `0.5 * e**2` where `|e| <= delta`, else `delta * |e| - 0.5 * delta**2`,
    with `e = y_pred - y_true`, averaged over the last axis.

    Args:
        y_true: targets, shape `(batch, d0, ..., dN)`.
        y_pred: predictions, the same shape.
        delta: where the loss turns from quadratic to linear.

    Returns:
        Losses of shape `(batch, d0, ..., dN-1)`.

    Example:
        >>> huber(np.array([[0.0, 0.0]]), np.array([[0.5, 3.0]]))
        array([1.3125], dtype=float32)
    """
    y_true, y_pred = _float_pair(y_true, y_pred)
    delta = float(delta)
    error = ops.subtract(y_pred, y_true)
    abs_error = ops.abs(error)
    quadratic = ops.multiply(ops.square(error), 0.5)
    linear = ops.subtract(ops.multiply(abs_error, delta), 0.5 * delta * delta)
    return ops.mean(ops.where(ops.less_equal(abs_error, delta), quadratic, linear), axis=-1)


def log_cosh(y_true, y_pred):
    """`mean(log(cosh(y_pred - y_true)), axis=-1)`, computed without overflow as
    `x + softplus(-2x) - log(2)`.

    Args:
        y_true: targets, shape `(batch, d0, ..., dN)`.
        y_pred: predictions, the same shape.

    Returns:
        Losses of shape `(batch, d0, ..., dN-1)`.

    Example:
        >>> np.round(log_cosh(np.array([[0.0]]), np.array([[1.0]])), 4)
        array([0.4338], dtype=float32)
    """
    y_true, y_pred = _float_pair(y_true, y_pred)
    x = ops.subtract(y_pred, y_true)
    value = ops.subtract(ops.add(x, ops.softplus(ops.multiply(x, -2.0))), math.log(2.0))
    return ops.mean(value, axis=-1)


def kl_divergence(y_true, y_pred):
    """Kullback-Leibler divergence: `sum(y_true * log(y_true / y_pred), axis=-1)`,
    both clipped to `[epsilon, 1]`.

    Args:
        y_true: target distributions, shape `(batch, d0, ..., dN)`.
        y_pred: predicted distributions, the same shape.

    Returns:
        Losses of shape `(batch, d0, ..., dN-1)`.

    Example:
        >>> np.round(kl_divergence(np.array([[0.5, 0.5]]), np.array([[0.25, 0.75]])), 4)
        array([0.1438], dtype=float32)
    """
    y_true, y_pred = _float_pair(y_true, y_pred)
    eps = config.epsilon()
    y_true = ops.clip(y_true, eps, 1.0)
    y_pred = ops.clip(y_pred, eps, 1.0)
    return ops.sum(ops.multiply(y_true, ops.log(ops.divide(y_true, y_pred))), axis=-1)


def poisson(y_true, y_pred):
    """Poisson loss: `mean(y_pred - y_true * log(y_pred + epsilon), axis=-1)`.

    Args:
        y_true: targets, shape `(batch, d0, ..., dN)`.
        y_pred: predicted rates, the same shape.

    Returns:
        Losses of shape `(batch, d0, ..., dN-1)`.

    Example:
        >>> poisson(np.array([[1.0]]), np.array([[1.0]]))
        array([0.9999999], dtype=float32)
    """
    y_true, y_pred = _float_pair(y_true, y_pred)
    log_rate = ops.log(ops.add(y_pred, config.epsilon()))
    return ops.mean(ops.subtract(y_pred, ops.multiply(y_true, log_rate)), axis=-1)


def _hinge_labels(y_true):
    """Labels in {-1, 1}: when every label of the batch is 0 or 1 they are mapped
    to -1 / 1 (as Keras does), otherwise they are used as given."""
    is_zero = ops.cast(ops.equal(y_true, 0.0), "float32")
    is_one = ops.cast(ops.equal(y_true, 1.0), "float32")
    # A count rather than a min: defined for an empty batch too.
    others = ops.sum(ops.subtract(1.0, ops.add(is_zero, is_one)))
    all_binary = ops.cast(ops.equal(others, 0.0), "float32")
    return ops.add(y_true, ops.multiply(all_binary, ops.subtract(y_true, 1.0)))


def hinge(y_true, y_pred):
    """Hinge loss: `mean(maximum(1 - y_true * y_pred, 0), axis=-1)`.

    `y_true` should be -1 or 1; if all labels are 0 or 1 they are converted to -1 / 1.

    Args:
        y_true: labels, shape `(batch, d0, ..., dN)`.
        y_pred: predictions, the same shape.

    Returns:
        Losses of shape `(batch, d0, ..., dN-1)`.

    Example:
        >>> hinge(np.array([[1.0, 0.0]]), np.array([[0.5, 0.5]]))
        array([1.], dtype=float32)
    """
    y_true, y_pred = _float_pair(y_true, y_pred)
    margin = ops.subtract(1.0, ops.multiply(_hinge_labels(y_true), y_pred))
    return ops.mean(ops.maximum(margin, 0.0), axis=-1)


def squared_hinge(y_true, y_pred):
    """Squared hinge loss: `mean(square(maximum(1 - y_true * y_pred, 0)), axis=-1)`.

    `y_true` should be -1 or 1; if all labels are 0 or 1 they are converted to -1 / 1.

    Args:
        y_true: labels, shape `(batch, d0, ..., dN)`.
        y_pred: predictions, the same shape.

    Returns:
        Losses of shape `(batch, d0, ..., dN-1)`.

    Example:
        >>> squared_hinge(np.array([[1.0, 0.0]]), np.array([[0.5, 0.5]]))
        array([1.25], dtype=float32)
    """
    y_true, y_pred = _float_pair(y_true, y_pred)
    margin = ops.subtract(1.0, ops.multiply(_hinge_labels(y_true), y_pred))
    return ops.mean(ops.square(ops.maximum(margin, 0.0)), axis=-1)


def categorical_hinge(y_true, y_pred):
    """Categorical hinge: `maximum(neg - pos + 1, 0)` with `pos = sum(y_true * y_pred)`
    and `neg = max((1 - y_true) * y_pred)` over the last axis.

    Args:
        y_true: one-hot labels, shape `(batch, ..., classes)`.
        y_pred: predictions, the same shape.

    Returns:
        Losses with the class axis removed.

    Example:
        >>> categorical_hinge(np.array([[0.0, 1.0]]), np.array([[0.3, 0.6]]))
        array([0.7], dtype=float32)
    """
    y_true, y_pred = _float_pair(y_true, y_pred)
    pos = ops.sum(ops.multiply(y_true, y_pred), axis=-1)
    neg = ops.max(ops.multiply(ops.subtract(1.0, y_true), y_pred), axis=-1)
    return ops.maximum(ops.add(ops.subtract(neg, pos), 1.0), 0.0)


def _check_label_smoothing(label_smoothing):
    value = float(label_smoothing)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1]; received label_smoothing={label_smoothing!r}")
    return value


def _check_axis(axis):
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise ValueError(f"`axis` must be of type `int`. Received: axis={axis!r} of type {type(axis).__name__}")
    return int(axis)


def _is_last_axis(axis, rank):
    return axis == -1 or axis == rank - 1


def binary_crossentropy(y_true, y_pred, from_logits=False, label_smoothing=0.0, axis=-1):
    """Binary cross-entropy, averaged over `axis`.

    Probabilities are clipped to `[epsilon, 1 - epsilon]`; logits use the stable
    `max(x, 0) - x * z + log(1 + exp(-|x|))`.

    Args:
        y_true: 0/1 (or soft) targets.
        y_pred: probabilities, or logits when `from_logits`.
        from_logits: whether `y_pred` holds logits.
        label_smoothing: in [0, 1]; targets become `y * (1 - s) + 0.5 * s`.
        axis: the axis the mean is taken over.

    Returns:
        Losses with `axis` removed.

    Example:
        >>> binary_crossentropy(np.array([[0.0, 1.0]]), np.array([[0.4, 0.6]]))
        array([0.5108256], dtype=float32)
    """
    label_smoothing = _check_label_smoothing(label_smoothing)
    axis = _check_axis(axis)
    y_true, y_pred = _float_pair(y_true, y_pred)
    if label_smoothing:
        y_true = ops.add(ops.multiply(y_true, 1.0 - label_smoothing), 0.5 * label_smoothing)
    if from_logits:
        if tuple(ops.shape(y_true)) == tuple(ops.shape(y_pred)):
            elementwise = ops._run("sigmoid_cross_entropy", {}, [y_pred, y_true])[0]
        else:
            # Operands that broadcast: the same stable formula from primitives
            # (log(1 + exp(-|x|)) == softplus(-|x|)).
            elementwise = ops.add(
                ops.subtract(ops.relu(y_pred), ops.multiply(y_pred, y_true)),
                ops.softplus(ops.negative(ops.abs(y_pred))),
            )
    else:
        eps = config.epsilon()
        p = ops.clip(y_pred, eps, 1.0 - eps)
        log_likelihood = ops.add(
            ops.multiply(y_true, ops.log(p)),
            ops.multiply(ops.subtract(1.0, y_true), ops.log(ops.subtract(1.0, p))),
        )
        elementwise = ops.negative(log_likelihood)
    return ops.mean(elementwise, axis=axis)


def categorical_crossentropy(y_true, y_pred, from_logits=False, label_smoothing=0.0, axis=-1):
    """Categorical cross-entropy: `-sum(y_true * log(p), axis)`.

    Probabilities are first renormalised to sum to 1 along `axis`, then clipped to
    `[epsilon, 1 - epsilon]`; logits go through a log-softmax. Along the last axis
    either is one fused op of the core.

    Args:
        y_true: one-hot (or soft) targets, the shape of `y_pred`.
        y_pred: probabilities, or logits when `from_logits`.
        from_logits: whether `y_pred` holds logits.
        label_smoothing: in [0, 1]; targets become `y * (1 - s) + s / classes`.
        axis: the class axis.

    Returns:
        Losses with `axis` removed.

    Example:
        >>> np.round(categorical_crossentropy(np.array([[0.0, 1.0]]), np.array([[0.25, 0.75]])), 4)
        array([0.2877], dtype=float32)
    """
    label_smoothing = _check_label_smoothing(label_smoothing)
    axis = _check_axis(axis)
    y_true, y_pred = _float_pair(y_true, y_pred)
    shape = tuple(ops.shape(y_pred))
    if shape and shape[-1] == 1:
        warnings.warn(
            "In loss categorical_crossentropy, expected y_pred.shape to be (batch_size, num_classes) "
            f"with num_classes > 1. Received: y_pred.shape={shape}. Consider using "
            "'binary_crossentropy' if you only have 2 classes.",
            SyntaxWarning,
            stacklevel=2,
        )
    if label_smoothing:
        num_classes = tuple(ops.shape(y_true))[axis]
        if num_classes is None:
            raise ValueError("categorical_crossentropy: label_smoothing needs a known number of classes")
        y_true = ops.add(ops.multiply(y_true, 1.0 - label_smoothing), label_smoothing / num_classes)
    same_shape = tuple(ops.shape(y_true)) == shape
    if same_shape and _is_last_axis(axis, len(shape)):
        if from_logits:
            return ops._run("softmax_cross_entropy", {"sparse": False}, [y_pred, y_true])[0]
        return ops._run("categorical_crossentropy", {"sparse": False, "epsilon": config.epsilon()}, [y_pred, y_true])[0]
    if from_logits:
        log_prob = ops.log_softmax(y_pred, axis=axis)
    else:
        eps = config.epsilon()
        p = ops.divide(y_pred, ops.sum(y_pred, axis=axis, keepdims=True))
        log_prob = ops.log(ops.clip(p, eps, 1.0 - eps))
    return ops.negative(ops.sum(ops.multiply(y_true, log_prob), axis=axis))


def _sparse_crossentropy_and_mask(y_true, y_pred, from_logits=False, ignore_class=None, axis=-1):
    """The sparse categorical cross-entropy and, with `ignore_class`, the 0/1 mask
    of the entries that count (None otherwise)."""
    axis = _check_axis(axis)
    y_pred = _as_float(y_pred)
    labels = _as_labels(y_true)
    p_shape = tuple(ops.shape(y_pred))
    if not p_shape:
        raise ValueError("sparse_categorical_crossentropy: y_pred must have a class axis; received a scalar")
    if not _is_last_axis(axis, len(p_shape)):
        raise ValueError(
            f"sparse_categorical_crossentropy: only the last axis can be the class axis; received axis={axis} "
            f"for y_pred of shape {p_shape}"
        )
    l_shape = tuple(ops.shape(labels))
    if len(l_shape) == len(p_shape) and l_shape[-1] == 1:
        labels = ops.squeeze(labels, -1)
        l_shape = l_shape[:-1]
    if len(l_shape) != len(p_shape) - 1 or not all(
        a is None or b is None or a == b for a, b in zip(l_shape, p_shape[:-1])
    ):
        raise ValueError(
            "Arguments `target` and `output` must have the same shape up until the last dimension: "
            f"target.shape={l_shape}, output.shape={p_shape}"
        )
    valid = None
    if ignore_class is not None:
        valid = ops.cast(ops.not_equal(labels, float(ignore_class)), "float32")
        # Ignored entries get class 0 (any valid index) and are zeroed below.
        labels = ops.cast(ops.multiply(labels, valid), "int32")
    if from_logits:
        per_sample = ops._run("softmax_cross_entropy", {"sparse": True}, [y_pred, labels])[0]
    else:
        classes = p_shape[-1]
        if classes is None:
            raise ValueError("sparse_categorical_crossentropy: y_pred needs a known number of classes")
        per_sample = ops._run("categorical_crossentropy", {"sparse": True, "epsilon": config.epsilon()}, [y_pred, labels])[0]
    if valid is not None:
        per_sample = ops.where(valid, per_sample, 0.0)
    return per_sample, valid


def sparse_categorical_crossentropy(y_true, y_pred, from_logits=False, ignore_class=None, axis=-1):
    """Categorical cross-entropy with integer class labels.

    Probabilities are renormalised and clipped as in `categorical_crossentropy`;
    logits use the core's fused softmax cross-entropy. A label outside
    `[0, classes)` raises `OutOfRangeError`.

    Args:
        y_true: int labels, shape `(batch, ...)` or `(batch, ..., 1)`.
        y_pred: probabilities or logits, shape `(batch, ..., classes)`.
        from_logits: whether `y_pred` holds logits.
        ignore_class: a label whose entries get loss 0 (and, in `Loss` objects,
            do not count in the mean).
        axis: the class axis; only the last axis is supported.

    Returns:
        Losses of shape `(batch, ...)`.

    Example:
        >>> np.round(sparse_categorical_crossentropy(np.array([1]), np.array([[0.25, 0.75]])), 4)
        array([0.2877], dtype=float32)
    """
    return _sparse_crossentropy_and_mask(y_true, y_pred, from_logits, ignore_class, axis)[0]


# Keras's short names.
mse = MSE = mean_squared_error
mae = MAE = mean_absolute_error
mape = MAPE = mean_absolute_percentage_error
msle = MSLE = mean_squared_logarithmic_error
kld = KLD = kl_divergence
bce = BCE = binary_crossentropy


# ----------------------------------------------------------------------------
# Loss objects


class Loss:
    """Base class of losses: `call` computes per-sample losses, `__call__` weights
    and reduces them.

    Args:
        name: the loss name (default: the snake-case class name).
        reduction: "sum_over_batch_size" (default; the sum divided by the number of
            loss values), "mean" (the same), "sum", "mean_with_sample_weight" (the sum
            divided by the sum of the sample weights), or "none" / None (no
            reduction).
        dtype: the compute dtype; only float32 (the default) is supported.

    Example:
        >>> class MeanCubed(Loss):
        ...     def call(self, y_true, y_pred):
        ...         return ops.mean(ops.abs(ops.power(y_pred - y_true, 3.0)), axis=-1)
        >>> MeanCubed()(np.zeros((2, 1)), np.ones((2, 1)))
        array(1., dtype=float32)
    """

    # Whether `call` takes integer class labels as `y_true` (kept as int32).
    _int_labels = False

    def __init__(self, name=None, reduction="sum_over_batch_size", dtype=None):
        self.name = name or _auto_name(type(self).__name__)
        self.reduction = standardize_reduction(reduction)
        self._dtype = _standardize_dtype(dtype)

    @property
    def dtype(self):
        """The compute dtype ("float32")."""
        return self._dtype

    def __call__(self, y_true, y_pred, sample_weight=None):
        """The weighted, reduced loss.

        Args:
            y_true: targets (cast to float32, or int32 for sparse losses).
            y_pred: predictions (cast to float32).
            sample_weight: optional weights: a scalar scales the loss; shape
                `(batch,)` weights each sample; a shape matching the per-sample losses
                weights each loss value.

        Returns:
            A scalar tensor, or the weighted per-sample losses for reduction "none".
        """
        in_mask = get_keras_mask(y_pred)
        y_pred = _as_float(y_pred)
        y_true = _as_labels(y_true) if self._int_labels else _as_float(y_true)
        losses, out_mask = self._call_with_mask(y_true, y_pred)
        if in_mask is not None and out_mask is not None:
            mask = ops.multiply(_as_float(in_mask), out_mask)
        else:
            mask = out_mask if in_mask is None else in_mask
        return reduce_weighted_values(losses, sample_weight, mask, self.reduction)

    def _call_with_mask(self, y_true, y_pred):
        """`call`'s losses and a mask of the entries that count (None: all)."""
        return self.call(y_true, y_pred), None

    def call(self, y_true, y_pred):
        """Per-sample losses; implemented by subclasses."""
        raise NotImplementedError(f"{type(self).__name__} must implement call(y_true, y_pred)")

    def get_config(self):
        """The constructor arguments, JSON-serialisable."""
        return {"name": self.name, "reduction": self.reduction}

    @classmethod
    def from_config(cls, config):
        """A loss built from `get_config()`'s dict."""
        return cls(**config)

    def __repr__(self):
        return f"<{type(self).__name__} name={self.name}, reduction={self.reduction}>"


class LossFunctionWrapper(Loss):
    """A `Loss` computed by a function `fn(y_true, y_pred, **kwargs)`.

    Args:
        fn: the per-sample loss function.
        reduction: see `Loss`.
        name: the loss name.
        dtype: see `Loss`.
        **kwargs: passed to `fn` on every call.

    Example:
        >>> loss = LossFunctionWrapper(huber, name="huber", delta=0.5)
        >>> loss(np.zeros((2, 1)), np.ones((2, 1)))
        array(0.375, dtype=float32)
    """

    def __init__(self, fn, reduction="sum_over_batch_size", name=None, dtype=None, **kwargs):
        if not callable(fn):
            raise TypeError(f"LossFunctionWrapper: `fn` must be callable; received {fn!r}")
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.fn = fn
        self._fn_kwargs = kwargs

    @property
    def _int_labels(self):
        return self.fn is sparse_categorical_crossentropy

    def call(self, y_true, y_pred):
        y_true, y_pred = squeeze_or_expand_to_same_rank(y_true, y_pred)
        return self.fn(y_true, y_pred, **self._fn_kwargs)

    def _call_with_mask(self, y_true, y_pred):
        if self.fn is sparse_categorical_crossentropy and self._fn_kwargs.get("ignore_class") is not None:
            y_true, y_pred = squeeze_or_expand_to_same_rank(y_true, y_pred)
            return _sparse_crossentropy_and_mask(y_true, y_pred, **self._fn_kwargs)
        return super()._call_with_mask(y_true, y_pred)

    def get_config(self):
        config = super().get_config()
        config["fn"] = serialize(self.fn)
        config.update(self._fn_kwargs)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if "fn" in config:
            config["fn"] = deserialize(config["fn"])
        return cls(**config)


class _BuiltinLoss(LossFunctionWrapper):
    """A `LossFunctionWrapper` for one of this module's functions. Its keyword
    arguments become attributes, and its config is its constructor arguments."""

    def __init__(self, fn, reduction, name, dtype, **kwargs):
        super().__init__(fn, reduction=reduction, name=name, dtype=dtype, **kwargs)
        for key, value in kwargs.items():
            setattr(self, key, value)

    def get_config(self):
        config = Loss.get_config(self)
        config.update(self._fn_kwargs)
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**config)


class MeanSquaredError(_BuiltinLoss):
    """Mean of squares of errors (see `mean_squared_error`).

    Args:
        reduction: see `Loss`.
        name: the loss name.
        dtype: see `Loss`.

    Example:
        >>> MeanSquaredError()(np.array([[0.0, 1.0]]), np.array([[1.0, 1.0]]))
        array(0.5, dtype=float32)
    """

    def __init__(self, reduction="sum_over_batch_size", name="mean_squared_error", dtype=None):
        super().__init__(mean_squared_error, reduction, name, dtype)


class MeanAbsoluteError(_BuiltinLoss):
    """Mean of absolute errors (see `mean_absolute_error`).

    Args:
        reduction: see `Loss`.
        name: the loss name.
        dtype: see `Loss`.

    Example:
        >>> MeanAbsoluteError()(np.array([[0.0, 1.0]]), np.array([[1.0, 3.0]]))
        array(1.5, dtype=float32)
    """

    def __init__(self, reduction="sum_over_batch_size", name="mean_absolute_error", dtype=None):
        super().__init__(mean_absolute_error, reduction, name, dtype)


class MeanAbsolutePercentageError(_BuiltinLoss):
    """Mean absolute percentage error (see `mean_absolute_percentage_error`).

    Args:
        reduction: see `Loss`.
        name: the loss name.
        dtype: see `Loss`.

    Example:
        >>> MeanAbsolutePercentageError()(np.array([[2.0, 4.0]]), np.array([[1.0, 4.0]]))
        array(25., dtype=float32)
    """

    def __init__(self, reduction="sum_over_batch_size", name="mean_absolute_percentage_error", dtype=None):
        super().__init__(mean_absolute_percentage_error, reduction, name, dtype)


class MeanSquaredLogarithmicError(_BuiltinLoss):
    """Mean squared logarithmic error (see `mean_squared_logarithmic_error`).

    Args:
        reduction: see `Loss`.
        name: the loss name.
        dtype: see `Loss`.

    Example:
        >>> np.round(MeanSquaredLogarithmicError()(np.array([[0.0]]), np.array([[np.e - 1]])), 4)
        np.float32(1.0)
    """

    def __init__(self, reduction="sum_over_batch_size", name="mean_squared_logarithmic_error", dtype=None):
        super().__init__(mean_squared_logarithmic_error, reduction, name, dtype)


class CosineSimilarity(_BuiltinLoss):
    """Negative cosine similarity (see `cosine_similarity`).

    Args:
        axis: the axis along which the similarity is computed.
        reduction: see `Loss`.
        name: the loss name.
        dtype: see `Loss`.

    Example:
        >>> CosineSimilarity()(np.array([[0.0, 1.0]]), np.array([[0.0, 2.0]]))
        array(-1., dtype=float32)
    """

    def __init__(self, axis=-1, reduction="sum_over_batch_size", name="cosine_similarity", dtype=None):
        super().__init__(cosine_similarity, reduction, name, dtype, axis=_check_axis(axis))


class Huber(_BuiltinLoss):
    """Huber loss (see `huber`).

    Args:
        delta: where the loss turns from quadratic to linear.
        reduction: see `Loss`.
        name: the loss name.
        dtype: see `Loss`.

    Example:
        >>> Huber(delta=1.0)(np.array([[0.0, 0.0]]), np.array([[0.5, 3.0]]))
        array(1.3125, dtype=float32)
    """

    def __init__(self, delta=1.0, reduction="sum_over_batch_size", name="huber_loss", dtype=None):
        super().__init__(huber, reduction, name, dtype, delta=delta)


class LogCosh(_BuiltinLoss):
    """Logarithm of the hyperbolic cosine of the error (see `log_cosh`).

    Args:
        reduction: see `Loss`.
        name: the loss name.
        dtype: see `Loss`.

    Example:
        >>> np.round(LogCosh()(np.array([[0.0]]), np.array([[1.0]])), 4)
        np.float32(0.4338)
    """

    def __init__(self, reduction="sum_over_batch_size", name="log_cosh", dtype=None):
        super().__init__(log_cosh, reduction, name, dtype)


class KLDivergence(_BuiltinLoss):
    """Kullback-Leibler divergence (see `kl_divergence`).

    Args:
        reduction: see `Loss`.
        name: the loss name.
        dtype: see `Loss`.

    Example:
        >>> np.round(KLDivergence()(np.array([[0.5, 0.5]]), np.array([[0.25, 0.75]])), 4)
        np.float32(0.1438)
    """

    def __init__(self, reduction="sum_over_batch_size", name="kl_divergence", dtype=None):
        super().__init__(kl_divergence, reduction, name, dtype)


class Poisson(_BuiltinLoss):
    """Poisson loss (see `poisson`).

    Args:
        reduction: see `Loss`.
        name: the loss name.
        dtype: see `Loss`.

    Example:
        >>> Poisson()(np.array([[1.0]]), np.array([[1.0]]))
        array(0.9999999, dtype=float32)
    """

    def __init__(self, reduction="sum_over_batch_size", name="poisson", dtype=None):
        super().__init__(poisson, reduction, name, dtype)


class Hinge(_BuiltinLoss):
    """Hinge loss (see `hinge`).

    Args:
        reduction: see `Loss`.
        name: the loss name.
        dtype: see `Loss`.

    Example:
        >>> Hinge()(np.array([[1.0, 0.0]]), np.array([[0.5, 0.5]]))
        array(1., dtype=float32)
    """

    def __init__(self, reduction="sum_over_batch_size", name="hinge", dtype=None):
        super().__init__(hinge, reduction, name, dtype)


class SquaredHinge(_BuiltinLoss):
    """Squared hinge loss (see `squared_hinge`).

    Args:
        reduction: see `Loss`.
        name: the loss name.
        dtype: see `Loss`.

    Example:
        >>> SquaredHinge()(np.array([[1.0, 0.0]]), np.array([[0.5, 0.5]]))
        array(1.25, dtype=float32)
    """

    def __init__(self, reduction="sum_over_batch_size", name="squared_hinge", dtype=None):
        super().__init__(squared_hinge, reduction, name, dtype)


class CategoricalHinge(_BuiltinLoss):
    """Categorical hinge loss (see `categorical_hinge`).

    Args:
        reduction: see `Loss`.
        name: the loss name.
        dtype: see `Loss`.

    Example:
        >>> CategoricalHinge()(np.array([[0.0, 1.0]]), np.array([[0.3, 0.6]]))
        array(0.7, dtype=float32)
    """

    def __init__(self, reduction="sum_over_batch_size", name="categorical_hinge", dtype=None):
        super().__init__(categorical_hinge, reduction, name, dtype)


class BinaryCrossentropy(_BuiltinLoss):
    """Binary cross-entropy (see `binary_crossentropy`).

    Args:
        from_logits: whether `y_pred` holds logits (the fused, stable form) or
            probabilities.
        label_smoothing: in [0, 1]; targets become `y * (1 - s) + 0.5 * s`.
        axis: the axis the mean is taken over.
        reduction: see `Loss`.
        name: the loss name.
        dtype: see `Loss`.

    Example:
        >>> BinaryCrossentropy(from_logits=True)(np.array([[1.0]]), np.array([[0.0]]))
        array(0.6931472, dtype=float32)
    """

    def __init__(
        self,
        from_logits=False,
        label_smoothing=0.0,
        axis=-1,
        reduction="sum_over_batch_size",
        name="binary_crossentropy",
        dtype=None,
    ):
        super().__init__(
            binary_crossentropy,
            reduction,
            name,
            dtype,
            from_logits=bool(from_logits),
            label_smoothing=_check_label_smoothing(label_smoothing),
            axis=_check_axis(axis),
        )


class CategoricalCrossentropy(_BuiltinLoss):
    """Categorical cross-entropy with one-hot (or soft) targets (see
    `categorical_crossentropy`).

    Args:
        from_logits: whether `y_pred` holds logits (the fused softmax cross-entropy)
            or probabilities.
        label_smoothing: in [0, 1]; targets become `y * (1 - s) + s / classes`.
        axis: the class axis.
        reduction: see `Loss`.
        name: the loss name.
        dtype: see `Loss`.

    Example:
        >>> np.round(CategoricalCrossentropy()(np.array([[0.0, 1.0]]), np.array([[0.25, 0.75]])), 4)
        np.float32(0.2877)
    """

    def __init__(
        self,
        from_logits=False,
        label_smoothing=0.0,
        axis=-1,
        reduction="sum_over_batch_size",
        name="categorical_crossentropy",
        dtype=None,
    ):
        super().__init__(
            categorical_crossentropy,
            reduction,
            name,
            dtype,
            from_logits=bool(from_logits),
            label_smoothing=_check_label_smoothing(label_smoothing),
            axis=_check_axis(axis),
        )


class SparseCategoricalCrossentropy(_BuiltinLoss):
    """Categorical cross-entropy with integer labels (see
    `sparse_categorical_crossentropy`).

    Args:
        from_logits: whether `y_pred` holds logits (the fused sparse softmax
            cross-entropy) or probabilities.
        ignore_class: a label to ignore: its entries have loss 0 and, for the
            "sum_over_batch_size" / "mean" reductions, are left out of the divisor.
        reduction: see `Loss`.
        name: the loss name.
        dtype: see `Loss`.

    Example:
        >>> np.round(SparseCategoricalCrossentropy()(np.array([1]), np.array([[0.25, 0.75]])), 4)
        np.float32(0.2877)
    """

    def __init__(
        self,
        from_logits=False,
        ignore_class=None,
        reduction="sum_over_batch_size",
        name="sparse_categorical_crossentropy",
        dtype=None,
    ):
        super().__init__(
            sparse_categorical_crossentropy,
            reduction,
            name,
            dtype,
            from_logits=bool(from_logits),
            ignore_class=ignore_class,
        )


# ----------------------------------------------------------------------------
# Lookup and serialization


_FUNCTIONS = (
    mean_squared_error,
    mean_absolute_error,
    mean_absolute_percentage_error,
    mean_squared_logarithmic_error,
    cosine_similarity,
    huber,
    log_cosh,
    kl_divergence,
    poisson,
    hinge,
    squared_hinge,
    categorical_hinge,
    binary_crossentropy,
    categorical_crossentropy,
    sparse_categorical_crossentropy,
)
_CLASSES = (
    Loss,
    LossFunctionWrapper,
    MeanSquaredError,
    MeanAbsoluteError,
    MeanAbsolutePercentageError,
    MeanSquaredLogarithmicError,
    CosineSimilarity,
    Huber,
    LogCosh,
    KLDivergence,
    Poisson,
    Hinge,
    SquaredHinge,
    CategoricalHinge,
    BinaryCrossentropy,
    CategoricalCrossentropy,
    SparseCategoricalCrossentropy,
)
_OBJECTS = {fn.__name__: fn for fn in _FUNCTIONS}
_OBJECTS.update({cls.__name__: cls for cls in _CLASSES})
_OBJECTS.update(
    {
        "mse": mse,
        "MSE": MSE,
        "mae": mae,
        "MAE": MAE,
        "mape": mape,
        "MAPE": MAPE,
        "msle": msle,
        "MSLE": MSLE,
        "kld": kld,
        "KLD": KLD,
        "bce": bce,
        "BCE": BCE,
    }
)


def _lookup(name, custom_objects, objects, kind):
    if custom_objects and name in custom_objects:
        return custom_objects[name]
    if name in objects:
        return objects[name]
    raise ValueError(f"Unknown {kind}: {name!r}. Known {kind}es and functions: {sorted(objects)}")


def serialize(loss):
    """The Keras 3 serialization of a loss (a dict), or None.

    Args:
        loss: a `Loss` instance or a loss function.

    Returns:
        `{"module", "class_name", "config", "registered_name"}` as `keras.losses.serialize`.

    Example:
        >>> serialize(MeanSquaredError())["class_name"]
        'MeanSquaredError'
    """
    return _serialize(loss, "keras.losses", _OBJECTS)


def _serialize(obj, module, objects):
    if obj is None:
        return None
    if inspect.isfunction(obj):
        builtin = objects.get(obj.__name__) is obj
        return {
            "module": module if builtin else obj.__module__,
            "class_name": "function",
            "config": obj.__name__,
            "registered_name": obj.__name__,
        }
    if hasattr(obj, "get_config"):
        cls = type(obj)
        builtin = objects.get(cls.__name__) is cls
        return {
            "module": module if builtin else cls.__module__,
            "class_name": cls.__name__,
            "config": obj.get_config(),
            "registered_name": None if builtin else cls.__name__,
        }
    raise TypeError(f"Cannot serialize {obj!r}: expected a function or an object with get_config()")


def deserialize(config, custom_objects=None):
    """A loss from its name or its `serialize` dict.

    Args:
        config: a name ("mse", "MeanSquaredError", ...) or a dict with "class_name"
            and "config" (as Keras 3 and Keras 2 write them).
        custom_objects: a dict of user classes / functions by name.

    Returns:
        A loss function or `Loss` instance.

    Example:
        >>> deserialize({"class_name": "Huber", "config": {"delta": 2.0}}).delta
        2.0
    """
    return _deserialize(config, custom_objects, _OBJECTS, "loss")


def _deserialize(config, custom_objects, objects, kind):
    if isinstance(config, str):
        return _lookup(config, custom_objects, objects, kind)
    if not isinstance(config, dict) or "class_name" not in config:
        raise ValueError(f"Could not deserialize a {kind} from {config!r}: expected a name or a dict with 'class_name'")
    if config["class_name"] == "function":
        return _lookup(config["config"], custom_objects, objects, kind)
    name = config.get("registered_name") or config["class_name"]
    if not (custom_objects and name in custom_objects):
        name = config["class_name"]
    cls = _lookup(name, custom_objects, objects, kind)
    if not inspect.isclass(cls):
        raise ValueError(f"Could not deserialize a {kind}: {name!r} is not a class")
    return cls.from_config(config.get("config") or {})


def get(identifier):
    """A loss from a name, config dict, function, class or instance.

    Args:
        identifier: None; a function or class name ("mse", "mean_squared_error",
            "MeanSquaredError"); a `serialize` dict; a callable; a `Loss` class
            (instantiated with defaults) or instance.

    Returns:
        A loss function, a `Loss` instance, or None.

    Example:
        >>> get("mse") is mean_squared_error
        True
    """
    if identifier is None:
        return None
    if isinstance(identifier, dict):
        obj = deserialize(identifier)
    elif isinstance(identifier, str):
        obj = _lookup(identifier, None, _OBJECTS, "loss")
    else:
        obj = identifier
    if inspect.isclass(obj):
        return obj()
    if callable(obj):
        return obj
    raise ValueError(f"Could not interpret loss identifier: {identifier!r}")


def _target_kind(y_true_shape, y_pred_shape):
    """"binary", "sparse" or "categorical" targets, by Keras 3's compile rule:
    binary when the predictions have one unit; sparse when the targets have a
    lower rank, or one value per sample against several units; else categorical."""
    if not y_pred_shape:
        raise ValueError(f"y_pred_shape must have at least one axis; received {y_pred_shape!r}")
    pred_last = y_pred_shape[-1]
    if pred_last == 1:
        return "binary"
    several_units = pred_last is not None and pred_last > 1
    if len(y_true_shape) < len(y_pred_shape) or (y_true_shape and y_true_shape[-1] == 1 and several_units):
        return "sparse"
    return "categorical"


_CROSSENTROPY_BY_KIND = {
    "binary": binary_crossentropy,
    "sparse": sparse_categorical_crossentropy,
    "categorical": categorical_crossentropy,
}


def resolve(identifier, y_true_shape=None, y_pred_shape=None):
    """The `Loss` object for one output's entry of `compile(loss=...)`, as Keras 3's
    compile does it.

    "crossentropy" / "ce" become the binary, sparse or categorical cross-entropy by
    the shapes (binary for one output unit; sparse for targets of lower rank or
    with one value per sample; categorical otherwise). Functions, and names of
    functions, are wrapped in `LossFunctionWrapper`, named by the user's string or
    the function's `__name__`; `Loss` instances pass through.

    Args:
        identifier: anything `get` takes.
        y_true_shape: the targets' shape (None dims allowed); needed for "crossentropy".
        y_pred_shape: the output's shape; needed for "crossentropy".

    Returns:
        A `Loss`, or None for None.

    Example:
        >>> loss = resolve("ce", (None,), (None, 10))
        >>> loss.name, loss.fn is sparse_categorical_crossentropy
        ('ce', True)
    """
    if identifier is None:
        return None
    if isinstance(identifier, str) and identifier.lower() in ("crossentropy", "ce"):
        if y_true_shape is None or y_pred_shape is None:
            raise ValueError(f"resolve: the loss {identifier!r} needs y_true_shape and y_pred_shape")
        obj = _CROSSENTROPY_BY_KIND[_target_kind(y_true_shape, y_pred_shape)]
    else:
        obj = get(identifier)
    if isinstance(obj, Loss):
        return obj
    name = identifier if isinstance(identifier, str) else getattr(obj, "__name__", None)
    return LossFunctionWrapper(obj, name=name)


__all__ = [
    "Loss",
    "resolve",
    "LossFunctionWrapper",
    "reduce_weighted_values",
    "squeeze_or_expand_to_same_rank",
    "standardize_reduction",
    "get",
    "serialize",
    "deserialize",
] + [fn.__name__ for fn in _FUNCTIONS] + [cls.__name__ for cls in _CLASSES[2:]] + [
    "mse", "MSE", "mae", "MAE", "mape", "MAPE", "msle", "MSLE", "kld", "KLD", "bce", "BCE",
]
