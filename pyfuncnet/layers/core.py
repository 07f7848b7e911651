"""Core layers: Dense, Activation, Dropout, Flatten, Reshape, Permute, RepeatVector,
Lambda, ActivityRegularization.

They are written with `pyfuncnet.ops`; the core's fusion pass turns Dense's
matmul + bias + activation into one GEMM with a fused epilogue in compiled steps.
"""

import inspect
import math

import numpy as np

from pyfuncnet import _symbolic, activations, constraints, initializers, ops, regularizers
from pyfuncnet._symbolic import KerasTensor
from pyfuncnet.layers.layer import InputSpec, Layer, next_random_stream


def _positive_int(layer, arg, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{layer}: `{arg}` must be a positive integer, got {value!r}")
    return int(value)


class Dense(Layer):
    """`activation(inputs @ kernel + bias)` over the last axis.

    Args:
        units: the size of the output's last axis.
        activation: an activation name or function (linear by default).
        use_bias: whether to add a bias.
        kernel_initializer, bias_initializer: "glorot_uniform" and "zeros" by default.
        kernel_regularizer, bias_regularizer, activity_regularizer: penalties added
            to the loss.
        kernel_constraint, bias_constraint: applied after each update.

    Weights: `kernel` of shape `(input_dim, units)`, then `bias` of shape `(units,)`.

    Example:
        >>> y = Dense(64, activation="relu")(Input(shape=(784,)))
    """

    def __init__(self, units, activation=None, use_bias=True, kernel_initializer="glorot_uniform", bias_initializer="zeros", kernel_regularizer=None, bias_regularizer=None, activity_regularizer=None, kernel_constraint=None, bias_constraint=None, lora_rank=None, **kwargs):
        super().__init__(activity_regularizer=activity_regularizer, **kwargs)
        self.units = _positive_int(f"Dense '{self.name}'", "units", units)
        self.activation = activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.kernel_regularizer = regularizers.get(kernel_regularizer)
        self.bias_regularizer = regularizers.get(bias_regularizer)
        self.kernel_constraint = constraints.get(kernel_constraint)
        self.bias_constraint = constraints.get(bias_constraint)
        self.input_spec = InputSpec(min_ndim=2)
        self.supports_masking = True

    def build(self, input_shape):
        input_dim = input_shape[-1]
        if input_dim is None:
            raise ValueError(f"Dense '{self.name}': the last dimension of the input must be known, got shape {tuple(input_shape)}")
        self.kernel = self.add_weight(shape=(input_dim, self.units), initializer=self.kernel_initializer, regularizer=self.kernel_regularizer, constraint=self.kernel_constraint, name="kernel")
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(shape=(self.units,), initializer=self.bias_initializer, regularizer=self.bias_regularizer, constraint=self.bias_constraint, name="bias")
        self.input_spec = InputSpec(min_ndim=2, axes={-1: input_dim})
        self.built = True

    def call(self, inputs):
        x = ops.matmul(inputs, self.kernel)
        if self.bias is not None:
            x = ops.add(x, self.bias)
        return self.activation(x)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def get_config(self):
        config = super().get_config()
        config.update(
            units=self.units,
            activation=activations.serialize(self.activation),
            use_bias=self.use_bias,
            kernel_initializer=initializers.serialize(self.kernel_initializer),
            bias_initializer=initializers.serialize(self.bias_initializer),
            kernel_regularizer=regularizers.serialize(self.kernel_regularizer),
            bias_regularizer=regularizers.serialize(self.bias_regularizer),
            kernel_constraint=constraints.serialize(self.kernel_constraint),
            bias_constraint=constraints.serialize(self.bias_constraint),
        )
        return config


class Activation(Layer):
    """Applies an activation function.

    Args:
        activation: a name ("relu", "softmax", ...) or a function of a tensor.
    """

    def __init__(self, activation, **kwargs):
        super().__init__(**kwargs)
        self.activation = activations.get(activation)
        self.supports_masking = True

    def call(self, inputs):
        return self.activation(inputs)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config["activation"] = activations.serialize(self.activation)
        return config


def _check_rate(layer, rate):
    """`rate` as a float in [0, 1), or a ValueError naming `layer`."""
    if isinstance(rate, bool) or not isinstance(rate, (int, float, np.integer, np.floating)) or not 0 <= rate < 1:
        raise ValueError(f"{layer}: `rate` must be a number in [0, 1), got {rate!r}")
    return float(rate)


def _check_noise_shape(layer, noise_shape):
    """`noise_shape` as a tuple of None / non-negative ints (or None)."""
    if noise_shape is None:
        return None
    entries = tuple(noise_shape) if isinstance(noise_shape, (list, tuple)) else None
    if entries is None or not all(
        d is None or (isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d >= 0) for d in entries
    ):
        raise ValueError(f"{layer}: `noise_shape` must be a tuple of non-negative integers or None, got {noise_shape!r}")
    return tuple(None if d is None else int(d) for d in entries)


class Dropout(Layer):
    """Sets a fraction `rate` of the inputs to zero during training and scales the
    rest by `1 / (1 - rate)`; the identity at inference.

    Args:
        rate: the fraction to drop, in [0, 1).
        noise_shape: the shape of the keep/drop mask, broadcast over the input, as
            in Keras: one entry per input dimension, None for the input's size (e.g.
            `(None, 1, 1, None)` drops whole feature maps of `(batch, h, w, c)`
            inputs). None (the default) draws one decision per element.
        seed: an integer seed; the mask depends on it, the layer and the step
            (not on the thread count).

    Example:
        >>> y = Dropout(0.5, noise_shape=(None, 1, None))(Input(shape=(10, 8)))
    """

    def __init__(self, rate, noise_shape=None, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.rate = _check_rate(f"{type(self).__name__} '{self.name}'", rate)
        self.noise_shape = _check_noise_shape(f"{type(self).__name__} '{self.name}'", noise_shape)
        self.seed = seed
        self._stream = next_random_stream()
        self._eager_rng = np.random.default_rng(seed)
        self.supports_masking = True

    def _noise_spec(self, ndim):
        """The mask's shape before resolving: None entries take the input's size."""
        return self.noise_shape

    def _broadcast_axes(self, shape):
        """For an input of `shape` (None for unknown sizes): a tuple with 1 on the
        axes the mask is broadcast along and None elsewhere, or None when the mask
        has the input's shape. Raises ValueError naming the layer for a noise shape
        that does not fit."""
        spec = self._noise_spec(len(shape))
        if spec is None:
            return None
        where = f"{type(self).__name__} '{self.name}'"
        if len(spec) != len(shape):
            raise ValueError(
                f"{where}: `noise_shape` {spec} must have one entry per input dimension; "
                f"the input has shape {tuple(shape)}"
            )
        axes = []
        for axis, (n, d) in enumerate(zip(spec, shape)):
            if n is None or n == d or (d is None and n != 1):
                # The input's size (an int against an unknown size is taken as it).
                axes.append(None)
            elif n == 1:
                axes.append(1)
            else:
                raise ValueError(
                    f"{where}: `noise_shape` {spec} does not fit an input of shape {tuple(shape)}: "
                    f"entry {n} at axis {axis} must be None, 1 or the input's size {d}"
                )
        return tuple(axes) if 1 in axes else None

    def call(self, inputs, training=None):
        if self.rate == 0 or training is False:
            return inputs
        inputs = ops._float(inputs)
        axes = self._broadcast_axes(ops._shape(inputs))
        if isinstance(inputs, KerasTensor):
            # The core's dropout op is active in training steps only.
            attrs = {"rate": self.rate, "seed": int(self.seed or 0), "stream": self._stream}
            if axes is not None:
                base = attrs

                def attrs(shapes):
                    noise = [d if a is None else 1 for a, d in zip(axes, shapes[0])]
                    return dict(base, noise_shape=noise)

            return _symbolic.apply("dropout", attrs, [inputs])[0]
        if not training:
            return inputs
        shape = ops._shape(inputs)
        if axes is not None:
            shape = tuple(d if a is None else 1 for a, d in zip(axes, shape))
        keep = self._eager_rng.random(shape) >= self.rate
        return ops.multiply(inputs, keep.astype(np.float32) / np.float32(1.0 - self.rate))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(rate=self.rate, seed=self.seed, noise_shape=self.noise_shape)
        return config


def _prod(dims):
    return int(math.prod(dims))


class Flatten(Layer):
    """Flattens each sample: `(batch, d1, d2, ...)` -> `(batch, d1*d2*...)`.

    Args:
        data_format: "channels_last" (default) or "channels_first" (samples are
            flattened as if channels came last, as Keras does).
    """

    def __init__(self, data_format=None, **kwargs):
        super().__init__(**kwargs)
        self.data_format = data_format or "channels_last"
        self.input_spec = InputSpec(min_ndim=1)

    def call(self, inputs):
        x = inputs
        if self.data_format == "channels_first" and x.ndim > 2:
            x = ops.transpose(x, (0,) + tuple(range(2, x.ndim)) + (1,))
        return ops._reshape_by(x, lambda s: [s[0], _prod(s[1:])])

    def compute_output_shape(self, input_shape):
        rest = input_shape[1:]
        return (input_shape[0], None if any(d is None for d in rest) else _prod(rest))

    def get_config(self):
        config = super().get_config()
        config["data_format"] = self.data_format
        return config


class Reshape(Layer):
    """Reshapes each sample to `target_shape` (one dimension may be -1).

    Args:
        target_shape: the shape of one sample after the layer.
    """

    def __init__(self, target_shape, **kwargs):
        super().__init__(**kwargs)
        self.target_shape = tuple(int(d) for d in target_shape)
        if sum(d == -1 for d in self.target_shape) > 1 or any(d < -1 for d in self.target_shape):
            raise ValueError(f"Reshape '{self.name}': invalid target_shape {target_shape}: at most one -1, no other negative sizes")

    def _resolve(self, sample_shape):
        size = _prod(sample_shape)
        known = _prod(d for d in self.target_shape if d != -1)
        if -1 in self.target_shape:
            if known == 0 or size % known:
                raise ValueError(f"Reshape '{self.name}': cannot reshape samples of shape {tuple(sample_shape)} into {self.target_shape}")
            return [size // known if d == -1 else d for d in self.target_shape]
        if known != size:
            raise ValueError(
                f"Reshape '{self.name}': total size of the new shape {self.target_shape} ({known}) must equal "
                f"the size of each input sample {tuple(sample_shape)} ({size})"
            )
        return list(self.target_shape)

    def build(self, input_shape):
        if all(d is not None for d in input_shape[1:]):
            self._resolve(input_shape[1:])
        self.built = True

    def call(self, inputs):
        return ops._reshape_by(inputs, lambda s: [s[0]] + self._resolve(s[1:]))

    def compute_output_shape(self, input_shape):
        if any(d is None for d in input_shape[1:]):
            return (input_shape[0],) + tuple(None if d == -1 else d for d in self.target_shape)
        return (input_shape[0],) + tuple(self._resolve(input_shape[1:]))

    def get_config(self):
        config = super().get_config()
        config["target_shape"] = self.target_shape
        return config


class Permute(Layer):
    """Permutes the non-batch axes: `dims` is a permutation of 1..rank-1.

    Example:
        >>> Permute((2, 1))(Input(shape=(10, 64))).shape
        (None, 64, 10)
    """

    def __init__(self, dims, **kwargs):
        super().__init__(**kwargs)
        self.dims = tuple(int(d) for d in dims)
        if sorted(self.dims) != list(range(1, len(self.dims) + 1)):
            raise ValueError(f"Permute '{self.name}': `dims` must be a permutation of 1..{len(self.dims)}, got {self.dims}")
        self.input_spec = InputSpec(ndim=len(self.dims) + 1)

    def call(self, inputs):
        return ops.transpose(inputs, (0,) + self.dims)

    def compute_output_shape(self, input_shape):
        return (input_shape[0],) + tuple(input_shape[d] for d in self.dims)

    def get_config(self):
        config = super().get_config()
        config["dims"] = self.dims
        return config


class RepeatVector(Layer):
    """Repeats a `(batch, features)` input `n` times: `(batch, n, features)`."""

    def __init__(self, n, **kwargs):
        super().__init__(**kwargs)
        self.n = _positive_int(f"RepeatVector '{self.name}'", "n", n)
        self.input_spec = InputSpec(ndim=2)

    def call(self, inputs):
        x = ops.expand_dims(inputs, 1)
        return ops._run1("broadcast_to", lambda s: {"shape": [s[0][0], self.n, s[0][2]]}, x)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.n, input_shape[1])

    def get_config(self):
        config = super().get_config()
        config["n"] = self.n
        return config


class Lambda(Layer):
    """Wraps a function of tensors written with `ops` as a layer (differentiable).

    Args:
        function: called as `function(inputs, **arguments)`, plus `mask=` and
            `training=` when it has arguments of those names.
        output_shape: accepted for compatibility; the shape is inferred.
        mask: the output mask: a function `mask(inputs, previous_mask)` or a
            fixed value. None (the default) drops the input's mask.
        arguments: extra keyword arguments for `function`.
    """

    def __init__(self, function, output_shape=None, mask=None, arguments=None, **kwargs):
        super().__init__(**kwargs)
        if not callable(function):
            raise TypeError(f"Lambda '{self.name}': `function` must be callable, got {type(function).__name__}")
        self.function = function
        self._output_shape = output_shape
        self.arguments = dict(arguments or {})
        # As in Keras: the mask is dropped unless `mask` says what it becomes.
        self.mask = mask
        self.supports_masking = mask is not None
        try:
            params = inspect.getfullargspec(function).args
        except TypeError:
            params = []
        self._fn_expects_mask_arg = "mask" in params
        self._fn_expects_training_arg = "training" in params

    def call(self, inputs, mask=None, training=None):
        kwargs = dict(self.arguments)
        if self._fn_expects_mask_arg:
            kwargs["mask"] = mask
        if self._fn_expects_training_arg:
            kwargs["training"] = training
        return self.function(inputs, **kwargs)

    def compute_mask(self, inputs, mask=None):
        """`mask(inputs, previous_mask)` when `mask` is callable, else `mask` itself."""
        if callable(self.mask):
            return self.mask(inputs, mask)
        return self.mask

    def compute_output_shape(self, input_shape):
        if self._output_shape is None:
            return super().compute_output_shape(input_shape)
        if callable(self._output_shape):
            return self._output_shape(input_shape)
        return (input_shape[0],) + tuple(self._output_shape)

    def get_config(self):
        config = super().get_config()
        config.update(function=getattr(self.function, "__name__", "lambda"), output_shape=self._output_shape, arguments=self.arguments)
        return config


class ActivityRegularization(Layer):
    """The identity, adding `l1 * sum|x| + l2 * sum x^2` (per sample) to the loss."""

    def __init__(self, l1=0.0, l2=0.0, **kwargs):
        super().__init__(activity_regularizer=regularizers.L1L2(l1=l1, l2=l2), **kwargs)
        self.l1, self.l2 = float(l1), float(l2)
        self.supports_masking = True

    def call(self, inputs):
        return inputs

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(l1=self.l1, l2=self.l2)
        return config

