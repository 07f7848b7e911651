"""Embedding: integer indices to dense vectors."""

import warnings

from pyfuncnet import _symbolic, constraints, initializers, ops, regularizers
from pyfuncnet._symbolic import KerasTensor
from pyfuncnet.layers.layer import Layer


class Embedding(Layer):
    """Maps each index in `[0, input_dim)` to row `index` of the `embeddings`
    weight `(input_dim, output_dim)`; the output gains a last axis of `output_dim`.

    An index outside `[0, input_dim)` raises an error naming the position and the
    value (nothing is read out of bounds). `mask_zero=True` makes index 0 padding:
    `compute_mask` marks it, and `input_dim` must leave room for it.

    Example:
        >>> x = Embedding(1000, 64)(Input(shape=(None,), dtype="int32"))   # (None, None, 64)
    """

    def __init__(self, input_dim, output_dim, embeddings_initializer="uniform", embeddings_regularizer=None, embeddings_constraint=None, mask_zero=False, weights=None, lora_rank=None, input_length=None, **kwargs):
        super().__init__(**kwargs)
        label = f"Embedding '{self.name}'"
        for arg, value in (("input_dim", input_dim), ("output_dim", output_dim)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{label}: `{arg}` must be a positive integer, got {value!r}")
        self.input_dim = input_dim
        self.output_dim = output_dim
        self.embeddings_initializer = initializers.get(embeddings_initializer)
        self.embeddings_regularizer = regularizers.get(embeddings_regularizer)
        self.embeddings_constraint = constraints.get(embeddings_constraint)
        self.mask_zero = bool(mask_zero)
        self.supports_masking = self.mask_zero
        self._initial_weights = weights
        if input_length is not None:
            warnings.warn("Argument `input_length` is deprecated. Just remove it.", stacklevel=2)
        self.input_length = input_length

    def build(self, input_shape=None):
        self.embeddings = self.add_weight(shape=(self.input_dim, self.output_dim), initializer=self.embeddings_initializer, regularizer=self.embeddings_regularizer, constraint=self.embeddings_constraint, name="embeddings")
        self.built = True
        if self._initial_weights is not None:
            self.set_weights(self._initial_weights)
            self._initial_weights = None

    def call(self, inputs):
        symbolic = isinstance(inputs, KerasTensor)
        # Eagerly the Variable itself, so a GradientTape sees the lookup.
        table = _symbolic.variable_ref(self.embeddings) if symbolic else self.embeddings
        if symbolic:
            indices = inputs if inputs.dtype == "int32" else ops.cast(inputs, "int32")
        else:
            indices = ops._int(inputs, f"Embedding '{self.name}'")
        # The core's gather refuses (naming position and value) any index outside
        # [0, input_dim); negative indices are not wrapped around.
        return ops._run1("take", {"axis": 0}, table, indices)

    def compute_mask(self, inputs, mask=None):
        if not self.mask_zero:
            return None
        return ops.not_equal(inputs, 0)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape) + (self.output_dim,)

    def get_config(self):
        config = super().get_config()
        config.update(
            input_dim=self.input_dim,
            output_dim=self.output_dim,
            embeddings_initializer=initializers.serialize(self.embeddings_initializer),
            embeddings_regularizer=regularizers.serialize(self.embeddings_regularizer),
            embeddings_constraint=constraints.serialize(self.embeddings_constraint),
            mask_zero=self.mask_zero,
        )
        return config
