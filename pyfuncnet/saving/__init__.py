"""Saving (`pyfuncnet.saving`, as `keras.saving`): model weights in Keras 3's
`.weights.h5` format, interchangeable with files written by Keras 3.

`model.save_weights(path)` and `model.load_weights(path)` call the functions here;
`weights_h5` describes the file layout.

Example:
    >>> from pyfuncnet import saving
    >>> saving.save_weights(model, "mlp.weights.h5")
    >>> saving.load_weights(same_architecture, "mlp.weights.h5")
"""

from pyfuncnet.saving.weights_h5 import load_weights, save_weights

__all__ = ["load_weights", "save_weights"]
