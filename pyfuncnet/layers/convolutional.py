"""Convolution layers: Conv1D, Conv2D, Conv3D.

Each lowers to one `conv` op (im2col + GEMM in the core) followed by the bias add
and the activation, which the compiled graph fuses into the GEMM's epilogue.
Weights are Keras's: `kernel` of shape `kernel_size + (input_channels // groups,
filters)`, then `bias` of shape `(filters,)`.
"""

from pyfuncnet import activations, constraints, initializers, ops, regularizers
from pyfuncnet.layers.layer import InputSpec, Layer


def normalize_tuple(value, rank, arg, layer, allow_zero=False):
    """`value` (an int or a sequence of `rank` ints) as a tuple, checked as Keras does."""
    try:
        values = (int(value),) * rank if isinstance(value, int) else tuple(int(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{layer}: the `{arg}` argument must be a tuple of {rank} integers. Received {arg}={value!r}") from None
    if len(values) != rank:
        raise ValueError(f"{layer}: the `{arg}` argument must be a tuple of {rank} integers. Received {arg}={value!r}")
    floor = 0 if allow_zero else 1
    if any(v < floor for v in values):
        which = "negative values" if allow_zero else "0 or negative values"
        raise ValueError(f"{layer}: the `{arg}` argument cannot contain {which}. Received {arg}={value!r}")
    return values


def normalize_data_format(value):
    fmt = (value or "channels_last").lower()
    if fmt not in ("channels_last", "channels_first"):
        raise ValueError(f"The `data_format` argument must be one of 'channels_first', 'channels_last'. Received: data_format={value!r}")
    return fmt


def conv_output_length(length, kernel, stride, dilation, padding):
    """The output length of one spatial axis (None stays None), as Keras computes it."""
    if length is None:
        return None
    extent = (kernel - 1) * dilation + 1
    if padding == "valid":
        return max((length - extent) // stride + 1, 0)
    return (length + stride - 1) // stride


class BaseConv(Layer):
    """The convolution layers' shared implementation over `rank` spatial axes."""

    rank = None

    def __init__(self, filters, kernel_size, strides=1, padding="valid", data_format=None, dilation_rate=1, groups=1, activation=None, use_bias=True, kernel_initializer="glorot_uniform", bias_initializer="zeros", kernel_regularizer=None, bias_regularizer=None, activity_regularizer=None, kernel_constraint=None, bias_constraint=None, lora_rank=None, **kwargs):
        super().__init__(activity_regularizer=activity_regularizer, **kwargs)
        label = f"{type(self).__name__} '{self.name}'"
        rank = self.rank
        if isinstance(filters, bool) or not isinstance(filters, int) or filters <= 0:
            raise ValueError(f"{label}: invalid value for argument `filters`. Expected a strictly positive value. Received filters={filters!r}.")
        if isinstance(groups, bool) or not isinstance(groups, int) or groups <= 0:
            raise ValueError(f"{label}: the number of groups must be a positive integer. Received: groups={groups!r}.")
        if filters % groups:
            raise ValueError(f"{label}: the number of filters must be evenly divisible by the number of groups. Received: groups={groups}, filters={filters}.")
        self.filters = filters
        self.groups = groups
        self.kernel_size = normalize_tuple(kernel_size, rank, "kernel_size", label)
        self.strides = normalize_tuple(strides, rank, "strides", label)
        self.dilation_rate = normalize_tuple(dilation_rate, rank, "dilation_rate", label)
        allowed = ("valid", "same", "causal") if rank == 1 else ("valid", "same")
        self.padding = str(padding).lower()
        if self.padding not in allowed:
            raise ValueError(f"{label}: the `padding` argument must be one of {', '.join(repr(a) for a in allowed)}. Received: padding={padding!r}")
        if max(self.strides) > 1 and max(self.dilation_rate) > 1:
            raise ValueError(f"{label}: `strides > 1` not supported in conjunction with `dilation_rate > 1`. Received: strides={self.strides} and dilation_rate={self.dilation_rate}")
        self.data_format = normalize_data_format(data_format)
        self.activation = activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.kernel_regularizer = regularizers.get(kernel_regularizer)
        self.bias_regularizer = regularizers.get(bias_regularizer)
        self.kernel_constraint = constraints.get(kernel_constraint)
        self.bias_constraint = constraints.get(bias_constraint)
        self.input_spec = InputSpec(min_ndim=rank + 2)

    @property
    def _channel_axis(self):
        return 1 if self.data_format == "channels_first" else -1

    def build(self, input_shape):
        channels = input_shape[self._channel_axis]
        label = f"{type(self).__name__} '{self.name}'"
        if channels is None:
            raise ValueError(f"{label}: the channel dimension of the inputs must be known, got shape {tuple(input_shape)}")
        if channels % self.groups:
            raise ValueError(f"{label}: the number of input channels must be evenly divisible by the number of groups. Received groups={self.groups}, but the input has {channels} channels (full input shape is {tuple(input_shape)}).")
        self.compute_output_shape(input_shape)  # refuses windows larger than the input
        shape = self.kernel_size + (channels // self.groups, self.filters)
        self.kernel = self.add_weight(shape=shape, initializer=self.kernel_initializer, regularizer=self.kernel_regularizer, constraint=self.kernel_constraint, name="kernel")
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(shape=(self.filters,), initializer=self.bias_initializer, regularizer=self.bias_regularizer, constraint=self.bias_constraint, name="bias")
        self.input_spec = InputSpec(min_ndim=self.rank + 2, axes={self._channel_axis: channels})
        self.built = True

    def convolution_op(self, inputs, kernel):
        return ops.conv(inputs, kernel, strides=self.strides, padding=self.padding, dilation_rate=self.dilation_rate, data_format=self.data_format)

    def call(self, inputs):
        x = self.convolution_op(inputs, self.kernel)
        if self.bias is not None:
            bias = self.bias
            if self.data_format == "channels_first":
                bias = ops.reshape(bias, (self.filters,) + (1,) * self.rank)
            x = ops.add(x, bias)
        return self.activation(x)

    def compute_output_shape(self, input_shape):
        input_shape = tuple(input_shape)
        first = self.data_format == "channels_first"
        spatial = input_shape[2:] if first else input_shape[1:-1]
        if len(spatial) != self.rank:
            raise ValueError(f"{type(self).__name__} '{self.name}': expected an input of rank {self.rank + 2}, got shape {input_shape}")
        out = []
        for n, k, s, d in zip(spatial, self.kernel_size, self.strides, self.dilation_rate):
            extent = (k - 1) * d + 1
            if self.padding == "valid" and n is not None and n < extent:
                raise ValueError(f"{type(self).__name__} '{self.name}': the kernel (size {self.kernel_size}, dilation {self.dilation_rate}) is larger than the input's spatial shape {tuple(spatial)} with padding='valid' (input shape {input_shape})")
            out.append(conv_output_length(n, k, s, d, self.padding))
        if first:
            return (input_shape[0], self.filters) + tuple(out)
        return (input_shape[0],) + tuple(out) + (self.filters,)

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            kernel_size=self.kernel_size,
            strides=self.strides,
            padding=self.padding,
            data_format=self.data_format,
            dilation_rate=self.dilation_rate,
            groups=self.groups,
            activation=activations.serialize(self.activation),
            use_bias=self.use_bias,
            kernel_initializer=initializers.serialize(self.kernel_initializer),
            bias_initializer=initializers.serialize(self.bias_initializer),
            kernel_regularizer=regularizers.serialize(self.kernel_regularizer),
            bias_regularizer=regularizers.serialize(self.bias_regularizer),
            activity_regularizer=regularizers.serialize(self.activity_regularizer),
            kernel_constraint=constraints.serialize(self.kernel_constraint),
            bias_constraint=constraints.serialize(self.bias_constraint),
        )
        return config


class Conv1D(BaseConv):
    """1-D convolution over `(batch, steps, channels)`; `padding` may also be
    "causal" (output `t` sees inputs up to `t` only).

    Example:
        >>> y = Conv1D(32, 3, activation="relu")(Input(shape=(100, 8)))
    """

    rank = 1


class Conv2D(BaseConv):
    """2-D convolution over `(batch, height, width, channels)`.

    Example:
        >>> y = Conv2D(32, 3, activation="relu")(Input(shape=(28, 28, 1)))
    """

    rank = 2


class Conv3D(BaseConv):
    """3-D convolution over `(batch, depth, height, width, channels)`."""

    rank = 3
