"""Pooling layers: max and average pooling over 1 to 3 spatial axes, and global
pooling over all of them."""

from pyfuncnet import ops
from pyfuncnet.layers.convolutional import conv_output_length, normalize_data_format, normalize_tuple
from pyfuncnet.layers.layer import InputSpec, Layer


class BasePooling(Layer):
    """Windowed pooling over `rank` spatial axes (`strides` default to `pool_size`)."""

    rank = None
    pool_op = None

    def __init__(self, pool_size, strides=None, padding="valid", data_format=None, **kwargs):
        super().__init__(**kwargs)
        label = f"{type(self).__name__} '{self.name}'"
        self.pool_size = normalize_tuple(pool_size, self.rank, "pool_size", label)
        self.strides = self.pool_size if strides is None else normalize_tuple(strides, self.rank, "strides", label)
        self.padding = str(padding).lower()
        if self.padding not in ("valid", "same"):
            raise ValueError(f"{label}: the `padding` argument must be one of 'valid', 'same'. Received: padding={padding!r}")
        self.data_format = normalize_data_format(data_format)
        self.input_spec = InputSpec(ndim=self.rank + 2)

    def call(self, inputs):
        pool = getattr(ops, self.pool_op)
        return pool(inputs, pool_size=self.pool_size, strides=self.strides, padding=self.padding, data_format=self.data_format)

    def compute_output_shape(self, input_shape):
        input_shape = tuple(input_shape)
        first = self.data_format == "channels_first"
        spatial = input_shape[2:] if first else input_shape[1:-1]
        out = []
        for n, k, s in zip(spatial, self.pool_size, self.strides):
            if self.padding == "valid" and n is not None and n < k:
                raise ValueError(f"{type(self).__name__} '{self.name}': the pool size {self.pool_size} is larger than the input's spatial shape {tuple(spatial)} with padding='valid' (input shape {input_shape})")
            out.append(conv_output_length(n, k, s, 1, self.padding))
        if first:
            return input_shape[:2] + tuple(out)
        return (input_shape[0],) + tuple(out) + (input_shape[-1],)

    def get_config(self):
        config = super().get_config()
        config.update(pool_size=self.pool_size, padding=self.padding, strides=self.strides, data_format=self.data_format)
        return config


class MaxPooling1D(BasePooling):
    """Max pooling over `(batch, steps, channels)`."""

    rank, pool_op = 1, "max_pool"

    def __init__(self, pool_size=2, strides=None, padding="valid", data_format=None, **kwargs):
        super().__init__(pool_size, strides, padding, data_format, **kwargs)


class MaxPooling2D(BasePooling):
    """Max pooling over `(batch, height, width, channels)`.

    Example:
        >>> y = MaxPooling2D(3)(Input(shape=(28, 28, 64)))   # (None, 9, 9, 64)
    """

    rank, pool_op = 2, "max_pool"

    def __init__(self, pool_size=(2, 2), strides=None, padding="valid", data_format=None, **kwargs):
        super().__init__(pool_size, strides, padding, data_format, **kwargs)


class MaxPooling3D(BasePooling):
    """Max pooling over `(batch, depth, height, width, channels)`."""

    rank, pool_op = 3, "max_pool"

    def __init__(self, pool_size=(2, 2, 2), strides=None, padding="valid", data_format=None, **kwargs):
        super().__init__(pool_size, strides, padding, data_format, **kwargs)


class AveragePooling1D(BasePooling):
    """Average pooling over `(batch, steps, channels)`; with padding="same" each
    window averages the inputs it covers (padding is not counted)."""

    rank, pool_op = 1, "average_pool"

    def __init__(self, pool_size=2, strides=None, padding="valid", data_format=None, **kwargs):
        super().__init__(pool_size, strides, padding, data_format, **kwargs)


class AveragePooling2D(BasePooling):
    """Average pooling over `(batch, height, width, channels)`."""

    rank, pool_op = 2, "average_pool"

    def __init__(self, pool_size=(2, 2), strides=None, padding="valid", data_format=None, **kwargs):
        super().__init__(pool_size, strides, padding, data_format, **kwargs)


class AveragePooling3D(BasePooling):
    """Average pooling over `(batch, depth, height, width, channels)`."""

    rank, pool_op = 3, "average_pool"

    def __init__(self, pool_size=(2, 2, 2), strides=None, padding="valid", data_format=None, **kwargs):
        super().__init__(pool_size, strides, padding, data_format, **kwargs)


class BaseGlobalPooling(Layer):
    """Pooling over every spatial axis (`keepdims` keeps them with size 1)."""

    rank = None
    reduce_op = None

    def __init__(self, data_format=None, keepdims=False, **kwargs):
        super().__init__(**kwargs)
        self.data_format = normalize_data_format(data_format)
        self.keepdims = bool(keepdims)
        self.input_spec = InputSpec(ndim=self.rank + 2)

    def _spatial_axes(self):
        start = 2 if self.data_format == "channels_first" else 1
        return tuple(range(start, start + self.rank))

    def call(self, inputs):
        return getattr(ops, self.reduce_op)(inputs, axis=self._spatial_axes(), keepdims=self.keepdims)

    def compute_output_shape(self, input_shape):
        axes = self._spatial_axes()
        if self.keepdims:
            return tuple(1 if i in axes else d for i, d in enumerate(input_shape))
        return tuple(d for i, d in enumerate(input_shape) if i not in axes)

    def get_config(self):
        config = super().get_config()
        config.update(data_format=self.data_format, keepdims=self.keepdims)
        return config


class GlobalMaxPooling1D(BaseGlobalPooling):
    """The maximum over the steps of `(batch, steps, channels)`."""

    rank, reduce_op = 1, "max"


class GlobalMaxPooling2D(BaseGlobalPooling):
    """The maximum over height and width."""

    rank, reduce_op = 2, "max"


class GlobalMaxPooling3D(BaseGlobalPooling):
    """The maximum over depth, height and width."""

    rank, reduce_op = 3, "max"


class GlobalAveragePooling1D(BaseGlobalPooling):
    """The mean over the steps of `(batch, steps, channels)`; with a mask
    `(batch, steps)`, the mean over the unmasked steps (as Keras; a sample with
    every step masked gives NaN, 0 / 0, as in Keras)."""

    rank, reduce_op = 1, "mean"

    def __init__(self, data_format=None, keepdims=False, **kwargs):
        super().__init__(data_format=data_format, keepdims=keepdims, **kwargs)
        self.supports_masking = True

    def call(self, inputs, mask=None):
        if mask is None:
            return super().call(inputs)
        steps = self._spatial_axes()[0]
        keep = ops.expand_dims(mask, 2 if self.data_format == "channels_last" else 1)
        total = ops.sum(ops.where(keep, inputs, 0.0), axis=steps, keepdims=self.keepdims)
        count = ops.sum(ops.cast(keep, "float32"), axis=steps, keepdims=self.keepdims)
        return ops.divide(total, count)

    def compute_mask(self, inputs, mask=None):
        return None


class GlobalAveragePooling2D(BaseGlobalPooling):
    """The mean over height and width."""

    rank, reduce_op = 2, "mean"


class GlobalAveragePooling3D(BaseGlobalPooling):
    """The mean over depth, height and width."""

    rank, reduce_op = 3, "mean"
