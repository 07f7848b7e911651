"""Activation functions, as `keras.activations`.

Every function is written with `pyfuncnet.ops`, so it computes eagerly on arrays
and records graph nodes on symbolic tensors. `get` turns a layer's `activation`
argument into a function and `serialize` turns a built-in function back into its
Keras name, which layers use both for their config and to fuse a built-in
activation into the native op (Dense = GEMM + bias + activation).
"""

import math
import numbers

from pyfuncnet import ops, utils


def relu(x, negative_slope=0.0, max_value=None, threshold=0.0):
    """Rectified linear unit, with Keras's optional slope, cap and threshold.

    With the defaults it is `max(x, 0)`. In general (as Keras 3 computes it):
    values above `threshold` pass through (values at or below it give 0), the
    result is clipped to `[0, max_value]` when `max_value` is set, and
    `negative_slope * (x - threshold)` is added below the threshold.

    Args:
        x: the input tensor.
        negative_slope: the slope below the threshold.
        max_value: the saturation value, or None for no cap; must be >= 0.
        threshold: where the activation starts.

    Example:
        >>> relu(np.array([-2.0, 1.0, 8.0]), negative_slope=0.5, max_value=6.0)  # [-1, 1, 6]
    """
    for name, value in (("negative_slope", negative_slope), ("threshold", threshold)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise ValueError(f"relu: `{name}` must be a finite number, got {value!r}")
    if max_value is not None:
        if isinstance(max_value, bool) or not isinstance(max_value, numbers.Real) or not max_value >= 0:
            raise ValueError(f"relu: `max_value` must be None or a number >= 0, got {max_value!r}")
    if negative_slope == 0 and max_value is None and threshold == 0:
        return ops.relu(x)
    if max_value is None and threshold == 0:
        return ops.leaky_relu(x, negative_slope=negative_slope)
    if threshold != 0:
        out = ops.where(ops.greater(x, threshold), x, 0.0)
        if max_value is not None:
            out = ops.clip(out, 0.0, max_value)
    else:
        # `max_value` is set here: the other cases with threshold 0 returned above.
        out = ops.clip(x, 0.0, max_value)
    if negative_slope != 0:
        below = ops.relu(ops.subtract(threshold, x))
        out = ops.subtract(out, ops.multiply(negative_slope, below))
    return out


def relu6(x):
    """`min(max(x, 0), 6)`.

    Example:
        >>> relu6(np.array([-1.0, 3.0, 9.0]))  # [0, 3, 6]
    """
    return ops.relu6(x)


def sigmoid(x):
    """`1 / (1 + exp(-x))`.

    Example:
        >>> sigmoid(np.array([0.0]))  # [0.5]
    """
    return ops.sigmoid(x)


def tanh(x):
    """Hyperbolic tangent.

    Example:
        >>> tanh(np.array([0.0]))  # [0.0]
    """
    return ops.tanh(x)


def softmax(x, axis=-1):
    """`exp(x) / sum(exp(x))` along `axis`.

    Args:
        x: the input tensor.
        axis: the axis the probabilities sum to 1 over.

    Example:
        >>> softmax(np.array([[0.0, 0.0]]))  # [[0.5, 0.5]]
    """
    return ops.softmax(x, axis=axis)


def log_softmax(x, axis=-1):
    """`x - log(sum(exp(x)))` along `axis`, computed stably.

    Args:
        x: the input tensor.
        axis: the axis of the normalisation.

    Example:
        >>> log_softmax(np.array([[0.0, 0.0]]))  # [[-0.693, -0.693]]
    """
    return ops.log_softmax(x, axis=axis)


def elu(x, alpha=1.0):
    """Exponential linear unit: `x` for `x > 0`, else `alpha * (exp(x) - 1)`.

    Args:
        x: the input tensor.
        alpha: the value approached for large negative inputs is `-alpha`.

    Example:
        >>> elu(np.array([-1.0, 2.0]))  # [-0.632, 2.0]
    """
    return ops.elu(x, alpha=alpha)


def selu(x):
    """Scaled ELU: `scale * elu(x, alpha)` with `alpha = 1.67326324...` and
    `scale = 1.05070098...` (self-normalising constants).

    Example:
        >>> selu(np.array([1.0]))  # [1.0507]
    """
    return ops.selu(x)


def gelu(x, approximate=False):
    """Gaussian error linear unit `x * Phi(x)`; exact (erf) by default, as
    `keras.activations.gelu`, or with the tanh approximation.

    Args:
        x: the input tensor.
        approximate: use `0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x**3)))`.

    Example:
        >>> gelu(np.array([1.0]))  # [0.8413]
    """
    return ops.gelu(x, approximate=approximate)


def silu(x):
    """Sigmoid linear unit (swish): `x * sigmoid(x)`.

    Example:
        >>> silu(np.array([1.0]))  # [0.7311]
    """
    return ops.silu(x)


def softplus(x):
    """`log(1 + exp(x))`, computed stably.

    Example:
        >>> softplus(np.array([0.0]))  # [0.6931]
    """
    return ops.softplus(x)


def softsign(x):
    """`x / (1 + |x|)`.

    Example:
        >>> softsign(np.array([1.0]))  # [0.5]
    """
    return ops.softsign(x)


def leaky_relu(x, negative_slope=0.2):
    """`x` for `x >= 0`, else `negative_slope * x`.

    Args:
        x: the input tensor.
        negative_slope: the slope for negative inputs.

    Example:
        >>> leaky_relu(np.array([-1.0, 1.0]))  # [-0.2, 1.0]
    """
    return ops.leaky_relu(x, negative_slope=negative_slope)


def hard_sigmoid(x):
    """Piecewise linear sigmoid (Keras 3): `relu6(x + 3) / 6`, i.e. 0 below -3, 1
    above 3 and `x / 6 + 0.5` between.

    Example:
        >>> hard_sigmoid(np.array([0.0, 4.0]))  # [0.5, 1.0]
    """
    return ops.hard_sigmoid(x)


def hard_silu(x):
    """Hard SiLU (hard swish): `x * hard_sigmoid(x)`.

    Example:
        >>> hard_silu(np.array([1.0]))  # [0.6667]
    """
    return ops.multiply(x, ops.hard_sigmoid(x))


def exponential(x):
    """`exp(x)`.

    Example:
        >>> exponential(np.array([0.0]))  # [1.0]
    """
    return ops.exponential(x)


def linear(x):
    """The identity: returns `x` unchanged.

    Example:
        >>> linear(np.array([2.0]))  # [2.0]
    """
    return x


def mish(x):
    """`x * tanh(softplus(x))`.

    Example:
        >>> mish(np.array([1.0]))  # [0.8651]
    """
    return ops.multiply(x, ops.tanh(ops.softplus(x)))


# Keras's aliases.
swish = silu
hard_swish = hard_silu

_BUILTINS = (
    relu,
    relu6,
    sigmoid,
    tanh,
    softmax,
    log_softmax,
    elu,
    selu,
    gelu,
    silu,
    softplus,
    softsign,
    leaky_relu,
    hard_sigmoid,
    hard_silu,
    exponential,
    linear,
    mish,
)
_BY_NAME = {fn.__name__: fn for fn in _BUILTINS}
_BY_NAME.update(swish=silu, hard_swish=hard_silu)

# Functions whose one-argument call equals a built-in activation, by identity:
# the built-ins, and the `ops` functions with the same defaults. (`ops.gelu` is not
# among them: its default is the tanh approximation, the activation's is exact.)
_NAME_OF = {id(fn): fn.__name__ for fn in _BUILTINS}
for _name in (
    "relu",
    "relu6",
    "sigmoid",
    "tanh",
    "softmax",
    "log_softmax",
    "elu",
    "selu",
    "silu",
    "softplus",
    "softsign",
    "leaky_relu",
    "hard_sigmoid",
    "exponential",
    "linear",
):
    _NAME_OF[id(getattr(ops, _name))] = _name
del _name


def serialize(activation):
    """The Keras name of a built-in activation (e.g. "relu"), as Keras 3 writes it
    in layer configs; a custom function gives Keras's
    `{"module", "class_name": "function", "config", "registered_name"}` dict.

    A function counts as built-in by identity (this module's functions and the
    `ops` functions with the same defaults), never by its name.

    Args:
        activation: a function.

    Example:
        >>> serialize(relu)
        'relu'
    """
    name = _NAME_OF.get(id(activation))
    if name is not None:
        return name
    if not callable(activation):
        raise TypeError(f"serialize: expected an activation function, got {activation!r}")
    return utils._function_config(activation)


def deserialize(config, custom_objects=None):
    """The activation function a name or serialized config stands for.

    Args:
        config: a name ("relu") or a dict from `serialize`.
        custom_objects: a dict of user functions by name; searched first.

    Example:
        >>> deserialize("gelu") is gelu
        True
    """
    custom = custom_objects or {}
    if isinstance(config, dict):
        name = config.get("registered_name") or config.get("config")
        if not isinstance(name, str):
            raise ValueError(f"Could not interpret activation function config: {config!r}")
    elif isinstance(config, str):
        name = config
    else:
        raise ValueError(f"Could not interpret activation function identifier: {config!r}")
    fn = custom.get(name) or _BY_NAME.get(name)
    if fn is None:
        known = ", ".join(sorted(_BY_NAME))
        raise ValueError(f"Could not interpret activation function identifier: {name!r}; expected one of: {known}")
    return fn


def get(identifier):
    """The activation function for a layer's `activation` argument.

    None gives `linear`; a name or serialized config gives the built-in; a callable
    is returned as is.

    Args:
        identifier: None, a name, a dict or a callable.

    Example:
        >>> get(None) is linear
        True
        >>> get("relu") is relu
        True
    """
    if identifier is None:
        return linear
    if isinstance(identifier, (str, dict)):
        return deserialize(identifier)
    if callable(identifier):
        return identifier
    raise ValueError(f"Could not interpret activation function identifier: {identifier!r}")
