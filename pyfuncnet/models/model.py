"""`Model`: layers grouped with training and inference methods.

`Model(inputs, outputs)` makes a functional model (see `functional.py`); a subclass
of `Model` that defines `call` is a subclassed model, traced on symbolic inputs the
first time it trains or predicts.
"""

from pyfuncnet.layers.layer import Layer
from pyfuncnet.models.trainer import Trainer


class Model(Trainer, Layer):
    """A group of layers with `compile`, `fit`, `evaluate`, `predict` and `summary`.

    Two ways to make one:

    - functional: `Model(inputs, outputs, name=None)` with the tensors of
      `Input(...)` and of layer calls (single, list or dict);
    - subclassing: define layers in `__init__` and the forward pass in
      `call(inputs, training=None)`.

    Example:
        >>> inputs = Input(shape=(784,))
        >>> x = layers.Dense(64, activation="relu")(inputs)
        >>> outputs = layers.Dense(10)(x)
        >>> model = Model(inputs, outputs)
    """

    def __new__(cls, *args, **kwargs):
        if cls is Model and _functional_args(args, kwargs):
            from pyfuncnet.models.functional import Functional

            return Functional.__new__(Functional)
        return super().__new__(cls)

    def __init__(self, *args, **kwargs):
        if _functional_args(args, kwargs):
            raise NotImplementedError(
                f"{type(self).__name__}: a subclass of Model cannot be initialised with `inputs` and `outputs`; "
                "build a functional `Model(inputs, outputs)` or define `call`"
            )
        Layer.__init__(self, **kwargs)
        Trainer.__init__(self)

    @property
    def layers(self):
        """The model's layers (for a subclassed model: the tracked attributes)."""
        return self._layers

    def get_layer(self, name=None, index=None):
        """A layer by name or by index in `layers`."""
        if index is None and isinstance(name, int):
            name, index = None, name
        if index is not None:
            if name is not None:
                raise ValueError("get_layer: pass `name` or `index`, not both")
            layers = self.layers
            if not -len(layers) <= index < len(layers):
                raise ValueError(f"get_layer: index {index} is out of range; the model has {len(layers)} layers")
            return layers[index]
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise ValueError(f"No such layer: {name}. Existing layers are: {[layer.name for layer in self.layers]}.")

    def save_weights(self, filepath, overwrite=True):
        """Saves every weight to a Keras 3 `.weights.h5` file, written atomically.

        Args:
            filepath: a path ending in ".weights.h5".
            overwrite: replace an existing file; with False, ask on the terminal
                first (as Keras).

        Example:
            >>> model.save_weights("mlp.weights.h5")
        """
        from pyfuncnet.saving.weights_h5 import save_weights

        save_weights(self, filepath, overwrite=overwrite)

    def load_weights(self, filepath, skip_mismatch=False):
        """Loads weights saved by `save_weights` here or in Keras 3 (".weights.h5"
        or ".keras"), matched by the model's structure; all are checked before any
        is assigned.

        Args:
            filepath: the file to read.
            skip_mismatch: skip layers whose weights do not fit, with a warning,
                instead of raising ValueError.

        Example:
            >>> model.load_weights("mlp.weights.h5")
        """
        from pyfuncnet.saving.weights_h5 import load_weights

        load_weights(self, filepath, skip_mismatch=skip_mismatch)

    def summary(self, line_length=None, positions=None, print_fn=None, expand_nested=False, show_trainable=False, layer_range=None):
        """Prints Keras's table of the layers, output shapes and parameter counts."""
        from pyfuncnet.models.summary import print_summary

        print_summary(self, line_length=line_length, positions=positions, print_fn=print_fn, expand_nested=expand_nested, show_trainable=show_trainable)


def _functional_args(args, kwargs):
    return ("inputs" in kwargs and "outputs" in kwargs) or len(args) >= 2 or (len(args) == 1 and "outputs" in kwargs)
