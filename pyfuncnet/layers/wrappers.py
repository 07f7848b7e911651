"""Wrapper layers: `Bidirectional` (an RNN run both ways) and `TimeDistributed`
(a layer applied to every time step), with Keras 3's arguments and numbers.

`Bidirectional` holds two copies of the wrapped layer made from its config,
`forward_<name>` and `backward_<name>` (the second with `go_backwards=True`); its
weights are the forward layer's, then the backward one's
(`bidirectional/forward_lstm/lstm_cell/kernel`, ...). The backward layer's outputs
come in processing order (last step first); with `return_sequences` they are put
back in time order before the merge, as Keras does. The two directions are
independent ops, which the core's executor runs concurrently.

`TimeDistributed` folds time into the batch: `(batch, time, ...)` is reshaped to
`(batch * time, ...)`, the wrapped layer (a layer or a whole model) runs once on
that, and its outputs are reshaped back to `(batch, time, ...)`. Keras 3 loops over
the steps instead; the numbers are the same for layers that treat samples
independently (see `TimeDistributed`).

When the time axis (and, for TimeDistributed, also the batch) is unknown while a
model is built, the reversal and the unfolding need the step positions, which the
graph computes from the input's shape at run time (a running count, exact below
2**24 steps and samples).
"""

import copy
import inspect

import numpy as np

from pyfuncnet import _nest, _symbolic, ops
from pyfuncnet._symbolic import KerasTensor
from pyfuncnet.layers import layer as _layer_module
from pyfuncnet.layers.layer import Layer

_MERGE_MODES = ("sum", "mul", "ave", "concat", None)


# ----------------------------------------------------------------------------
# Helpers: building inner layers, (de)serializing them


def _build_inner(wrapper, layer, input_shape):
    """Builds `layer` (held by `wrapper`) for `input_shape` with the weight paths
    Keras gives it: `<wrapper>/<layer>/<weight>`, below any enclosing scope."""
    if layer.built:
        return
    scope = _layer_module._scope
    pushed = ([] if scope and scope[-1] is wrapper else [wrapper]) + [layer]
    scope.extend(pushed)
    try:
        layer.build(input_shape)
        layer.built = True
    finally:
        del scope[-len(pushed):]


def _removeprefix(name, prefix):
    return name[len(prefix):] if name.startswith(prefix) else name


def _copy_layer(layer, **overrides):
    """A fresh layer from `layer`'s config with `overrides` (Keras serializes the
    layer and deserializes it: no weights or state carry over)."""
    from pyfuncnet.layers.rnn import RNN, _CellLayer, copy_cell

    config = layer.get_config()
    config.update(overrides)
    if isinstance(layer, RNN) and not isinstance(layer, _CellLayer):
        # A user-written cell is not found by name: copy the cell object's config.
        config.pop("cell", None)
        return type(layer)(copy_cell(layer.cell), **config)
    return type(layer).from_config(config)


def _serialize_layer(layer, input_shape=None):
    """Keras 3's serialized form of a layer: `module`, `class_name`, `config`,
    `registered_name`, and `build_config` once it is built."""
    cls = type(layer)
    ours = cls.__module__.startswith("pyfuncnet.")
    out = {
        "module": "keras.layers" if ours else cls.__module__,
        "class_name": cls.__name__,
        "config": layer.get_config(),
        "registered_name": None if ours else cls.__name__,
    }
    if input_shape is not None and layer.built:
        out["build_config"] = {"input_shape": tuple(input_shape)}
    return out


def _deserialize_layer(config, custom_objects=None, what="layer"):
    """The layer a serialized config stands for (a layer instance is returned as is)."""
    if isinstance(config, Layer):
        return config
    if not isinstance(config, dict) or not isinstance(config.get("class_name"), str):
        raise ValueError(f"Could not deserialize the {what}: expected a dict with 'class_name' and 'config', got {config!r}")
    from pyfuncnet import layers as layers_module

    custom = custom_objects or {}
    name = config["class_name"]
    cls = custom.get(config.get("registered_name")) or custom.get(name) or getattr(layers_module, name, None)
    if not (isinstance(cls, type) and issubclass(cls, Layer)):
        raise ValueError(f"Could not deserialize the {what}: unknown layer class {name!r}; pass it in `custom_objects`")
    inner = dict(config.get("config") or {})
    # Layers holding other serialized objects (an RNN's cell) resolve them too.
    if "custom_objects" in inspect.signature(cls.from_config).parameters:
        return cls.from_config(inner, custom_objects=custom_objects)
    return cls.from_config(inner)


# ----------------------------------------------------------------------------
# Helpers: step positions, time reversal, folding time into the batch


# The core's `rnn` op as a running sum along axis 1: a one-unit linear cell whose
# recurrent weight is 1 (h_t = h_{t-1} + x_t; integers are exact in float32).
_RUNNING_SUM = {
    "cell": "simple_rnn",
    "activation": "linear",
    "recurrent_activation": "sigmoid",
    "go_backwards": False,
    "zero_output_for_mask": False,
    "initial_state": False,
}


def _running_sum(x):
    """`(cumsum of x along axis 1, the total (batch, 1))` for `x` of shape (batch, time, 1)."""
    outs = ops._run("rnn", _RUNNING_SUM, [x, np.ones((1, 1), np.float32)])
    return outs[0], outs[1]


def _ones_over_time(x):
    """Ones of shape (batch, time, 1) for `x` of shape (batch, time, ...)."""
    rank = len(x.shape)
    first = ops._getitem(x, (slice(None), slice(None)) + (slice(0, 1),) * (rank - 2))
    first = ops._reshape_by(first, lambda s: s[:2] + [1])
    # 1 in both branches: ones whatever the values (NaN included).
    return ops.where(first, 1.0, 1.0)


def _reversed_steps(y):
    """int32 `[time - 1, ..., 0]` for a symbolic `y` (batch, time, ...) of unknown time."""
    counts, total = _running_sum(_ones_over_time(ops._getitem(y, slice(0, 1))))
    steps = ops.subtract(total, counts)  # (1, time, 1): time - (t + 1)
    return ops.cast(ops._reshape_by(steps, lambda s: [s[1]]), "int32")


def _flat_positions(x):
    """int32 `b * time + t` of shape (batch, time) for a symbolic `x` whose batch
    and time are both unknown: where row `(b, t)` of the folded batch lies."""
    counts, totals = _running_sum(_ones_over_time(x))  # (B, T, 1): t + 1; (B, 1): T
    ends, _ = _running_sum(ops._reshape_by(totals, lambda s: [1, s[0], 1]))  # (1, B, 1): (b + 1) T
    ends = ops._reshape_by(ends, lambda s: [s[1], 1, 1])
    steps = ops._reshape_by(totals, lambda s: [s[0], 1, 1])
    positions = ops.subtract(ops.add(ops.subtract(ends, steps), counts), 1.0)
    return ops.cast(ops._reshape_by(positions, lambda s: s[:2]), "int32")


def reverse_time(y):
    """`y` (batch, time, ...) with its time axis reversed (differentiable)."""
    steps = ops.shape(y)[1]
    if not isinstance(y, KerasTensor):
        return ops.take(y, np.arange(steps - 1, -1, -1, dtype=np.int32), axis=1)
    if steps is None:
        return ops.take(y, _reversed_steps(y), axis=1)
    # Compiled graphs hold float constants only: the indices are cast in the graph.
    order = _symbolic.constant(np.arange(steps - 1, -1, -1, dtype=np.float32))
    return ops.take(y, ops.cast(order, "int32"), axis=1)


def _reshape_node(x, target_of, out_shape):
    """A symbolic reshape to `target_of(concrete input shape)` whose output shape
    (`out_shape`, None for unknown dims) is given rather than inferred: inference
    with the sentinel sizes cannot split or merge two unknown dims (their product
    overflows, or does not divide). The compiled graph checks the concrete shapes."""
    label = f"{_symbolic._labels[-1]}/reshape" if _symbolic._labels else "reshape"
    node = _symbolic.OpNode("reshape", lambda shapes: {"shape": target_of(list(shapes[0]))}, [x], label)
    node.outputs = [KerasTensor(out_shape, x.dtype, node=node, index=0)]
    return node.outputs[0]


def _fold(x, differentiable=True):
    """(batch, time, ...) -> (batch * time, ...)."""
    shape = tuple(ops.shape(x))
    if not isinstance(x, KerasTensor):
        target = (shape[0] * shape[1],) + shape[2:]
        return ops.reshape(x, target) if differentiable else np.reshape(np.asarray(x), target)
    lead = None if shape[0] is None or shape[1] is None else shape[0] * shape[1]
    return _reshape_node(x, lambda s: [s[0] * s[1]] + s[2:], (lead,) + shape[2:])


def _unfold(y, batch, steps, x):
    """(batch * time, ...) -> (batch, time, ...); `x` is the unfolded input (its
    shape gives the positions when both sizes are unknown)."""
    if not isinstance(y, KerasTensor):
        return ops.reshape(y, (batch, steps) + tuple(ops.shape(y))[1:])
    rest = tuple(y.shape[1:])
    if steps is not None:
        return _reshape_node(y, lambda s: [-1, steps] + s[1:], (batch, steps) + rest)
    if batch is not None:
        return _reshape_node(y, lambda s: [batch, -1] + s[1:], (batch, None) + rest)
    return ops.take(y, _flat_positions(x), axis=0)


def _has_parameter(layer, name):
    return name in layer._call_signature.parameters


# ----------------------------------------------------------------------------
# Bidirectional


class Bidirectional(Layer):
    """Runs a recurrent layer forwards and backwards and merges the two outputs.

    Args:
        layer: the recurrent layer (`LSTM`, `GRU`, `SimpleRNN`, `RNN`, or a layer
            with `go_backwards`, `return_sequences`, `return_state` and a config).
            It is not used itself: two copies are made from its config,
            `forward_<name>` and `backward_<name>` (`go_backwards=True`), with
            fresh weights.
        merge_mode: how the two outputs combine: "concat" (default, along the last
            axis), "sum", "mul", "ave", or None (a list of both).
        weights: initial weights, the forward layer's then the backward layer's,
            set when the layer is built (Keras 3 accepts the argument and ignores
            it; Keras 2 set them).
        backward_layer: the layer to use for the backward direction (used as
            given); it must have `go_backwards` opposite to `layer`'s and the same
            `stateful`, `return_sequences` and `return_state`.

    With `return_sequences`, both copies output zeros at masked steps (Keras sets
    their `zero_output_for_mask` to `return_sequences`), and the backward output is
    reversed in time before the merge. With `return_state` the outputs are
    `[merged output(s), *forward states, *backward states]`. An `initial_state`
    list is split in half: the forward states, then the backward ones.

    Example:
        >>> x = Input(shape=(None, 8))
        >>> y = Bidirectional(LSTM(16, return_sequences=True))(x)  # (None, None, 32)
    """

    def __init__(self, layer, merge_mode="concat", weights=None, backward_layer=None, **kwargs):
        if not isinstance(layer, Layer):
            raise ValueError(f"Please initialize `Bidirectional` layer with a `keras.layers.Layer` instance. Received: {layer}")
        if backward_layer is not None and not isinstance(backward_layer, Layer):
            raise ValueError(f"`backward_layer` need to be a `keras.layers.Layer` instance. Received: {backward_layer}")
        if merge_mode not in _MERGE_MODES:
            raise ValueError(f'Invalid merge mode. Received: {merge_mode}. Merge mode should be one of {{"sum", "mul", "ave", "concat", None}}')
        super().__init__(**kwargs)
        self.forward_layer = _copy_layer(layer, name=f"forward_{_removeprefix(layer.name, 'forward_')}")
        if backward_layer is None:
            self.backward_layer = _copy_layer(layer, name=f"backward_{_removeprefix(layer.name, 'backward_')}", go_backwards=True)
        else:
            self.backward_layer = backward_layer
        self._verify_layer_config()
        for inner in (self.forward_layer, self.backward_layer):
            if getattr(inner, "zero_output_for_mask", None) is not None:
                inner.zero_output_for_mask = inner.return_sequences
        self.merge_mode = merge_mode
        self._initial_weights = [np.asarray(w) for w in weights] if weights else None
        self.stateful = layer.stateful
        self.return_sequences = layer.return_sequences
        self.return_state = layer.return_state
        self.supports_masking = True
        self.input_spec = layer.input_spec
        self._inner_input_shape = None

    def _verify_layer_config(self):
        forward, backward = self.forward_layer, self.backward_layer
        if forward.go_backwards == backward.go_backwards:
            raise ValueError(
                "Forward layer and backward layer should have different `go_backwards` value. Received: "
                f"forward_layer.go_backwards {forward.go_backwards}, backward_layer.go_backwards={backward.go_backwards}"
            )
        for attribute in ("stateful", "return_sequences", "return_state"):
            a, b = getattr(forward, attribute), getattr(backward, attribute)
            if a != b:
                raise ValueError(
                    f'Forward layer and backward layer are expected to have the same value for attribute "{attribute}", '
                    f'got "{a}" for forward layer and "{b}" for backward layer'
                )

    # ------------------------------------------------------------------ state

    @property
    def states(self):
        forward, backward = getattr(self.forward_layer, "states", None), getattr(self.backward_layer, "states", None)
        if forward and backward:
            return tuple(list(forward) + list(backward))
        return None

    def reset_states(self):
        if not self.stateful:
            raise AttributeError("Layer must be stateful.")
        self.forward_layer.reset_states()
        self.backward_layer.reset_states()

    reset_state = reset_states

    # ------------------------------------------------------------------ building

    def build(self, sequences_shape, initial_state_shape=None):
        sequences_shape = tuple(sequences_shape)
        self._inner_input_shape = sequences_shape
        _build_inner(self, self.forward_layer, sequences_shape)
        _build_inner(self, self.backward_layer, sequences_shape)
        if self._initial_weights is not None:
            weights, self._initial_weights = self._initial_weights, None
            half = len(weights) // 2
            self.forward_layer.set_weights(weights[:half])
            self.backward_layer.set_weights(weights[half:])
        self.built = True

    def compute_output_shape(self, sequences_shape, initial_state_shape=None):
        sequences_shape = tuple(sequences_shape)
        if not self.built:
            self.build(sequences_shape)
        shapes = self.forward_layer.compute_output_shape(sequences_shape)
        if self.return_state:
            output_shape, state_shapes = tuple(shapes[0]), [tuple(s) for s in shapes[1:]]
        else:
            output_shape, state_shapes = tuple(shapes), []
        if self.merge_mode == "concat":
            last = output_shape[-1]
            output_shape = output_shape[:-1] + (None if last is None else 2 * last,)
        outputs = [output_shape, output_shape] if self.merge_mode is None else [output_shape]
        if self.return_state:
            return outputs + state_shapes + state_shapes
        return outputs if self.merge_mode is None else output_shape

    # ------------------------------------------------------------------ calling

    def call(self, sequences, initial_state=None, mask=None, training=None):
        kwargs = {}
        if self.forward_layer._call_has_training:
            kwargs["training"] = training
        if self.forward_layer._call_has_mask:
            kwargs["mask"] = mask
        forward_state = backward_state = None
        if initial_state is not None:
            states = list(initial_state) if isinstance(initial_state, (list, tuple)) else [initial_state]
            half = len(states) // 2
            forward_state, backward_state = states[:half], states[half:]
        y = self.forward_layer(sequences, initial_state=forward_state, **kwargs)
        y_rev = self.backward_layer(sequences, initial_state=backward_state, **kwargs)
        states = []
        if self.return_state:
            states = list(y[1:]) + list(y_rev[1:])
            y, y_rev = y[0], y_rev[0]
        if self.return_sequences:
            y_rev = reverse_time(y_rev)
        if self.merge_mode == "concat":
            outputs = [ops.concatenate([y, y_rev], axis=-1)]
        elif self.merge_mode == "sum":
            outputs = [ops.add(y, y_rev)]
        elif self.merge_mode == "ave":
            outputs = [ops.divide(ops.add(y, y_rev), 2.0)]
        elif self.merge_mode == "mul":
            outputs = [ops.multiply(y, y_rev)]
        else:
            outputs = [y, y_rev]
        if self.return_state or self.merge_mode is None:
            return outputs + states
        return outputs[0]

    def compute_mask(self, inputs, mask=None):
        if isinstance(mask, (list, tuple)):
            mask = mask[0]
        output_mask = mask if self.return_sequences else None
        masks = [output_mask, output_mask] if self.merge_mode is None else [output_mask]
        if self.return_state:
            n_states = len(_nest.flatten(getattr(getattr(self.forward_layer, "cell", None), "state_size", [None])))
            return masks + [None] * (2 * n_states)
        return masks if self.merge_mode is None else output_mask

    # ------------------------------------------------------------------ config

    def get_config(self):
        config = super().get_config()
        config["merge_mode"] = self.merge_mode
        config["layer"] = _serialize_layer(self.forward_layer, self._inner_input_shape)
        config["backward_layer"] = _serialize_layer(self.backward_layer, self._inner_input_shape)
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = copy.deepcopy(config)
        config["layer"] = _deserialize_layer(config["layer"], custom_objects)
        backward = config.pop("backward_layer", None)
        if backward is not None:
            config["backward_layer"] = _deserialize_layer(backward, custom_objects, "backward layer")
        return cls(**config)


# ----------------------------------------------------------------------------
# Wrapper and TimeDistributed


class Wrapper(Layer):
    """The base of layers that wrap another layer (`self.layer`), as Keras's.

    Args:
        layer: the wrapped layer; its weights are the wrapper's.
    """

    def __init__(self, layer, **kwargs):
        if not isinstance(layer, Layer):
            raise ValueError(
                f"Layer {layer} supplied to Wrapper isn't a supported layer type. Please ensure wrapped layer is a valid Keras layer."
            )
        super().__init__(**kwargs)
        self.layer = layer
        self._inner_input_shape = None

    def build(self, input_shape=None):
        self._inner_input_shape = None if input_shape is None else tuple(input_shape)
        _build_inner(self, self.layer, input_shape)
        self.built = True

    def get_config(self):
        config = super().get_config()
        config["layer"] = _serialize_layer(self.layer, self._inner_input_shape)
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        layer = _deserialize_layer(config.pop("layer"), custom_objects)
        return cls(layer, **config)


class TimeDistributed(Wrapper):
    """Applies a layer (or a model) to every time step of its input.

    The input is `(batch, time, ...)`, at least 3-D; the wrapped layer sees
    `(batch * time, ...)` (time folded into the batch) and its output
    `(batch * time, *out)` becomes `(batch, time, *out)`. The same weights serve
    every step. A mask `(batch, time)` is folded the same way for a wrapped layer
    whose `call` takes one, and the output keeps the input's mask (Keras 3).

    Keras 3 calls the layer once per step instead (`layer.call`, without its
    `__call__`: no input checks or activity regularization, as here). The two
    agree for every layer that treats samples independently; a layer that
    mixes the batch (BatchNormalization while training) sees all steps at once
    here, one step at a time there.

    Args:
        layer: the layer or model to apply.

    Example:
        >>> video = Input(shape=(None, 32, 32, 3))
        >>> frames = TimeDistributed(Conv2D(8, 3))(video)  # (None, None, 30, 30, 8)
    """

    def __init__(self, layer, **kwargs):
        if not isinstance(layer, Layer):
            raise ValueError(f"Please initialize `TimeDistributed` layer with a `keras.layers.Layer` instance. Received: {layer}")
        super().__init__(layer, **kwargs)
        self.supports_masking = True

    @staticmethod
    def _child_input_shape(input_shape):
        if not isinstance(input_shape, (tuple, list)) or len(input_shape) < 3:
            raise ValueError(f"`TimeDistributed` Layer should be passed an `input_shape` with at least 3 dimensions, received: {input_shape}")
        return (input_shape[0], *input_shape[2:])

    def build(self, input_shape):
        child = self._child_input_shape(tuple(input_shape))
        super().build(child)

    def compute_output_shape(self, input_shape):
        input_shape = tuple(input_shape)
        child = self._child_input_shape(input_shape)
        if not self.built:
            self.build(input_shape)
        child_output = self.layer.compute_output_shape(child)

        def unfold(shape):
            shape = tuple(shape)
            return (shape[0], input_shape[1], *shape[1:])

        if isinstance(child_output, (list, tuple)) and child_output and isinstance(child_output[0], (list, tuple)):
            return [unfold(s) for s in child_output]
        return unfold(child_output)

    def call(self, inputs, training=None, mask=None):
        shape = tuple(ops.shape(inputs))
        where = f"TimeDistributed '{self.name}'"
        if len(shape) < 3:
            raise ValueError(f"{where}: the input must be at least 3-D (batch, time, ...), got shape {shape}")
        if mask is not None:
            mask_shape = tuple(ops.shape(mask))
            if len(mask_shape) < 2:
                raise ValueError(
                    "The `mask` passed to the `TimeDistributed` layer must be at least 2D (e.g., `(batch_size, timesteps)`), "
                    f"but it has {len(mask_shape)} dimension(s) with shape {mask_shape}."
                )
            if any(a is not None and b is not None and a != b for a, b in zip(shape[:2], mask_shape[:2])):
                raise ValueError(
                    f"The `mask` passed to the `TimeDistributed` layer has a shape {mask_shape} that is incompatible with the input "
                    f"shape {shape}. The first two dimensions of the mask (batch size and timesteps) must match the input's first "
                    f"two dimensions. Expected mask shape prefix: ({shape[0]}, {shape[1]})."
                )
        kwargs = {}
        if mask is not None and _has_parameter(self.layer, "mask"):
            kwargs["mask"] = _fold(mask, differentiable=False)
        if _has_parameter(self.layer, "training"):
            kwargs["training"] = training
        outputs = self.layer.call(_fold(inputs), **kwargs)
        return _nest.map_structure(lambda y: _unfold(y, shape[0], shape[1], inputs), outputs)
