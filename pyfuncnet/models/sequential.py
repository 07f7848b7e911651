"""`Sequential`: a plain stack of layers, each feeding the next.

Once the input shape is known (an `Input` / `InputLayer` first, `input_shape=` on
the first layer, or the first data it sees) the stack is built into a functional
graph, so it trains, predicts and prints its summary like a functional model.
"""

import numpy as np

from pyfuncnet._symbolic import KerasTensor
from pyfuncnet.layers.input_layer import InputLayer
from pyfuncnet.layers.layer import Layer, _InScope
from pyfuncnet.models.functional import Functional
from pyfuncnet.models.model import Model


class Sequential(Functional):
    """A linear stack of layers.

    Args:
        layers: the layers, in order (an `Input` tensor or `InputLayer` may come first).
        name: the model's name ("sequential" by default).

    Example:
        >>> model = Sequential([Input(shape=(784,)), Dense(64, activation="relu"), Dense(10)])
        >>> model.add(Dense(1))
    """

    def __init__(self, layers=None, trainable=True, name=None):
        Model.__init__(self, name=name, trainable=trainable)
        self._stack = []
        self._input_layer = None
        for layer in layers or []:
            self.add(layer, rebuild=False)
        self._build_graph_if_possible()

    @property
    def layers(self):
        return list(self._stack)

    def add(self, layer, rebuild=True):
        """Appends a layer (or, first, an `Input` tensor / `InputLayer`)."""
        if isinstance(layer, KerasTensor) and isinstance(getattr(layer, "_keras_history", (None,))[0], InputLayer):
            layer = layer._keras_history[0]
        if isinstance(layer, InputLayer):
            if self._stack or self._input_layer is not None:
                raise ValueError(f"Sequential '{self.name}': an Input can only be the first element of the model")
            self._input_layer = layer
        elif isinstance(layer, Layer):
            if any(layer is x for x in self._stack):
                raise ValueError(f"Sequential '{self.name}': layer '{layer.name}' is already in the model")
            names = {x.name for x in self._stack}
            if layer.name in names:
                raise ValueError(f"All layers added to a Sequential model should have unique names. Name '{layer.name}' is already the name of a layer in this model.")
            self._stack.append(layer)
            tracked = self.__dict__.setdefault("_sublayers", [])
            tracked.append(layer)
        else:
            raise TypeError(f"Sequential.add() only accepts layers and Input tensors; got {type(layer).__name__}: {layer!r}")
        if rebuild:
            self._build_graph_if_possible()

    def pop(self, rebuild=True):
        """Removes and returns the last layer."""
        if not self._stack:
            raise IndexError(f"Sequential '{self.name}' has no layers to pop")
        layer = self._stack.pop()
        self.__dict__["_sublayers"] = [x for x in self.__dict__.get("_sublayers", []) if x is not layer]
        self._forget_graph()
        if rebuild:
            self._build_graph_if_possible()
        return layer

    def _forget_graph(self):
        for attr in ("_nodes_by_depth", "inputs", "outputs", "_inputs_struct", "_outputs_struct", "_has_carried_states"):
            self.__dict__.pop(attr, None)
        self.built = False
        self._programs = {}
        self._predict_function = None

    def _build_graph_if_possible(self):
        if self._input_layer is not None:
            self._build_graph(self._input_layer.output)
        elif self._stack and self._stack[0]._batch_input_shape is not None:
            first = self._stack[0]
            self._input_layer = InputLayer(batch_shape=first._batch_input_shape, dtype=getattr(first, "_input_dtype", None))
            self._build_graph(self._input_layer.output)

    def _build_graph(self, input_tensor):
        self._forget_graph()
        x = input_tensor
        # Layers built here get paths under the model's name, as in Keras.
        with _InScope(self):
            for layer in self._stack:
                x = layer(x)
        self._init_graph(input_tensor, x)
        self._functional_layers = [self._input_layer] + list(self._stack)

    def build(self, input_shape=None):
        """Builds the graph for inputs of `input_shape` (batch dimension included)."""
        if input_shape is None:
            raise ValueError(f"Sequential '{self.name}': build() needs an input shape")
        if self._input_layer is None:
            self._input_layer = InputLayer(batch_shape=tuple(input_shape))
        self._build_graph(self._input_layer.output)

    def _ensure_built_for(self, x):
        if "_nodes_by_depth" in self.__dict__:
            return
        if isinstance(x, (list, tuple, dict)):
            raise ValueError(f"Sequential '{self.name}' has one input; got a {type(x).__name__} of inputs")
        arr = np.asarray(x)
        dtype = "int32" if arr.dtype.kind in "iu" else "float32"
        # A stateful layer needs a fixed batch size: Keras builds from the data's.
        stateful = any(getattr(layer, "stateful", False) for layer in self.layers)
        batch = arr.shape[0] if stateful and arr.ndim else None
        self._input_layer = InputLayer(batch_shape=(batch,) + arr.shape[1:], dtype=dtype)
        self._build_graph(self._input_layer.output)

    def _prepare(self, x, *args, **kwargs):
        self._ensure_built_for(x)
        return super()._prepare(x, *args, **kwargs)

    def __call__(self, *args, **kwargs):
        inputs = args[0] if args else kwargs.get("inputs")
        if "_nodes_by_depth" not in self.__dict__ and not isinstance(inputs, KerasTensor):
            self._ensure_built_for(inputs)
        elif "_nodes_by_depth" not in self.__dict__:
            self._input_layer = InputLayer(batch_shape=inputs.shape, dtype=inputs.dtype)
            self._build_graph(self._input_layer.output)
        return super().__call__(*args, **kwargs)

    @property
    def input_names(self):
        return [self._input_layer.name] if self._input_layer is not None else []

    def get_config(self):
        return {"name": self.name, "layers": [{"class_name": type(x).__name__, "config": x.get_config()} for x in self._stack]}

