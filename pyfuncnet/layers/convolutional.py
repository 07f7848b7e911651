"""Convolution layers: Conv1D/2D/3D, their transposes, depthwise and separable
convolutions.

Each lowers to `conv` ops (im2col + GEMM in the core) followed by the bias add and
the activation, which the compiled graph fuses into the GEMM's epilogue. Weights
are Keras's: Conv `kernel` of shape `kernel_size + (input_channels // groups,
filters)`, transposed `kernel_size + (filters, input_channels)`, depthwise
`kernel_size + (input_channels, depth_multiplier)`, then `bias`.
"""

from pyfuncnet import _symbolic, activations, constraints, initializers, ops, regularizers
from pyfuncnet._symbolic import KerasTensor
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


def _positive(value, arg, label):
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{label}: invalid value for argument `{arg}`. Expected a strictly positive value. Received {arg}={value!r}.")
    return value


class _Windowed(Layer):
    """What every convolution layer shares: the window arguments, the data format,
    the activation and the bias, and the output shape."""

    rank = None
    paddings = ("valid", "same")

    def __init__(self, kernel_size, strides, padding, data_format, dilation_rate, activation, use_bias, bias_initializer, bias_regularizer, bias_constraint, activity_regularizer, **kwargs):
        super().__init__(activity_regularizer=activity_regularizer, **kwargs)
        label = self._label
        rank = self.rank
        self.kernel_size = normalize_tuple(kernel_size, rank, "kernel_size", label)
        self.strides = normalize_tuple(strides, rank, "strides", label)
        self.dilation_rate = normalize_tuple(dilation_rate, rank, "dilation_rate", label)
        self.padding = str(padding).lower()
        if self.padding not in self.paddings:
            raise ValueError(f"{label}: the `padding` argument must be one of {', '.join(repr(a) for a in self.paddings)}. Received: padding={padding!r}")
        if max(self.strides) > 1 and max(self.dilation_rate) > 1:
            raise ValueError(f"{label}: `strides > 1` not supported in conjunction with `dilation_rate > 1`. Received: strides={self.strides} and dilation_rate={self.dilation_rate}")
        self.data_format = normalize_data_format(data_format)
        self.activation = activations.get(activation)
        self.use_bias = bool(use_bias)
        self.bias_initializer = initializers.get(bias_initializer)
        self.bias_regularizer = regularizers.get(bias_regularizer)
        self.bias_constraint = constraints.get(bias_constraint)
        self.input_spec = InputSpec(min_ndim=rank + 2)

    @property
    def _label(self):
        return f"{type(self).__name__} '{self.name}'"

    @property
    def _channel_axis(self):
        return 1 if self.data_format == "channels_first" else -1

    def _input_channels(self, input_shape):
        channels = input_shape[self._channel_axis]
        if channels is None:
            raise ValueError(f"{self._label}: the channel dimension of the inputs must be known, got shape {tuple(input_shape)}")
        self.compute_output_shape(input_shape)  # refuses windows larger than the input
        return channels

    def _finish_build(self, channels, bias_size):
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(shape=(bias_size,), initializer=self.bias_initializer, regularizer=self.bias_regularizer, constraint=self.bias_constraint, name="bias")
        self.input_spec = InputSpec(min_ndim=self.rank + 2, axes={self._channel_axis: channels})
        self.built = True

    def _bias_and_activation(self, x):
        if self.bias is not None:
            bias = self.bias
            if self.data_format == "channels_first":
                # Reshaped as a weight of the graph, not as its current value.
                if isinstance(x, KerasTensor):
                    bias = _symbolic.variable_ref(bias)
                bias = ops.reshape(bias, (-1,) + (1,) * self.rank)
            x = ops.add(x, bias)
        return self.activation(x)

    def _spatial(self, input_shape):
        input_shape = tuple(input_shape)
        spatial = input_shape[2:] if self.data_format == "channels_first" else input_shape[1:-1]
        if len(spatial) != self.rank:
            raise ValueError(f"{self._label}: expected an input of rank {self.rank + 2}, got shape {input_shape}")
        return spatial

    def _output_shape(self, input_shape, spatial, channels):
        if self.data_format == "channels_first":
            return (input_shape[0], channels) + tuple(spatial)
        return (input_shape[0],) + tuple(spatial) + (channels,)

    def _conv_output_shape(self, input_shape, channels):
        spatial = self._spatial(input_shape)
        out = []
        for n, k, s, d in zip(spatial, self.kernel_size, self.strides, self.dilation_rate):
            extent = (k - 1) * d + 1
            if self.padding == "valid" and n is not None and n < extent:
                raise ValueError(f"{self._label}: the kernel (size {self.kernel_size}, dilation {self.dilation_rate}) is larger than the input's spatial shape {tuple(spatial)} with padding='valid' (input shape {tuple(input_shape)})")
            out.append(conv_output_length(n, k, s, d, self.padding))
        return self._output_shape(input_shape, out, channels)

    def get_config(self):
        config = super().get_config()
        config.update(
            kernel_size=self.kernel_size,
            strides=self.strides,
            padding=self.padding,
            data_format=self.data_format,
            dilation_rate=self.dilation_rate,
            activation=activations.serialize(self.activation),
            use_bias=self.use_bias,
            bias_initializer=initializers.serialize(self.bias_initializer),
            bias_regularizer=regularizers.serialize(self.bias_regularizer),
            activity_regularizer=regularizers.serialize(self.activity_regularizer),
            bias_constraint=constraints.serialize(self.bias_constraint),
        )
        return config


class BaseConv(_Windowed):
    """The convolution layers' shared implementation over `rank` spatial axes."""

    def __init__(self, filters, kernel_size, strides=1, padding="valid", data_format=None, dilation_rate=1, groups=1, activation=None, use_bias=True, kernel_initializer="glorot_uniform", bias_initializer="zeros", kernel_regularizer=None, bias_regularizer=None, activity_regularizer=None, kernel_constraint=None, bias_constraint=None, lora_rank=None, **kwargs):
        super().__init__(kernel_size, strides, padding, data_format, dilation_rate, activation, use_bias, bias_initializer, bias_regularizer, bias_constraint, activity_regularizer, **kwargs)
        label = self._label
        self.filters = _positive(filters, "filters", label)
        self.groups = _positive(groups, "groups", label)
        if filters % groups:
            raise ValueError(f"{label}: the number of filters must be evenly divisible by the number of groups. Received: groups={groups}, filters={filters}.")
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.kernel_regularizer = regularizers.get(kernel_regularizer)
        self.kernel_constraint = constraints.get(kernel_constraint)

    def build(self, input_shape):
        channels = self._input_channels(input_shape)
        label = self._label
        if channels % self.groups:
            raise ValueError(f"{label}: the number of input channels must be evenly divisible by the number of groups. Received groups={self.groups}, but the input has {channels} channels (full input shape is {tuple(input_shape)}).")
        shape = self.kernel_size + (channels // self.groups, self.filters)
        self.kernel = self.add_weight(shape=shape, initializer=self.kernel_initializer, regularizer=self.kernel_regularizer, constraint=self.kernel_constraint, name="kernel")
        self._finish_build(channels, self.filters)

    def convolution_op(self, inputs, kernel):
        return ops.conv(inputs, kernel, strides=self.strides, padding=self.padding, dilation_rate=self.dilation_rate, data_format=self.data_format)

    def call(self, inputs):
        return self._bias_and_activation(self.convolution_op(inputs, self.kernel))

    def compute_output_shape(self, input_shape):
        return self._conv_output_shape(input_shape, self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            groups=self.groups,
            kernel_initializer=initializers.serialize(self.kernel_initializer),
            kernel_regularizer=regularizers.serialize(self.kernel_regularizer),
            kernel_constraint=constraints.serialize(self.kernel_constraint),
        )
        return config


class BaseConvTranspose(_Windowed):
    """Transposed convolution (the adjoint of a convolution: the gradient of its
    input), as used to upsample in decoders."""

    def __init__(self, filters, kernel_size, strides=1, padding="valid", output_padding=None, data_format=None, dilation_rate=1, activation=None, use_bias=True, kernel_initializer="glorot_uniform", bias_initializer="zeros", kernel_regularizer=None, bias_regularizer=None, activity_regularizer=None, kernel_constraint=None, bias_constraint=None, **kwargs):
        super().__init__(kernel_size, strides, padding, data_format, dilation_rate, activation, use_bias, bias_initializer, bias_regularizer, bias_constraint, activity_regularizer, **kwargs)
        label = self._label
        self.filters = _positive(filters, "filters", label)
        self.output_padding = None
        if output_padding is not None:
            self.output_padding = normalize_tuple(output_padding, self.rank, "output_padding", label, allow_zero=True)
            if any(p >= s for p, s in zip(self.output_padding, self.strides)):
                raise ValueError(f"{label}: strides must be greater than output padding. Received strides={self.strides}, output_padding={self.output_padding}.")
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.kernel_regularizer = regularizers.get(kernel_regularizer)
        self.kernel_constraint = constraints.get(kernel_constraint)

    def build(self, input_shape):
        channels = self._input_channels(input_shape)
        shape = self.kernel_size + (self.filters, channels)
        self.kernel = self.add_weight(shape=shape, initializer=self.kernel_initializer, regularizer=self.kernel_regularizer, constraint=self.kernel_constraint, name="kernel")
        self._finish_build(channels, self.filters)

    def call(self, inputs):
        x = ops.conv_transpose(inputs, self.kernel, strides=self.strides, padding=self.padding, output_padding=self.output_padding, data_format=self.data_format, dilation_rate=self.dilation_rate)
        return self._bias_and_activation(x)

    def compute_output_shape(self, input_shape):
        out = []
        pads = self.output_padding or (None,) * self.rank
        for n, k, s, d, p in zip(self._spatial(input_shape), self.kernel_size, self.strides, self.dilation_rate, pads):
            extent = (k - 1) * d + 1
            if n is None:
                out.append(None)
            elif self.padding == "valid":
                out.append((n - 1) * s + extent + (max(extent, s) - extent if p is None else p))
            else:
                out.append(n * s if p is None else (n - 1) * s + extent % 2 + p)
        return self._output_shape(tuple(input_shape), out, self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            output_padding=self.output_padding,
            kernel_initializer=initializers.serialize(self.kernel_initializer),
            kernel_regularizer=regularizers.serialize(self.kernel_regularizer),
            kernel_constraint=constraints.serialize(self.kernel_constraint),
        )
        return config


class BaseDepthwiseConv(_Windowed):
    """Each input channel convolved with its own `depth_multiplier` filters."""

    def __init__(self, kernel_size, strides=1, padding="valid", depth_multiplier=1, data_format=None, dilation_rate=1, activation=None, use_bias=True, depthwise_initializer="glorot_uniform", bias_initializer="zeros", depthwise_regularizer=None, bias_regularizer=None, activity_regularizer=None, depthwise_constraint=None, bias_constraint=None, **kwargs):
        super().__init__(kernel_size, strides, padding, data_format, dilation_rate, activation, use_bias, bias_initializer, bias_regularizer, bias_constraint, activity_regularizer, **kwargs)
        self.depth_multiplier = _positive(depth_multiplier, "depth_multiplier", self._label)
        self.depthwise_initializer = initializers.get(depthwise_initializer)
        self.depthwise_regularizer = regularizers.get(depthwise_regularizer)
        self.depthwise_constraint = constraints.get(depthwise_constraint)

    def build(self, input_shape):
        channels = self._input_channels(input_shape)
        shape = self.kernel_size + (channels, self.depth_multiplier)
        self.kernel = self.add_weight(shape=shape, initializer=self.depthwise_initializer, regularizer=self.depthwise_regularizer, constraint=self.depthwise_constraint, name="kernel")
        self._finish_build(channels, channels * self.depth_multiplier)

    def call(self, inputs):
        x = ops.depthwise_conv(inputs, self.kernel, strides=self.strides, padding=self.padding, data_format=self.data_format, dilation_rate=self.dilation_rate)
        return self._bias_and_activation(x)

    def compute_output_shape(self, input_shape):
        channels = input_shape[self._channel_axis]
        return self._conv_output_shape(input_shape, None if channels is None else channels * self.depth_multiplier)

    def get_config(self):
        config = super().get_config()
        config.update(
            depth_multiplier=self.depth_multiplier,
            depthwise_initializer=initializers.serialize(self.depthwise_initializer),
            depthwise_regularizer=regularizers.serialize(self.depthwise_regularizer),
            depthwise_constraint=constraints.serialize(self.depthwise_constraint),
        )
        return config


class BaseSeparableConv(_Windowed):
    """A depthwise convolution followed by a pointwise (1x1) one to `filters`."""

    def __init__(self, filters, kernel_size, strides=1, padding="valid", data_format=None, dilation_rate=1, depth_multiplier=1, activation=None, use_bias=True, depthwise_initializer="glorot_uniform", pointwise_initializer="glorot_uniform", bias_initializer="zeros", depthwise_regularizer=None, pointwise_regularizer=None, bias_regularizer=None, activity_regularizer=None, depthwise_constraint=None, pointwise_constraint=None, bias_constraint=None, **kwargs):
        super().__init__(kernel_size, strides, padding, data_format, dilation_rate, activation, use_bias, bias_initializer, bias_regularizer, bias_constraint, activity_regularizer, **kwargs)
        label = self._label
        self.filters = _positive(filters, "filters", label)
        self.depth_multiplier = _positive(depth_multiplier, "depth_multiplier", label)
        self.depthwise_initializer = initializers.get(depthwise_initializer)
        self.pointwise_initializer = initializers.get(pointwise_initializer)
        self.depthwise_regularizer = regularizers.get(depthwise_regularizer)
        self.pointwise_regularizer = regularizers.get(pointwise_regularizer)
        self.depthwise_constraint = constraints.get(depthwise_constraint)
        self.pointwise_constraint = constraints.get(pointwise_constraint)

    def build(self, input_shape):
        channels = self._input_channels(input_shape)
        depth = channels * self.depth_multiplier
        self.depthwise_kernel = self.add_weight(shape=self.kernel_size + (channels, self.depth_multiplier), initializer=self.depthwise_initializer, regularizer=self.depthwise_regularizer, constraint=self.depthwise_constraint, name="depthwise_kernel")
        self.pointwise_kernel = self.add_weight(shape=(1,) * self.rank + (depth, self.filters), initializer=self.pointwise_initializer, regularizer=self.pointwise_regularizer, constraint=self.pointwise_constraint, name="pointwise_kernel")
        self._finish_build(channels, self.filters)

    def call(self, inputs):
        x = ops.separable_conv(inputs, self.depthwise_kernel, self.pointwise_kernel, strides=self.strides, padding=self.padding, data_format=self.data_format, dilation_rate=self.dilation_rate)
        return self._bias_and_activation(x)

    def compute_output_shape(self, input_shape):
        return self._conv_output_shape(input_shape, self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            depth_multiplier=self.depth_multiplier,
            depthwise_initializer=initializers.serialize(self.depthwise_initializer),
            pointwise_initializer=initializers.serialize(self.pointwise_initializer),
            depthwise_regularizer=regularizers.serialize(self.depthwise_regularizer),
            pointwise_regularizer=regularizers.serialize(self.pointwise_regularizer),
            depthwise_constraint=constraints.serialize(self.depthwise_constraint),
            pointwise_constraint=constraints.serialize(self.pointwise_constraint),
        )
        return config


class Conv1D(BaseConv):
    """1-D convolution over `(batch, steps, channels)`; `padding` may also be
    "causal" (output `t` sees inputs up to `t` only).

    Example:
        >>> y = Conv1D(32, 3, activation="relu")(Input(shape=(100, 8)))
    """

    rank = 1
    paddings = ("valid", "same", "causal")


class Conv2D(BaseConv):
    """2-D convolution over `(batch, height, width, channels)`.

    Example:
        >>> y = Conv2D(32, 3, activation="relu")(Input(shape=(28, 28, 1)))
    """

    rank = 2


class Conv3D(BaseConv):
    """3-D convolution over `(batch, depth, height, width, channels)`."""

    rank = 3


class Conv1DTranspose(BaseConvTranspose):
    """Transposed 1-D convolution; kernel `(k, filters, input_channels)`."""

    rank = 1


class Conv2DTranspose(BaseConvTranspose):
    """Transposed 2-D convolution; kernel `(kh, kw, filters, input_channels)`.

    Example:
        >>> y = Conv2DTranspose(16, 3, activation="relu")(Input(shape=(4, 4, 1)))   # (None, 6, 6, 16)
    """

    rank = 2


class Conv3DTranspose(BaseConvTranspose):
    """Transposed 3-D convolution."""

    rank = 3


class DepthwiseConv1D(BaseDepthwiseConv):
    """Depthwise 1-D convolution; kernel `(k, input_channels, depth_multiplier)`."""

    rank = 1
    paddings = ("valid", "same", "causal")


class DepthwiseConv2D(BaseDepthwiseConv):
    """Depthwise 2-D convolution; kernel `(kh, kw, input_channels, depth_multiplier)`."""

    rank = 2


class SeparableConv1D(BaseSeparableConv):
    """Depthwise then pointwise 1-D convolution."""

    rank = 1
    paddings = ("valid", "same", "causal")


class SeparableConv2D(BaseSeparableConv):
    """Depthwise then pointwise 2-D convolution."""

    rank = 2
