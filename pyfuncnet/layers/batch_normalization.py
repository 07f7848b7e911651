"""BatchNormalization: normalizes with the batch's statistics in training and with
moving averages of them at inference."""

from pyfuncnet import constraints, initializers, ops, regularizers
from pyfuncnet._symbolic import KerasTensor
from pyfuncnet.layers.layer import InputSpec, Layer


class BatchNormalization(Layer):
    """`gamma * (x - mean) / sqrt(var + epsilon) + beta` per feature along `axis`.

    In training (`fit`, `train_on_batch`, or a call with `training=True`) mean and
    var are the batch's (over every axis but `axis`, variance biased) and each step
    moves the non-trainable `moving_mean` / `moving_variance` toward them:
    `moving = moving * momentum + batch * (1 - momentum)`. Otherwise (predict,
    evaluate, `trainable=False`) the moving statistics are used.

    Weights, in Keras's order: `gamma`, `beta` (trainable, when `scale` / `center`),
    `moving_mean`, `moving_variance` (non-trainable).

    Example:
        >>> y = BatchNormalization()(Conv2D(16, 3)(Input(shape=(28, 28, 1))))
    """

    def __init__(self, axis=-1, momentum=0.99, epsilon=1e-3, center=True, scale=True, beta_initializer="zeros", gamma_initializer="ones", moving_mean_initializer="zeros", moving_variance_initializer="ones", beta_regularizer=None, gamma_regularizer=None, beta_constraint=None, gamma_constraint=None, synchronized=False, renorm=False, **kwargs):
        super().__init__(**kwargs)
        label = f"BatchNormalization '{self.name}'"
        if isinstance(axis, bool) or not isinstance(axis, int):
            raise TypeError(f"{label}: `axis` must be an integer, got {axis!r}")
        if renorm:
            raise ValueError(f"{label}: batch renormalization (renorm=True) is not available; use renorm=False")
        if not epsilon > 0:
            raise ValueError(f"{label}: `epsilon` must be positive, got {epsilon!r}")
        self.axis = axis
        self.momentum = float(momentum)
        self.epsilon = float(epsilon)
        self.center = bool(center)
        self.scale = bool(scale)
        self.synchronized = bool(synchronized)
        self.beta_initializer = initializers.get(beta_initializer)
        self.gamma_initializer = initializers.get(gamma_initializer)
        self.moving_mean_initializer = initializers.get(moving_mean_initializer)
        self.moving_variance_initializer = initializers.get(moving_variance_initializer)
        self.beta_regularizer = regularizers.get(beta_regularizer)
        self.gamma_regularizer = regularizers.get(gamma_regularizer)
        self.beta_constraint = constraints.get(beta_constraint)
        self.gamma_constraint = constraints.get(gamma_constraint)
        self.supports_masking = True

    def build(self, input_shape):
        rank = len(input_shape)
        if not -rank <= self.axis < rank:
            raise ValueError(f"BatchNormalization '{self.name}': axis {self.axis} is out of bounds for an input of shape {tuple(input_shape)}")
        self.axis = self.axis % rank
        features = input_shape[self.axis]
        if features is None:
            raise ValueError(f"BatchNormalization '{self.name}': the size of axis {self.axis} must be known, got shape {tuple(input_shape)}")
        shape = (features,)
        self.gamma = self.add_weight(shape=shape, initializer=self.gamma_initializer, regularizer=self.gamma_regularizer, constraint=self.gamma_constraint, name="gamma") if self.scale else None
        self.beta = self.add_weight(shape=shape, initializer=self.beta_initializer, regularizer=self.beta_regularizer, constraint=self.beta_constraint, name="beta") if self.center else None
        self.moving_mean = self.add_weight(shape=shape, initializer=self.moving_mean_initializer, trainable=False, name="moving_mean")
        self.moving_variance = self.add_weight(shape=shape, initializer=self.moving_variance_initializer, trainable=False, name="moving_variance")
        self.input_spec = InputSpec(ndim=rank, axes={self.axis: features})
        self.built = True

    def call(self, inputs, training=None):
        if not isinstance(inputs, KerasTensor):
            if training and self.trainable:
                mean, variance = self._batch_statistics(inputs)
            else:
                mean, variance = self.moving_mean, self.moving_variance
        elif training is False:
            mean, variance = self.moving_mean, self.moving_variance
        else:
            # In a model's graph: batch statistics in training steps (always, with
            # an explicit training=True) while the layer is trainable when a step
            # is compiled; the moving ones otherwise. Steps apply the updates of
            # trainable layers only (Keras's frozen batch normalization).
            batch_mean, batch_variance = self._batch_statistics(inputs)

            def mode():
                return ("training" if training is None else "always") if self.trainable else "never"

            mean = ops._training_switch(batch_mean, self.moving_mean, mode)
            variance = ops._training_switch(batch_variance, self.moving_variance, mode)
        return ops.batch_normalization(inputs, mean, variance, self.axis, offset=self.beta, scale=self.gamma, epsilon=self.epsilon)

    def _batch_statistics(self, inputs):
        """The batch's mean and (biased) variance; moves the moving statistics
        toward them (at once on arrays, in each training step in a graph)."""
        axes = [a for a in range(len(inputs.shape)) if a != self.axis]
        mean, variance = ops.moments(inputs, axes)
        keep = 1.0 - self.momentum
        self.moving_mean.assign(ops.add(ops.multiply(self.moving_mean, self.momentum), ops.multiply(mean, keep)))
        self.moving_variance.assign(ops.add(ops.multiply(self.moving_variance, self.momentum), ops.multiply(variance, keep)))
        return mean, variance

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            axis=self.axis,
            momentum=self.momentum,
            epsilon=self.epsilon,
            center=self.center,
            scale=self.scale,
            beta_initializer=initializers.serialize(self.beta_initializer),
            gamma_initializer=initializers.serialize(self.gamma_initializer),
            moving_mean_initializer=initializers.serialize(self.moving_mean_initializer),
            moving_variance_initializer=initializers.serialize(self.moving_variance_initializer),
            beta_regularizer=regularizers.serialize(self.beta_regularizer),
            gamma_regularizer=regularizers.serialize(self.gamma_regularizer),
            beta_constraint=constraints.serialize(self.beta_constraint),
            gamma_constraint=constraints.serialize(self.gamma_constraint),
            synchronized=self.synchronized,
        )
        return config
