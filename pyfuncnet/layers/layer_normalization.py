"""LayerNormalization: each sample normalised over some of its axes (Ba et al., 2016).

Written with `pyfuncnet.ops` (mean, var, rsqrt, elementwise), so it runs eagerly,
symbolically and in compiled steps, and is differentiated like any other graph.
The arithmetic follows Keras 3's `ops.layer_normalization`:
`inv = rsqrt(var + epsilon) * gamma`, `outputs = x * inv + (beta - mean * inv)`,
with the biased (population) variance.
"""

import numbers
import warnings

import numpy as np

from pyfuncnet import _symbolic, constraints, initializers, ops, regularizers
from pyfuncnet._symbolic import KerasTensor
from pyfuncnet.layers.layer import InputSpec, Layer


def _is_int(value):
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


class LayerNormalization(Layer):
    """Normalises each sample over `axis` to zero mean and unit variance, then scales
    by `gamma` and shifts by `beta`:

        outputs = (x - mean) / sqrt(var + epsilon) * gamma + beta

    with the mean and the biased variance taken over `axis` for each sample.

    Args:
        axis: an int or a list/tuple of ints: the axes normalised over (-1, the
            features, by default). Their sizes must be known.
        epsilon: added to the variance (1e-3).
        center: whether to add the trainable offset `beta`.
        scale: whether to multiply by the trainable `gamma`.
        rms_scaling: deprecated (as in Keras): if True, `center` and `scale` are
            ignored and the output is `x * rsqrt(var + epsilon) * gamma` (the
            variance, not the mean square; use RMSNormalization for that).
        beta_initializer, gamma_initializer: "zeros" and "ones" by default.
        beta_regularizer, gamma_regularizer: penalties added to the loss.
        beta_constraint, gamma_constraint: applied after each update.

    Weights: `gamma`, then `beta`, each with the sizes of the normalised axes in
    increasing axis order (`axis=[3, 1]` on inputs `(batch, 3, 4, 5)` gives shape
    `(3, 5)`).

    Example:
        >>> layer = LayerNormalization(axis=[1, 2, 3])
        >>> layer.build((5, 20, 30, 40))
        >>> layer.gamma.shape
        (20, 30, 40)
    """

    def __init__(self, axis=-1, epsilon=1e-3, center=True, scale=True, rms_scaling=False, beta_initializer="zeros", gamma_initializer="ones", beta_regularizer=None, gamma_regularizer=None, beta_constraint=None, gamma_constraint=None, **kwargs):
        super().__init__(**kwargs)
        label = self._label
        if isinstance(axis, (list, tuple)):
            if not axis or not all(_is_int(a) for a in axis):
                raise TypeError(f"{label}: expected an int or a non-empty list/tuple of ints for the argument 'axis', but received: {axis!r}")
            self.axis = [int(a) for a in axis]
        elif _is_int(axis):
            self.axis = int(axis)
        else:
            raise TypeError(f"{label}: expected an int or a list/tuple of ints for the argument 'axis', but received: {axis!r}")
        if isinstance(epsilon, bool) or not isinstance(epsilon, numbers.Real) or not epsilon >= 0 or not np.isfinite(epsilon):
            raise ValueError(f"{label}: `epsilon` must be a non-negative number, got {epsilon!r}")
        self.epsilon = float(epsilon)
        self.center = bool(center)
        self.scale = bool(scale)
        self.rms_scaling = bool(rms_scaling)
        if self.rms_scaling:
            warnings.warn(
                "You passed `rms_scaling=True`, which is deprecated. This argument incorrectly scales the input by "
                "the variance, not the root mean square. To correctly use RMS Normalization, please use "
                "`keras.layers.RMSNormalization` instead.",
                stacklevel=2,
            )
        self.beta_initializer = initializers.get(beta_initializer)
        self.gamma_initializer = initializers.get(gamma_initializer)
        self.beta_regularizer = regularizers.get(beta_regularizer)
        self.gamma_regularizer = regularizers.get(gamma_regularizer)
        self.beta_constraint = constraints.get(beta_constraint)
        self.gamma_constraint = constraints.get(gamma_constraint)
        self.gamma = None
        self.beta = None
        self.supports_masking = True

    @property
    def _label(self):
        return f"{type(self).__name__} '{self.name}'"

    def _axes_list(self):
        return [self.axis] if isinstance(self.axis, int) else list(self.axis)

    def _axes(self, input_shape):
        """The normalised axes for inputs of `input_shape`: non-negative, increasing."""
        input_shape = tuple(input_shape)
        rank = len(input_shape)
        for axis in self._axes_list():
            if not -rank <= axis < rank:
                raise ValueError(
                    f"{self._label}: axis {axis} is out of bounds for an input of rank {rank} "
                    f"(shape {input_shape}). Received: axis={self.axis}"
                )
        axes = sorted(a % rank for a in self._axes_list())
        if len(set(axes)) != len(axes):
            raise ValueError(f"{self._label}: `axis` names the same axis twice for inputs of rank {rank}. Received: axis={self.axis}")
        return axes

    def build(self, input_shape):
        input_shape = tuple(input_shape)
        axes = self._axes(input_shape)
        shape = tuple(input_shape[a] for a in axes)
        if None in shape:
            raise ValueError(
                f"{self._label}: the sizes of the normalised axes {axes} must be known, got input shape {input_shape}"
            )
        if isinstance(self.axis, int):
            self.axis = [self.axis]  # as Keras stores it once built
        if self.scale or self.rms_scaling:
            self.gamma = self.add_weight(shape=shape, initializer=self.gamma_initializer, regularizer=self.gamma_regularizer, constraint=self.gamma_constraint, name="gamma")
        if self.center and not self.rms_scaling:
            self.beta = self.add_weight(shape=shape, initializer=self.beta_initializer, regularizer=self.beta_regularizer, constraint=self.beta_constraint, name="beta")
        # The normalised axes keep their sizes (counted as given: negative from the end).
        given = self._axes_list()
        min_ndim = max(a + 1 if a >= 0 else -a for a in given)
        self.input_spec = InputSpec(min_ndim=min_ndim, axes={a: input_shape[a] for a in given})
        self.built = True

    def _broadcast(self, weight, inputs, axes, rank):
        """`weight` (the sizes of `axes`) shaped to broadcast against the inputs."""
        if weight is None:
            return None
        # Inside a graph the weight is read by reference, so compiled steps use (and
        # train) its current value rather than a copy taken now.
        w = _symbolic.variable_ref(weight) if isinstance(inputs, KerasTensor) else weight
        if axes == list(range(rank - len(axes), rank)):
            return w  # trailing axes: broadcasts as it is
        shape = [1] * rank
        for a, d in zip(axes, weight.shape):
            shape[a] = d
        return ops.reshape(w, shape)

    def call(self, inputs):
        shape = ops.shape(inputs)
        rank = len(shape)
        axes = self._axes(shape)
        gamma = self._broadcast(self.gamma, inputs, axes, rank)
        beta = self._broadcast(self.beta, inputs, axes, rank)
        if self.rms_scaling:
            variance = ops.var(inputs, axis=axes, keepdims=True)
            inv = ops.rsqrt(ops.add(variance, self.epsilon))
            return ops.multiply(ops.multiply(inputs, inv), gamma)
        mean, variance = ops.moments(inputs, axes, keepdims=True)
        inv = ops.rsqrt(ops.add(variance, self.epsilon))
        if gamma is not None:
            inv = ops.multiply(inv, gamma)
        shift = ops.negative(ops.multiply(mean, inv))
        if beta is not None:
            shift = ops.add(shift, beta)
        return ops.add(ops.multiply(inputs, inv), shift)

    def compute_output_shape(self, input_shape):
        self._axes(input_shape)
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            axis=self.axis,
            epsilon=self.epsilon,
            center=self.center,
            scale=self.scale,
            rms_scaling=self.rms_scaling,
            beta_initializer=initializers.serialize(self.beta_initializer),
            gamma_initializer=initializers.serialize(self.gamma_initializer),
            beta_regularizer=regularizers.serialize(self.beta_regularizer),
            gamma_regularizer=regularizers.serialize(self.gamma_regularizer),
            beta_constraint=constraints.serialize(self.beta_constraint),
            gamma_constraint=constraints.serialize(self.gamma_constraint),
        )
        return config
