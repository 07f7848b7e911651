"""Masking: marks the timesteps whose features all equal `mask_value` as padding."""

from pyfuncnet import _symbolic, ops
from pyfuncnet.layers.layer import Layer


def _any_differs(inputs, value, keepdims):
    """True at each step (all but the last axis) where some feature is not `value`."""
    differs = ops.cast(ops.not_equal(inputs, value), "float32")
    return ops.greater(ops.max(differs, axis=-1, keepdims=keepdims), 0.0)


class Masking(Layer):
    """Masks the steps of a `(batch, steps, features)` input whose features all
    equal `mask_value`: those steps become zeros, and the output carries a mask
    `(batch, steps)` (True = a valid step) that later layers which support masking
    (RNNs, GlobalAveragePooling1D, losses, ...) use to skip them.

    Args:
        mask_value: the padding value.

    Example:
        >>> x = Input(shape=(None, 8))
        >>> y = Masking(mask_value=0.0)(x)   # y._keras_mask: (None, None) booleans
    """

    def __init__(self, mask_value=0.0, **kwargs):
        super().__init__(**kwargs)
        self.mask_value = mask_value
        self.supports_masking = True
        self.built = True

    def compute_mask(self, inputs, mask=None):
        return _any_differs(inputs, self.mask_value, keepdims=False)

    def call(self, inputs):
        keep = _any_differs(inputs, self.mask_value, keepdims=True)
        outputs = ops.where(keep, inputs, 0.0)
        # The mask is made here with the outputs, so `compute_mask` need not run.
        _symbolic.set_keras_mask(outputs, ops.squeeze(keep, -1))
        return outputs

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config["mask_value"] = self.mask_value
        return config
