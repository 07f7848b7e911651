"""Reshaping layers over 1 to 3 spatial axes: ZeroPadding1D/2D/3D, Cropping1D/2D/3D,
UpSampling1D/2D/3D.

Each is written with `pyfuncnet.ops`, so it runs eagerly, symbolically (with an
unknown batch size, and unknown spatial sizes where the layer allows them) and in
compiled steps, and is differentiable:

- zero padding is `ops.pad`;
- cropping is a slice;
- nearest-neighbour upsampling gives each spatial axis a size-1 neighbour, broadcasts
  it to the factor and merges the pair (so the gradient of `broadcast_to` sums the
  copies back);
- UpSampling2D's interpolating modes ("bilinear", "bicubic", "lanczos3", "lanczos5")
  multiply height and width by constant resampling matrices, the ones
  `jax.image.resize` builds (half-pixel centres, taps outside the image dropped and
  the rest renormalised, no antialiasing), so the numbers are Keras 3's.
"""

import functools
import math

import numpy as np

from pyfuncnet import ops
from pyfuncnet.layers.convolutional import normalize_data_format, normalize_tuple
from pyfuncnet.layers.layer import InputSpec, Layer

_ORDINALS = ("1st", "2nd", "3rd")


def _is_int(value):
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _pair(value, arg, label):
    """An int (the same on both sides) or 2 ints, as `(before, after)`, both >= 0."""
    if _is_int(value):
        pair = (int(value), int(value))
    else:
        try:
            items = tuple(value)
        except TypeError:
            items = None
        if items is None or len(items) != 2 or not all(_is_int(v) for v in items):
            raise ValueError(f"{label}: the `{arg}` argument must be an integer or a tuple of 2 integers. Received {arg}={value!r}")
        pair = (int(items[0]), int(items[1]))
    if min(pair) < 0:
        raise ValueError(f"{label}: the `{arg}` argument cannot contain negative values. Received {arg}={value!r}")
    return pair


def _pairs(value, rank, arg, label):
    """`rank` `(before, after)` pairs, from an int (every side), `rank` ints (one per
    axis, both sides) or `rank` pairs, as Keras's 2D and 3D padding/cropping take."""
    if _is_int(value):
        return (_pair(value, arg, label),) * rank
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__"):
        raise ValueError(
            f"{label}: `{arg}` should be either an int, a tuple of {rank} ints or a tuple of {rank} tuples "
            f"of 2 ints. Received: {arg}={value!r}"
        )
    items = tuple(value)
    if len(items) != rank:
        raise ValueError(f"{label}: `{arg}` should have {rank} elements. Received: {arg}={value!r}")
    return tuple(_pair(v, f"{_ORDINALS[i]} entry of {arg}", label) for i, v in enumerate(items))


class _Spatial(Layer):
    """What the layers of this module share: `rank` spatial axes, before the channels
    (channels_last) or after them (channels_first)."""

    rank = None
    # Keras's Cropping1D and UpSampling1D take no data_format (always channels_last).
    has_data_format = True

    def __init__(self, data_format=None, **kwargs):
        super().__init__(**kwargs)
        try:
            self.data_format = normalize_data_format(data_format)
        except ValueError as error:
            raise ValueError(f"{self._label}: {error}") from None
        self.input_spec = InputSpec(ndim=self.rank + 2)

    @property
    def _label(self):
        return f"{type(self).__name__} '{self.name}'"

    def _spatial_axes(self):
        first = 2 if self.data_format == "channels_first" else 1
        return tuple(range(first, first + self.rank))

    def _check_rank(self, input_shape):
        if len(input_shape) != self.rank + 2:
            raise ValueError(f"{self._label}: expected an input of rank {self.rank + 2}, got shape {tuple(input_shape)}")

    def get_config(self):
        config = super().get_config()
        if self.has_data_format:
            config["data_format"] = self.data_format
        return config


# ----------------------------------------------------------------------------
# Zero padding


class _ZeroPadding(_Spatial):
    """Zeros added before and after each spatial axis."""

    def __init__(self, padding, data_format=None, **kwargs):
        super().__init__(data_format, **kwargs)
        if self.rank == 1:
            self.padding = _pair(padding, "padding", self._label)
        else:
            self.padding = _pairs(padding, self.rank, "padding", self._label)

    def _widths(self):
        return (self.padding,) if self.rank == 1 else self.padding

    def call(self, inputs):
        widths = [(0, 0)] * (self.rank + 2)
        for axis, pair in zip(self._spatial_axes(), self._widths()):
            widths[axis] = pair
        return ops.pad(inputs, widths)

    def compute_output_shape(self, input_shape):
        self._check_rank(input_shape)
        out = list(input_shape)
        for axis, (before, after) in zip(self._spatial_axes(), self._widths()):
            if out[axis] is not None:
                out[axis] += before + after
        return tuple(out)

    def get_config(self):
        config = super().get_config()
        config["padding"] = self.padding
        return config


class ZeroPadding1D(_ZeroPadding):
    """Adds zeros at the start and end of the steps of `(batch, steps, features)`.

    Args:
        padding: an int (as many zeros at both ends) or `(before, after)`.
        data_format: "channels_last" (default, `(batch, steps, features)`) or
            "channels_first" (`(batch, features, steps)`).

    Example:
        >>> ZeroPadding1D(2)(Input(shape=(5, 3))).shape
        (None, 9, 3)
    """

    rank = 1

    def __init__(self, padding=1, data_format=None, **kwargs):
        super().__init__(padding, data_format, **kwargs)


class ZeroPadding2D(_ZeroPadding):
    """Adds rows and columns of zeros around images.

    Args:
        padding: an int (the same on every side), 2 ints `(rows, cols)` (each on
            both sides) or `((top, bottom), (left, right))`.
        data_format: "channels_last" (default) or "channels_first".

    Example:
        >>> ZeroPadding2D(((1, 0), (2, 3)))(Input(shape=(4, 5, 3))).shape
        (None, 5, 10, 3)
    """

    rank = 2

    def __init__(self, padding=(1, 1), data_format=None, **kwargs):
        super().__init__(padding, data_format, **kwargs)


class ZeroPadding3D(_ZeroPadding):
    """Adds zeros around volumes `(batch, dim1, dim2, dim3, channels)`.

    Args:
        padding: an int, 3 ints (each on both sides of its axis) or 3
            `(before, after)` pairs.
        data_format: "channels_last" (default) or "channels_first".
    """

    rank = 3

    def __init__(self, padding=((1, 1), (1, 1), (1, 1)), data_format=None, **kwargs):
        super().__init__(padding, data_format, **kwargs)


# ----------------------------------------------------------------------------
# Cropping


class _Cropping(_Spatial):
    """Elements removed from the start and end of each spatial axis."""

    def __init__(self, cropping, data_format=None, **kwargs):
        super().__init__(data_format, **kwargs)
        if self.rank == 1:
            self.cropping = _pair(cropping, "cropping", self._label)
        else:
            self.cropping = _pairs(cropping, self.rank, "cropping", self._label)

    def _crops(self):
        return (self.cropping,) if self.rank == 1 else self.cropping

    def build(self, input_shape):
        self.compute_output_shape(input_shape)  # refuses crops that leave nothing
        self.built = True

    def call(self, inputs):
        self.compute_output_shape(ops.shape(inputs))
        key = [slice(None)] * (self.rank + 2)
        for axis, (before, after) in zip(self._spatial_axes(), self._crops()):
            key[axis] = slice(before, -after if after else None)
        return ops._getitem(inputs, tuple(key))

    def compute_output_shape(self, input_shape):
        self._check_rank(input_shape)
        out = list(input_shape)
        for axis, (before, after) in zip(self._spatial_axes(), self._crops()):
            if out[axis] is None:
                continue
            if before + after >= out[axis]:
                raise ValueError(
                    f"{self._label}: values in the `cropping` argument should be smaller than the corresponding "
                    f"spatial dimension of the input. Received: input_shape={tuple(input_shape)}, cropping={self.cropping}"
                )
            out[axis] -= before + after
        return tuple(out)

    def get_config(self):
        config = super().get_config()
        config["cropping"] = self.cropping
        return config


class Cropping1D(_Cropping):
    """Removes steps at the start and end of `(batch, steps, features)`.

    Args:
        cropping: an int (as many at both ends) or `(before, after)`.

    Example:
        >>> Cropping1D((1, 2))(Input(shape=(7, 3))).shape
        (None, 4, 3)
    """

    rank = 1
    has_data_format = False

    def __init__(self, cropping=(1, 1), **kwargs):
        super().__init__(cropping, None, **kwargs)


class Cropping2D(_Cropping):
    """Removes rows and columns at the edges of images.

    Args:
        cropping: an int (the same on every side), 2 ints `(rows, cols)` (each on
            both sides) or `((top, bottom), (left, right))`.
        data_format: "channels_last" (default) or "channels_first".

    Example:
        >>> Cropping2D(((2, 2), (4, 4)))(Input(shape=(28, 28, 3))).shape
        (None, 24, 20, 3)
    """

    rank = 2

    def __init__(self, cropping=((0, 0), (0, 0)), data_format=None, **kwargs):
        super().__init__(cropping, data_format, **kwargs)


class Cropping3D(_Cropping):
    """Removes elements at the edges of volumes `(batch, dim1, dim2, dim3, channels)`.

    Args:
        cropping: an int, 3 ints (each on both sides of its axis) or 3
            `(before, after)` pairs.
        data_format: "channels_last" (default) or "channels_first".
    """

    rank = 3

    def __init__(self, cropping=((1, 1), (1, 1), (1, 1)), data_format=None, **kwargs):
        super().__init__(cropping, data_format, **kwargs)


# ----------------------------------------------------------------------------
# Upsampling


def _repeat(x, axes, factors):
    """`x` with each element repeated `factor` times along each of `axes` (as
    `numpy.repeat`, axis by axis), for any unknown dimensions."""
    repeats = {a: f for a, f in zip(axes, factors) if f != 1}
    if not repeats:
        return x
    ndim = len(ops.shape(x))

    def spread(shape):
        out = []
        for axis, d in enumerate(shape):
            out.append(d)
            if axis in repeats:
                out.append(1)
        return out

    target = []
    for axis in range(ndim):
        target.append(None)
        if axis in repeats:
            target.append(repeats[axis])

    def merge(shape):
        out, k = [], 0
        for axis in range(ndim):
            d = shape[k]
            k += 1
            if axis in repeats:
                d *= shape[k]
                k += 1
            out.append(d)
        return out

    spread_x = ops._reshape_by(x, spread)
    return ops._reshape_by(ops.broadcast_to(spread_x, target), merge)


def _triangle(x):
    return np.maximum(0.0, 1.0 - x)


def _keys_cubic(x):
    # Keys' cubic convolution kernel with a = -0.5 (jax.image's "cubic").
    near = ((1.5 * x - 2.5) * x) * x + 1.0
    far = ((-0.5 * x + 2.5) * x - 4.0) * x + 2.0
    return np.where(x >= 2.0, 0.0, np.where(x >= 1.0, far, near))


def _lanczos(radius):
    def kernel(x):
        with np.errstate(divide="ignore", invalid="ignore"):
            y = radius * np.sin(np.pi * x) * np.sin(np.pi * x / radius) / (np.pi**2 * x**2)
        return np.where(x > radius, 0.0, np.where(x > 1e-3, y, 1.0))

    return kernel


_KERNELS = {"bilinear": _triangle, "bicubic": _keys_cubic, "lanczos3": _lanczos(3), "lanczos5": _lanczos(5)}
_INTERPOLATIONS = ("nearest",) + tuple(_KERNELS)


@functools.lru_cache(maxsize=64)
def _resize_matrix(n_in, n_out, interpolation):
    """The `(n_out, n_in)` float32 matrix that resamples one axis as
    `jax.image.resize` does: output sample `i` sits at input coordinate
    `(i + 0.5) * n_in / n_out - 0.5`, takes the kernel's weights of the input
    samples, and the weights are divided by their sum (so at the edges, where some
    taps fall outside the image, the rest still sum to 1: bilinear clamps)."""
    kernel = _KERNELS[interpolation]
    centres = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    weights = kernel(np.abs(centres[:, None] - np.arange(n_in, dtype=np.float64)[None, :]))
    total = weights.sum(axis=1, keepdims=True)
    tiny = 1000.0 * float(np.finfo(np.float32).eps)
    weights = np.where(np.abs(total) > tiny, weights / np.where(total != 0, total, 1.0), 0.0)
    inside = (centres >= -0.5) & (centres <= n_in - 0.5)
    matrix = np.where(inside[:, None], weights, 0.0).astype(np.float32)
    matrix.setflags(write=False)
    return matrix


def _resample(x, axis, matrix):
    """`x` with axis `axis` (of known size) mapped through `matrix` `(n_out, n_in)`:
    `out[..., i, ...] = sum_j matrix[i, j] * x[..., j, ...]`, as one matmul."""
    shape = ops.shape(x)
    ndim = len(shape)
    if axis == ndim - 1:
        return ops.matmul(x, matrix.T)
    if axis == ndim - 2:
        return ops.matmul(matrix, x)
    # Merge the axes after `axis` so it becomes the second to last one.
    tail = [-1 if d is None else d for d in shape[axis + 1 :]]
    if tail.count(-1) > 1:
        raise ValueError(f"cannot resample axis {axis} of a tensor of shape {shape}: more than one unknown dimension after it")
    merged = ops._reshape_by(x, lambda s: s[: axis + 1] + [math.prod(s[axis + 1 :])])
    out = ops.matmul(matrix, merged)
    return ops._reshape_by(out, lambda s: s[: axis + 1] + tail)


class UpSampling1D(_Spatial):
    """Repeats each step of `(batch, steps, features)` `size` times.

    Args:
        size: the upsampling factor (a positive integer).

    Example:
        >>> UpSampling1D(3)(Input(shape=(5, 3))).shape
        (None, 15, 3)
    """

    rank = 1
    has_data_format = False

    def __init__(self, size=2, **kwargs):
        super().__init__(None, **kwargs)
        if not _is_int(size) or size <= 0:
            raise ValueError(f"{self._label}: argument `size` should be a positive integer. Received: size={size!r}")
        self.size = int(size)

    def call(self, inputs):
        return _repeat(inputs, (1,), (self.size,))

    def compute_output_shape(self, input_shape):
        self._check_rank(input_shape)
        steps = input_shape[1]
        return (input_shape[0], None if steps is None else steps * self.size, input_shape[2])

    def get_config(self):
        config = super().get_config()
        config["size"] = self.size
        return config


class _UpSampling(_Spatial):
    """Upsampling of `rank` spatial axes by integer factors."""

    def __init__(self, size, data_format=None, **kwargs):
        super().__init__(data_format, **kwargs)
        self.size = normalize_tuple(size, self.rank, "size", self._label)

    def call(self, inputs):
        return _repeat(inputs, self._spatial_axes(), self.size)

    def compute_output_shape(self, input_shape):
        self._check_rank(input_shape)
        out = list(input_shape)
        for axis, factor in zip(self._spatial_axes(), self.size):
            if out[axis] is not None:
                out[axis] *= factor
        return tuple(out)

    def get_config(self):
        config = super().get_config()
        config["size"] = self.size
        return config


class UpSampling2D(_UpSampling):
    """Upsamples images by integer factors along rows and columns.

    Args:
        size: an int or `(row_factor, col_factor)`.
        data_format: "channels_last" (default) or "channels_first".
        interpolation: "nearest" (default: repeats rows and columns), or
            "bilinear", "bicubic", "lanczos3", "lanczos5" (Keras's
            `ops.image.resize` with half-pixel centres; these need the height and
            width of the inputs to be known).

    Example:
        >>> UpSampling2D((2, 3), interpolation="bilinear")(Input(shape=(4, 5, 3))).shape
        (None, 8, 15, 3)
    """

    rank = 2

    def __init__(self, size=(2, 2), data_format=None, interpolation="nearest", **kwargs):
        super().__init__(size, data_format, **kwargs)
        name = interpolation.lower() if isinstance(interpolation, str) else interpolation
        if name not in _INTERPOLATIONS:
            raise ValueError(
                f"{self._label}: the `interpolation` argument must be one of {', '.join(repr(i) for i in _INTERPOLATIONS)}. "
                f"Received: interpolation={interpolation!r}"
            )
        self.interpolation = name

    def build(self, input_shape):
        self._check_rank(input_shape)
        if self.interpolation != "nearest":
            self._check_known(input_shape)
        self.built = True

    def _check_known(self, input_shape):
        spatial = [input_shape[a] for a in self._spatial_axes()]
        if None in spatial:
            raise ValueError(
                f"{self._label}: interpolation={self.interpolation!r} needs the height and width of the inputs "
                f"to be known, got input shape {tuple(input_shape)}"
            )
        return spatial

    def call(self, inputs):
        if self.interpolation == "nearest":
            return super().call(inputs)
        height_axis, width_axis = self._spatial_axes()
        height, width = self._check_known(ops.shape(inputs))
        x = inputs
        # Width first: with channels_last it is the second to last axis, with
        # channels_first the last one, and either is one matmul without reshaping.
        if self.size[1] != 1:
            x = _resample(x, width_axis, _resize_matrix(width, width * self.size[1], self.interpolation))
        if self.size[0] != 1:
            x = _resample(x, height_axis, _resize_matrix(height, height * self.size[0], self.interpolation))
        return x

    def get_config(self):
        config = super().get_config()
        config["interpolation"] = self.interpolation
        return config


class UpSampling3D(_UpSampling):
    """Repeats the elements of volumes `(batch, dim1, dim2, dim3, channels)` by
    integer factors along each spatial axis.

    Args:
        size: an int or 3 ints.
        data_format: "channels_last" (default) or "channels_first".
    """

    rank = 3

    def __init__(self, size=(2, 2, 2), data_format=None, **kwargs):
        super().__init__(size, data_format, **kwargs)
