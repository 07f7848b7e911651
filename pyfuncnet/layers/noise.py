"""Noise layers: SpatialDropout1D/2D/3D, GaussianNoise and GaussianDropout.

Like Dropout, each is the identity at inference and random only in training
steps. In compiled steps (fit, train_on_batch) they lower to the core's `dropout`
(with a broadcast mask), `gaussian_noise` and `gaussian_dropout` ops, whose numbers
are keyed by (seed, layer, step) and so do not depend on the thread count. Called
eagerly with `training=True` they draw from a NumPy generator seeded by `seed`.
"""

import math

import numpy as np

from pyfuncnet import _symbolic, ops
from pyfuncnet._symbolic import KerasTensor
from pyfuncnet.layers.convolutional import normalize_data_format
from pyfuncnet.layers.core import Dropout, _check_rate
from pyfuncnet.layers.layer import InputSpec, Layer, next_random_stream


class _SpatialDropout(Dropout):
    """Dropout of whole channels: the mask has shape `(batch, 1, ..., channels)`
    (`(batch, channels, 1, ...)` for channels_first) and is broadcast over the
    spatial axes, so each sample keeps or drops each feature map entirely."""

    _spatial_rank = 0

    def __init__(self, rate, data_format=None, seed=None, **kwargs):
        super().__init__(rate, seed=seed, **kwargs)
        self.data_format = normalize_data_format(data_format)
        self.input_spec = InputSpec(ndim=self._spatial_rank + 2)

    def _noise_spec(self, ndim):
        ones = (1,) * (ndim - 2)
        if self.data_format == "channels_first":
            return (None, None) + ones
        return (None,) + ones + (None,)

    def get_config(self):
        # Keras's spatial dropouts have no noise_shape argument.
        config = Layer.get_config(self)
        config.update(rate=self.rate, seed=self.seed, data_format=self.data_format)
        return config


class SpatialDropout1D(_SpatialDropout):
    """Spatial 1D dropout: drops whole channels of `(batch, steps, channels)`
    inputs during training (each sample its own channels), scaling the kept ones by
    `1 / (1 - rate)`; the identity at inference. Better than Dropout when adjacent
    steps are strongly correlated (early convolution layers).

    Args:
        rate: the fraction of channels to drop, in [0, 1).
        seed: an integer seed for the masks.

    Example:
        >>> y = SpatialDropout1D(0.2)(Input(shape=(100, 16)))
    """

    _spatial_rank = 1

    def __init__(self, rate, seed=None, **kwargs):
        super().__init__(rate, seed=seed, **kwargs)

    def get_config(self):
        config = super().get_config()
        del config["data_format"]
        return config


class SpatialDropout2D(_SpatialDropout):
    """Spatial 2D dropout: drops whole feature maps of `(batch, rows, cols,
    channels)` inputs (`(batch, channels, rows, cols)` with channels_first) during
    training, scaling the kept ones by `1 / (1 - rate)`; the identity at inference.

    Args:
        rate: the fraction of channels to drop, in [0, 1).
        data_format: "channels_last" (default) or "channels_first".
        seed: an integer seed for the masks.

    Example:
        >>> y = SpatialDropout2D(0.25)(Input(shape=(32, 32, 8)))
    """

    _spatial_rank = 2


class SpatialDropout3D(_SpatialDropout):
    """Spatial 3D dropout: drops whole feature volumes of `(batch, d1, d2, d3,
    channels)` inputs (`(batch, channels, d1, d2, d3)` with channels_first) during
    training, scaling the kept ones by `1 / (1 - rate)`; the identity at inference.

    Args:
        rate: the fraction of channels to drop, in [0, 1).
        data_format: "channels_last" (default) or "channels_first".
        seed: an integer seed for the masks.

    Example:
        >>> y = SpatialDropout3D(0.25)(Input(shape=(8, 8, 8, 4)))
    """

    _spatial_rank = 3


class GaussianNoise(Layer):
    """Adds zero-centred Gaussian noise of standard deviation `stddev` during
    training (a regulariser, e.g. against overfitting on small data); the identity
    at inference.

    Args:
        stddev: the standard deviation of the noise, a number >= 0.
        seed: an integer seed for the noise.

    Example:
        >>> y = GaussianNoise(0.1)(Input(shape=(16,)))
    """

    def __init__(self, stddev, seed=None, **kwargs):
        super().__init__(**kwargs)
        valid = isinstance(stddev, (int, float, np.integer, np.floating)) and not isinstance(stddev, bool)
        if not valid or not (math.isfinite(stddev) and stddev >= 0):
            raise ValueError(f"GaussianNoise '{self.name}': `stddev` must be a finite number >= 0, got {stddev!r}")
        self.stddev = float(stddev)
        self.seed = seed
        self._stream = next_random_stream()
        self._eager_rng = np.random.default_rng(seed)
        self.supports_masking = True
        self.built = True

    def call(self, inputs, training=None):
        if self.stddev == 0 or training is False:
            return inputs
        inputs = ops._float(inputs)
        if isinstance(inputs, KerasTensor):
            # The core's gaussian_noise op is active in training steps only.
            attrs = {"stddev": self.stddev, "seed": int(self.seed or 0), "stream": self._stream}
            return _symbolic.apply("gaussian_noise", attrs, [inputs])[0]
        if not training:
            return inputs
        noise = self._eager_rng.normal(0.0, self.stddev, ops._shape(inputs)).astype(np.float32)
        return ops.add(inputs, noise)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(stddev=self.stddev, seed=self.seed)
        return config


class GaussianDropout(Layer):
    """Multiplies the inputs by Gaussian noise centred on 1 during training; the
    identity at inference. The noise has standard deviation
    `sqrt(rate / (1 - rate))`, the same as the mask of Dropout at `rate`, so the two
    regularise alike (Srivastava et al., 2014, section 10).

    Args:
        rate: the equivalent drop probability, in [0, 1).
        seed: an integer seed for the noise.

    Example:
        >>> y = GaussianDropout(0.3)(Input(shape=(16,)))
    """

    def __init__(self, rate, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.rate = _check_rate(f"GaussianDropout '{self.name}'", rate)
        self.seed = seed
        self._stream = next_random_stream()
        self._eager_rng = np.random.default_rng(seed)
        self.supports_masking = True
        self.built = True

    def call(self, inputs, training=None):
        if self.rate == 0 or training is False:
            return inputs
        inputs = ops._float(inputs)
        if isinstance(inputs, KerasTensor):
            # The core's gaussian_dropout op is active in training steps only.
            attrs = {"rate": self.rate, "seed": int(self.seed or 0), "stream": self._stream}
            return _symbolic.apply("gaussian_dropout", attrs, [inputs])[0]
        if not training:
            return inputs
        stddev = math.sqrt(self.rate / (1.0 - self.rate))
        noise = self._eager_rng.normal(1.0, stddev, ops._shape(inputs)).astype(np.float32)
        return ops.multiply(inputs, noise)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(rate=self.rate, seed=self.seed)
        return config
