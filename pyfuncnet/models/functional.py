"""Functional models: the graph of layers between `inputs` and `outputs`.

`Model(inputs, outputs)` walks the layer calls (Nodes) back from the outputs, orders
the layers as Keras does (by depth from the outputs, then by discovery), and can be
called like a layer: on new symbolic tensors it replays its layer calls (weights
shared); on arrays it runs a compiled predict step.
"""

import numpy as np

from pyfuncnet import _nest, _tape, _tensor
from pyfuncnet._function import Function
from pyfuncnet._symbolic import KerasTensor, get_keras_mask, set_keras_mask
from pyfuncnet._variable import Variable, store
from pyfuncnet.models.model import Model


def _history(t, what):
    if not isinstance(t, KerasTensor) or not hasattr(t, "_keras_history"):
        raise ValueError(
            f"{what} of a functional model must be tensors returned by `Input` or by calling layers; got {t!r}"
        )
    return t._keras_history


def map_graph(inputs, outputs):
    """The nodes between `inputs` and `outputs` and the layers, in Keras's order.

    Returns:
        `(nodes_by_depth, layers)`: a dict depth -> nodes (depth 0 produces the
        outputs) and the layers sorted by decreasing depth, then by the order the
        walk from the outputs found them.

    Raises:
        ValueError: an output depends on an `Input` that is not among `inputs`.
    """
    input_ids = {id(t) for t in inputs}
    finished, in_progress = set(), set()
    post_order = []
    layer_order = {}

    def visit(tensor):
        layer, node_index, _ = tensor._keras_history
        node = layer._inbound_nodes[node_index]
        if id(node) in finished:
            return
        if id(node) in in_progress:
            raise ValueError(f"The graph has a cycle at layer '{layer.name}'")
        if id(tensor) not in input_ids and node.is_input:
            raise ValueError(
                f"Graph disconnected: cannot obtain value for tensor {tensor.name} (shape {tensor.shape}) "
                f"at layer '{layer.name}': it is the output of an Input that is not among the model's inputs "
                f"{[t.name for t in inputs]}. Pass it in `inputs`."
            )
        if id(tensor) in input_ids and not node.is_input:
            # An intermediate tensor given as an input: the model starts there, so
            # the layer that produced it is not part of the model (Keras allows this
            # to take sub-models out of a larger graph).
            return
        layer_order.setdefault(id(layer), (len(layer_order), layer))
        in_progress.add(id(node))
        if id(tensor) not in input_ids:
            for t in node.input_tensors:
                visit(t)
        in_progress.discard(id(node))
        finished.add(id(node))
        post_order.append((node, id(tensor) in input_ids))

    for t in inputs:
        _history(t, "Inputs")
    for t in outputs:
        _history(t, "Outputs")
        visit(t)

    node_depth, layer_depth = {}, {}
    for node, is_model_input in reversed(post_order):
        depth = max(node_depth.setdefault(id(node), 0), layer_depth.get(id(node.layer), 0))
        node_depth[id(node)] = depth
        layer_depth[id(node.layer)] = depth
        if not is_model_input:
            for parent in node.parent_nodes:
                node_depth[id(parent)] = max(depth + 1, node_depth.get(id(parent), 0))
    nodes_by_depth = {}
    for node, _ in post_order:
        nodes_by_depth.setdefault(node_depth[id(node)], []).append(node)
    layers = sorted(
        (layer for _, layer in layer_order.values()),
        key=lambda layer: (-layer_depth[id(layer)], layer_order[id(layer)][0]),
    )
    return nodes_by_depth, layers


class Functional(Model):
    """A model defined by its input and output tensors (see `Model`)."""

    def __init__(self, inputs, outputs, name=None, trainable=True, **kwargs):
        super().__init__(name=name, trainable=trainable, **kwargs)
        self._init_graph(inputs, outputs)

    def _init_graph(self, inputs, outputs):
        self._inputs_struct = inputs
        self._outputs_struct = outputs
        self.inputs = _nest.flatten(inputs)
        self.outputs = _nest.flatten(outputs)
        if not self.inputs:
            raise ValueError("A functional model needs at least one input")
        self._nodes_by_depth, layers = map_graph(self.inputs, self.outputs)
        self._functional_layers = layers
        tracked = self.__dict__.setdefault("_sublayers", [])
        tracked.extend(layer for layer in layers if not any(layer is x for x in tracked))
        self.built = True
        self._predict_function = None
        self._predict_masks = []

    @property
    def layers(self):
        return list(self._functional_layers)

    @property
    def input_names(self):
        if isinstance(self._inputs_struct, dict):
            return sorted(self._inputs_struct)
        return [t._keras_history[0].name for t in self.inputs]

    @property
    def output_names(self):
        if isinstance(self._outputs_struct, dict):
            return sorted(self._outputs_struct)
        return [t._keras_history[0].name for t in self.outputs]

    @property
    def input(self):
        return self._inputs_struct if not (isinstance(self._inputs_struct, (list, tuple)) and len(self._inputs_struct) == 1) else self._inputs_struct[0]

    @property
    def output(self):
        return self._outputs_struct if not (isinstance(self._outputs_struct, (list, tuple)) and len(self._outputs_struct) == 1) else self._outputs_struct[0]

    @property
    def input_shape(self):
        return _nest.map_structure(lambda t: t.shape, self.input)

    @property
    def output_shape(self):
        return _nest.map_structure(lambda t: t.shape, self.output)

    def __call__(self, *args, **kwargs):
        # Fast path for `model(x)` with one float32 array on a one-input model whose
        # step for this batch shape is compiled: straight to the core.
        if len(args) == 1 and not kwargs and getattr(self, "_predict_function", None) is not None and not self._predict_masks and not _tape._active:
            x = args[0]
            if type(x) is np.ndarray and x.dtype == np.float32 and x.flags.c_contiguous and get_keras_mask(x) is None:
                step = self._predict_function.compiled_step((x.shape,))
                if step is not None:
                    outs, _ = step.run([x], store.core)
                    return _nest.pack_like(self._outputs_struct, outs) if _nest.is_nested(self._outputs_struct) else outs[0]
        return super().__call__(*args, **kwargs)

    def _flatten_call_inputs(self, inputs):
        """The call's inputs in the order of `self.inputs` (dicts matched by name)."""
        if isinstance(inputs, dict):
            names = self.input_names
            missing = [n for n in names if n not in inputs]
            if missing:
                raise ValueError(f"Model '{self.name}': missing input(s) {missing}; expected keys {names}, got {sorted(inputs)}")
            if isinstance(self._inputs_struct, dict):
                return [inputs[k] for k in sorted(self._inputs_struct)]
            return [inputs[n] for n in names]
        flat = _nest.flatten(inputs)
        if len(flat) != len(self.inputs):
            raise ValueError(f"Model '{self.name}' expects {len(self.inputs)} input(s), but it received {len(flat)} input tensors")
        return flat

    def call(self, inputs, training=None, mask=None):
        flat = self._flatten_call_inputs(inputs)
        if not any(isinstance(t, KerasTensor) for t in flat):
            flat = [_cast_like(a, t) for a, t in zip(flat, self.inputs)]
        if mask is not None:
            # Masks given for the inputs are attached to them, so the layers see
            # them as they see masks made inside the model (Keras does the same);
            # to a view of an array, so the caller's array keeps no mask.
            for k, m in enumerate(_nest.flatten(mask)[: len(flat)]):
                if m is not None:
                    if isinstance(flat[k], np.ndarray):
                        flat[k] = flat[k].view()
                    set_keras_mask(flat[k], m)
        if any(isinstance(t, KerasTensor) for t in flat):
            return self._run_through_graph(flat, training)
        if (_tape._active and _tensor._recording()) or any(get_keras_mask(a) is not None for a in flat) or self._keeps_states():
            # Under a GradientTape each layer runs eagerly, so the tape sees every
            # op (a custom training loop differentiates through the model); so do
            # inputs with masks, which the compiled graph has no place for, and
            # stateful recurrent layers, which keep their states as they run.
            return self._run_through_graph(flat, training)
        if self._predict_function is None:
            # The output masks are computed with the outputs and attached to them,
            # as eager layer calls attach theirs.
            masks = [get_keras_mask(t) for t in self.outputs]
            self._predict_masks = [k for k, m in enumerate(masks) if isinstance(m, KerasTensor)]
            self._predict_function = Function(self.inputs, self.outputs + [masks[k] for k in self._predict_masks])
        outs = self._predict_function(*flat)
        outs = outs if isinstance(outs, list) else [outs]
        outs, mask_values = outs[: len(self.outputs)], outs[len(self.outputs) :]
        for k, m in zip(self._predict_masks, mask_values):
            set_keras_mask(outs[k], m)
        return _nest.pack_like(self._outputs_struct, outs)

    def _keeps_states(self):
        """Whether a stateful recurrent layer is in the graph (found once: the
        graph does not change after the model is made)."""
        if "_has_carried_states" not in self.__dict__:
            self._has_carried_states = bool(self._carried_states())
        return self._has_carried_states

    def _run_through_graph(self, flat_inputs, training):
        """Replays every layer call on new tensors (the weights are shared)."""
        values = {id(t): new for t, new in zip(self.inputs, flat_inputs)}
        for depth in sorted(self._nodes_by_depth, reverse=True):
            for node in self._nodes_by_depth[depth]:
                if node.is_input or all(id(t) in values for t in node.output_tensors):
                    continue
                args = _nest.map_structure(lambda t: values.get(id(t), t) if isinstance(t, KerasTensor) else t, list(node.arguments[:2]))
                kwargs = _nest.map_structure(lambda t: values.get(id(t), t) if isinstance(t, KerasTensor) else t, node.arguments[2])
                if training is not None and node.layer._call_has_training:
                    kwargs = dict(kwargs, training=training)
                outs = node.layer(args[0], *args[1], **kwargs)
                for old, new in zip(node.output_tensors, _nest.flatten(outs)):
                    values[id(old)] = new
        return _nest.pack_like(self._outputs_struct, [values[id(t)] for t in self.outputs])

    def compute_output_shape(self, input_shape):
        return self.output_shape

    def get_config(self):
        return {"name": self.name, "trainable": self.trainable}


def _cast_like(a, tensor):
    if isinstance(a, (Variable, _tensor.TapeTensor)):
        # What a GradientTape follows stays itself, so gradients reach it.
        dtype = "int32" if tensor.dtype == "int32" else "float32"
        if str(getattr(a, "dtype", "")) == dtype:
            return a
    arr = np.asarray(a)
    dtype = np.int32 if tensor.dtype == "int32" else np.float32
    if arr.dtype != dtype or not arr.flags.c_contiguous:
        arr = np.ascontiguousarray(arr, dtype=dtype)
    mask = get_keras_mask(a) if arr is not a else None
    if mask is not None:
        set_keras_mask(arr, mask)
    return arr
