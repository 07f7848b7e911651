"""`Input` and `InputLayer`: where a functional model's graph starts."""

import numpy as np

from pyfuncnet._symbolic import KerasTensor
from pyfuncnet.layers.layer import Layer, Node


class InputLayer(Layer):
    """The layer behind `Input`: it has no weights and one output, a placeholder.

    Args:
        shape: the shape of one sample (without the batch dimension).
        batch_size: a fixed batch size, or None.
        dtype: "float32" (default), "int32", ...
        batch_shape: the full shape including the batch dimension (instead of
            `shape` and `batch_size`).
        name: the layer's name, also the name of its output tensor.
    """

    def __init__(self, shape=None, batch_size=None, dtype=None, sparse=None, batch_shape=None, input_tensor=None, optional=False, name=None, **kwargs):
        # Keras 2 spellings.
        if "input_shape" in kwargs:
            shape = kwargs.pop("input_shape")
        if "batch_input_shape" in kwargs:
            batch_shape = kwargs.pop("batch_input_shape")
        if sparse:
            raise ValueError(f"InputLayer '{name}': sparse inputs are not supported")
        if shape is not None and batch_shape is not None:
            raise ValueError("InputLayer: give `shape` or `batch_shape`, not both")
        if batch_shape is None:
            if shape is None:
                if input_tensor is None:
                    raise ValueError("InputLayer: `shape` (or `batch_shape`) is required")
                batch_shape = input_tensor.shape
            else:
                if isinstance(shape, int):
                    shape = (shape,)
                batch_shape = (batch_size,) + tuple(shape)
        batch_shape = tuple(None if d is None else int(d) for d in batch_shape)
        for d in batch_shape:
            if d is not None and d < 0:
                raise ValueError(f"InputLayer '{name}': negative dimension in shape {batch_shape}")
        dtype = "float32" if dtype is None else np.dtype(dtype).name
        if dtype in ("int64", "uint8", "int16", "int8", "uint32", "uint16"):
            dtype = "int32"  # the core computes with int32 indices
        elif dtype in ("float64", "float16", "bool"):
            dtype = "float32"
        super().__init__(name=name, dtype=dtype, **kwargs)
        self.batch_shape = batch_shape
        self.sparse = False
        self.optional = optional
        self.built = True
        tensor = KerasTensor(batch_shape, dtype, name=self.name)
        Node(self, ((), (), {}), tensor)

    def get_config(self):
        return {"batch_shape": self.batch_shape, "dtype": self.dtype, "sparse": False, "name": self.name}


def Input(shape=None, batch_size=None, dtype=None, sparse=None, batch_shape=None, name=None, tensor=None, optional=False):  # noqa: N802 - Keras name
    """A symbolic input tensor: the start of a functional model.

    Args:
        shape: the shape of one sample, e.g. `(784,)`; `None` for unknown sizes.
        batch_size: a fixed batch size, or None.
        dtype: the input's dtype ("float32" by default; "int32" for indices).
        batch_shape: the full shape including the batch dimension.
        name: a name (unique by default); dict inputs and outputs of a model are
            keyed by it.

    Example:
        >>> x = Input(shape=(784,))
        >>> x.shape
        (None, 784)
    """
    layer = InputLayer(shape=shape, batch_size=batch_size, dtype=dtype, sparse=sparse, batch_shape=batch_shape, name=name, input_tensor=tensor, optional=optional)
    return layer.output
