"""`Layer`, the unit users build models from, and `Node`, one call of a layer.

Called on symbolic tensors (`Input(...)` and what layers return), a layer builds
its weights from the input shapes, runs `call` (whose `ops` record graph nodes) and
records a `Node` linking its input tensors to its output tensors: that is the graph
`Model(inputs, outputs)` walks. Called on arrays, it runs `call` eagerly. A layer
called twice shares one set of weights between the two calls.

Masks follow Keras 3's rules: the mask attached to an input (`_keras_mask` on a
symbolic tensor, a table entry for a numpy array: `_symbolic.get_keras_mask`) is
passed to `call(..., mask=...)` when `call` takes one and none is given, and a
layer that supports masking attaches `compute_mask`'s result to its outputs.
"""

import contextlib
import inspect
import re
import warnings

import numpy as np

from pyfuncnet import _nest, _symbolic
from pyfuncnet._symbolic import KerasTensor
from pyfuncnet._variable import Variable

_name_counts = {}
# The last random stream handed to a layer (dropout and noise masks are keyed by it).
_stream_count = [0]
# Activity losses of the layer calls in progress (innermost last).
_activity_stack = []
# The layers whose build or call is running (innermost last): weights created
# meanwhile get the path "outer/inner/name", as Keras's name scopes give them.
_scope = []
# Nonzero while a graph is expanded for compiling: layers called then on symbolic
# tensors leave no node behind (each compile would add one per call).
_expanding = [0]


@contextlib.contextmanager
def expanding():
    """Layer calls inside record no nodes (see `_expanding`)."""
    _expanding[0] += 1
    try:
        yield
    finally:
        _expanding[0] -= 1


class _InScope:
    def __init__(self, layer):
        self.layer = layer

    def __enter__(self):
        _scope.append(self.layer)

    def __exit__(self, *exc):
        _scope.pop()


def to_snake_case(name):
    """`"BatchNormalization"` -> `"batch_normalization"`, `"Conv2D"` -> `"conv2d"`."""
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


def unique_name(base):
    """`base` the first time, then `base_1`, `base_2`, ... (Keras's automatic names)."""
    count = _name_counts.get(base, 0)
    _name_counts[base] = count + 1
    return base if count == 0 else f"{base}_{count}"


def clear_session():
    """Forgets the automatic names and random streams handed out so far (Keras's
    `clear_session`)."""
    _name_counts.clear()
    reset_random_streams()


def next_random_stream():
    """A random stream number for a new layer: dropout and noise draw from the
    stream keyed by it, so the same code after the same `set_random_seed` (or
    `clear_session`) draws the same masks."""
    _stream_count[0] += 1
    return _stream_count[0]


def reset_random_streams():
    _stream_count[0] = 0


class Node:
    """One call of `layer`: the tensors it was given and the ones it returned.

    Attributes:
        layer: the layer called.
        arguments: `(inputs, args, kwargs)` of the call, tensors included, so the
            call can be replayed on other tensors (a model called as a layer).
        input_tensors: the flat list of KerasTensors among the arguments.
        output_tensors: the flat list of outputs.
        outputs: the outputs with the structure `call` returned.
    """

    def __init__(self, layer, arguments, outputs):
        self.layer = layer
        self.arguments = arguments
        self.input_tensors = [t for t in _nest.flatten(list(arguments)) if isinstance(t, KerasTensor)]
        self.outputs = outputs
        self.output_tensors = _nest.flatten(outputs)
        self.activity_losses = []
        self.state_updates = []
        index = len(layer._inbound_nodes)
        layer._inbound_nodes.append(self)
        for k, t in enumerate(self.output_tensors):
            t._keras_history = (layer, index, k)

    @property
    def parent_nodes(self):
        """The nodes that produced this node's inputs."""
        return [t._keras_history[0]._inbound_nodes[t._keras_history[1]] for t in self.input_tensors]

    @property
    def is_input(self):
        return not self.input_tensors


class InputSpec:
    """What a layer accepts: rank bounds and fixed sizes of some axes.

    Args:
        dtype: required dtype, or None.
        shape: a full shape (None for free dims), or None.
        ndim / min_ndim / max_ndim: rank requirements.
        axes: `{axis: size}` sizes the inputs must have.
    """

    def __init__(self, dtype=None, shape=None, ndim=None, max_ndim=None, min_ndim=None, axes=None, allow_last_axis_squeeze=False, name=None, optional=False):
        self.dtype = dtype
        self.shape = None if shape is None else tuple(shape)
        self.ndim = len(self.shape) if shape is not None else ndim
        self.max_ndim = max_ndim
        self.min_ndim = min_ndim
        self.axes = dict(axes or {})
        self.name = name
        self.optional = optional

    def check(self, layer, index, shape):
        """Raises ValueError naming `layer` when an input of `shape` does not fit."""
        where = f'Input {index} of layer "{layer.name}" is incompatible with the layer'
        rank = len(shape)
        if self.ndim is not None and rank != self.ndim:
            raise ValueError(f"{where}: expected ndim={self.ndim}, found ndim={rank}. Full shape received: {tuple(shape)}")
        if self.min_ndim is not None and rank < self.min_ndim:
            raise ValueError(f"{where}: expected min_ndim={self.min_ndim}, found ndim={rank}. Full shape received: {tuple(shape)}")
        if self.max_ndim is not None and rank > self.max_ndim:
            raise ValueError(f"{where}: expected max_ndim={self.max_ndim}, found ndim={rank}. Full shape received: {tuple(shape)}")
        for axis, size in self.axes.items():
            got = shape[axis] if -rank <= axis < rank else None
            if size is not None and got not in (size, None):
                raise ValueError(
                    f"{where}: expected axis {axis} of input shape to have value {size}, "
                    f"but received input with shape {tuple(shape)}"
                )
        if self.shape is not None:
            for want, got in zip(self.shape, shape):
                if want is not None and got is not None and want != got:
                    raise ValueError(f"{where}: expected shape={self.shape}, found shape={tuple(shape)}")


def _accepts(fn, name):
    params = inspect.signature(fn).parameters
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def _shape_of(x):
    if isinstance(x, (KerasTensor, np.ndarray, Variable)):
        return tuple(x.shape)
    return tuple(np.shape(x))


def _as_eager_input(x):
    """An eager layer input: float data as float32 arrays, ints as they are."""
    if isinstance(x, Variable) or (isinstance(x, np.ndarray) and x.dtype in (np.float32, np.int32)):
        return x
    arr = np.asarray(x)
    if arr.dtype.kind in "fb":
        return arr.astype(np.float32)
    if arr.dtype.kind in "iu":
        return arr.astype(np.int32)
    return x


class Layer:
    """The base class of all layers.

    Args:
        trainable: whether the layer's weights are trained.
        name: a unique name (derived from the class name by default).
        dtype: the dtype of the weights and computations ("float32").
        activity_regularizer: a function of each output whose value is added to
            the loss (divided by the batch size, as Keras does).
        input_shape / input_dim / batch_size / batch_input_shape: accepted for the
            first layer of a `Sequential` model, which creates its `Input` from them.

    Subclasses implement `build(input_shape)` (create weights with `add_weight`)
    and `call(inputs, training=None, mask=None)` (written with `pyfuncnet.ops`),
    and, to pass on or change masks, `compute_mask(inputs, mask)`.

    Example:
        >>> class Scale(Layer):
        ...     def build(self, input_shape):
        ...         self.s = self.add_weight(shape=(input_shape[-1],), initializer="ones")
        ...     def call(self, x):
        ...         return x * self.s
    """

    def __init__(self, *, activity_regularizer=None, trainable=True, dtype=None, autocast=True, name=None, **kwargs):
        input_dim = kwargs.pop("input_dim", None)
        input_shape = kwargs.pop("input_shape", None)
        batch_input_shape = kwargs.pop("batch_input_shape", None)
        batch_size = kwargs.pop("batch_size", None)
        if kwargs:
            raise TypeError(f"{type(self).__name__}: unrecognized keyword arguments: {sorted(kwargs)}")
        if input_shape is None and input_dim is not None:
            input_shape = (input_dim,)
        if batch_input_shape is None and input_shape is not None:
            batch_input_shape = (batch_size,) + tuple(input_shape)
        self._batch_input_shape = None if batch_input_shape is None else tuple(batch_input_shape)
        self.name = name or unique_name(to_snake_case(type(self).__name__))
        self._trainable = bool(trainable)
        self.dtype = "float32" if dtype is None else str(np.dtype(dtype) if not isinstance(dtype, str) else dtype)
        self.autocast = autocast
        from pyfuncnet import regularizers

        self.activity_regularizer = regularizers.get(activity_regularizer)
        self.built = False
        self.input_spec = None
        # As in Keras: a layer whose class defines its own `compute_mask` supports
        # masking unless it says otherwise.
        self._supports_masking = type(self).compute_mask is not Layer.compute_mask
        self._own_trainable = []
        self._own_non_trainable = []
        self._inbound_nodes = []
        self._weight_regularizers = []
        self._call_has_training = _accepts(self.call, "training")
        self._call_has_mask = _accepts(self.call, "mask")
        self._call_signature = inspect.signature(self.call)
        # `mask` and `<argument>_mask` parameters are filled from the masks of the
        # inputs (a `**kwargs` parameter does not count, as in Keras).
        self._mask_params = [n for n in self._call_signature.parameters if n == "mask" or n.endswith("_mask")]

    # ------------------------------------------------------------------ tracking

    def __setattr__(self, name, value):
        # Sub-layers assigned as attributes (alone, or in lists, tuples and dicts,
        # nested or not) are tracked: their weights are part of this layer's, as in Keras.
        if not name.startswith("__"):
            layers = self.__dict__.setdefault("_sublayers", [])
            candidates = _nest.flatten(value) if _nest.is_nested(value) else [value]
            for item in candidates:
                if isinstance(item, Layer) and item is not self and not any(item is x for x in layers):
                    layers.append(item)
        object.__setattr__(self, name, value)

    @property
    def _layers(self):
        return list(self.__dict__.get("_sublayers", []))

    @property
    def trainable(self):
        return self._trainable

    @trainable.setter
    def trainable(self, value):
        value = bool(value)
        self._trainable = value
        for layer in self._layers:
            layer.trainable = value

    # ------------------------------------------------------------------ weights

    def add_weight(self, shape=None, initializer=None, dtype=None, trainable=True, autocast=True, regularizer=None, constraint=None, aggregation="none", name=None, **kwargs):
        """Creates a weight `Variable` of this layer.

        Args:
            shape: the weight's shape (a Keras 2 style call may pass the name first).
            initializer: an initializer name, object or callable
                ("glorot_uniform" for float weights by default).
            trainable: whether optimizers update it.
            regularizer: a function of the weight added to the loss.
            constraint: a function applied to the weight after each update.
            name: the weight's name (its path is "<layer name>/<name>").

        Returns:
            The new `Variable`.
        """
        from pyfuncnet import constraints, initializers, regularizers

        if isinstance(shape, str):  # Keras 2: add_weight(name, shape, ...)
            shape, name = kwargs.pop("shape", initializer), shape
        kwargs.pop("use_resource", None)
        kwargs.pop("synchronization", None)
        if kwargs:
            raise TypeError(f"add_weight() of layer '{self.name}': unexpected arguments {sorted(kwargs)}")
        shape = () if shape is None else tuple(int(d) for d in shape)
        if any(d < 0 for d in shape):
            raise ValueError(f"add_weight() of layer '{self.name}': negative dimension in shape {shape}")
        dtype = dtype or self.dtype
        if initializer is None:
            initializer = "glorot_uniform" if "float" in str(dtype) else "zeros"
        init = initializers.get(initializer)
        value = np.asarray(init(shape, dtype=dtype) if callable(init) else init)
        name = name or f"variable_{len(self._own_trainable) + len(self._own_non_trainable)}"
        var = Variable(value.astype(dtype), dtype=dtype, trainable=trainable, name=name)
        scope = "/".join(layer.name for layer in _scope) if _scope and _scope[-1] is self else self.name
        var.path = f"{scope}/{name}"
        var.constraint = constraints.get(constraint)
        var.regularizer = regularizers.get(regularizer)
        (self._own_trainable if trainable else self._own_non_trainable).append(var)
        return var

    def add_variable(self, *args, **kwargs):
        """Alias of `add_weight`."""
        return self.add_weight(*args, **kwargs)

    def _all_weights(self):
        seen, out = set(), []
        for v in self._own_trainable + self._own_non_trainable:
            if id(v) not in seen:
                seen.add(id(v))
                out.append(v)
        for layer in self._layers:
            for v in layer.weights:
                if id(v) not in seen:
                    seen.add(id(v))
                    out.append(v)
        return out

    @property
    def weights(self):
        """Every weight: this layer's (trainable first), then its sub-layers'."""
        return self._all_weights()

    @property
    def variables(self):
        return self.weights

    @property
    def trainable_weights(self):
        if not self.trainable:
            return []
        out = [v for v in self._own_trainable if v.trainable]
        seen = {id(v) for v in out}
        for layer in self._layers:
            for v in layer.trainable_weights:
                if id(v) not in seen:
                    seen.add(id(v))
                    out.append(v)
        return out

    @property
    def non_trainable_weights(self):
        if not self.trainable:
            return self.weights
        trainable = {id(v) for v in self.trainable_weights}
        return [v for v in self.weights if id(v) not in trainable]

    trainable_variables = trainable_weights
    non_trainable_variables = non_trainable_weights

    def get_weights(self):
        """The weights' values as numpy arrays, in `weights` order."""
        return [v.numpy() for v in self.weights]

    def set_weights(self, weights):
        """Sets every weight from a list of arrays in `weights` order."""
        params = self.weights
        weights = list(weights)
        if len(weights) != len(params):
            raise ValueError(
                f"Layer '{self.name}' expected {len(params)} weights, but the given list has {len(weights)}: "
                f"expected shapes {[tuple(p.shape) for p in params]}"
            )
        values = []
        for p, w in zip(params, weights):
            w = np.asarray(w)
            if tuple(w.shape) != tuple(p.shape):
                raise ValueError(
                    f"Layer '{self.name}' weight shape mismatch for '{p.path}': expected {tuple(p.shape)}, got {tuple(w.shape)}"
                )
            values.append(w)
        for p, w in zip(params, values):
            p.assign(w)

    def count_params(self):
        """The number of scalars in all weights."""
        if not self.built:
            raise ValueError(
                f"You tried to call `count_params` on layer '{self.name}', but the layer isn't built. "
                "Build it first by calling it on an input."
            )
        return int(sum(int(np.prod(v.shape)) for v in self.weights))

    @property
    def losses(self):
        """Weight regularization penalties of this layer and its sub-layers (scalars)."""
        return self._regularization_losses(eager=True)

    def _regularization_losses(self, eager):
        """One penalty per regularized weight; symbolic (graph) unless `eager`."""
        out = []
        for v in self.weights:
            reg = getattr(v, "regularizer", None)
            if reg is not None:
                out.append(reg(v.value if eager else _symbolic.variable_ref(v)))
        return out

    # ------------------------------------------------------------------ masking

    @property
    def supports_masking(self):
        """Whether the layer passes masks on: after each call its outputs get the
        mask `compute_mask` returns. A layer that does not drops its input's mask
        (with a warning)."""
        return self._supports_masking

    @supports_masking.setter
    def supports_masking(self, value):
        self._supports_masking = bool(value)

    def compute_mask(self, inputs, previous_mask):
        """The mask of the outputs: by default the mask of the inputs."""
        return previous_mask

    def _fill_masks(self, inputs, args, kwargs):
        """`kwargs` with the `mask` parameters of `call` that were not given set to
        the masks attached to the inputs (Keras's rules: `mask` takes the mask of
        the only tensor argument; with several tensor arguments, `x_mask` takes the
        mask of argument `x`)."""
        if not self._mask_params:
            return kwargs
        try:
            bound = self._call_signature.bind(inputs, *args, **kwargs)
        except TypeError:
            return kwargs  # the call itself reports the bad arguments
        bound.apply_defaults()
        tensors = {name: v for name, v in bound.arguments.items() if _is_tensor_argument(v)}
        kwargs = dict(kwargs)
        if len(tensors) == 1:
            if "mask" in bound.arguments and bound.arguments["mask"] is None:
                kwargs["mask"] = _nest.map_structure(_symbolic.get_keras_mask, next(iter(tensors.values())))
        else:
            for name, value in tensors.items():
                key = f"{name}_mask"
                if key in bound.arguments and bound.arguments[key] is None:
                    kwargs[key] = _nest.map_structure(_symbolic.get_keras_mask, value)
        return kwargs

    def _set_mask_metadata(self, inputs, outputs, previous_mask):
        """Attaches `compute_mask`'s masks to the outputs that have none (a layer
        that attached its own masks in `call` keeps them)."""
        flat = _nest.flatten(outputs)
        if all(_symbolic.get_keras_mask(t) is not None for t in flat):
            return
        masks = self.compute_mask(inputs, previous_mask)
        if masks is None:
            return
        for t, m in zip(flat, _nest.flatten(masks)):
            if m is not None and _symbolic.get_keras_mask(t) is None:
                _symbolic.set_keras_mask(t, m)

    def _call_with_masks(self, inputs, args, kwargs):
        """Runs `call` with its mask arguments filled in; returns its outputs and
        the mask `compute_mask` starts from (the `mask` given or filled in, else
        that of the first argument)."""
        kwargs = self._fill_masks(inputs, args, kwargs)
        if kwargs.get("mask") is not None:
            previous_mask = kwargs["mask"]
        else:
            previous_mask = _nest.map_structure(_symbolic.get_keras_mask, inputs)
        outputs = self.call(inputs, *args, **kwargs)
        return outputs, previous_mask

    def _finish_masks(self, inputs, outputs, previous_mask):
        """Attaches the output masks, or warns that an input mask is dropped."""
        if self.supports_masking:
            self._set_mask_metadata(inputs, outputs, previous_mask)
        elif any(m is not None for m in _nest.flatten(previous_mask)):
            warnings.warn(
                f"Layer '{self.name}' (of type {type(self).__name__}) was passed an input with a mask attached to it. "
                "However, this layer does not support masking and will therefore destroy the mask information. "
                "Downstream layers will not see the mask."
            )

    # ------------------------------------------------------------------ building

    def build(self, input_shape):
        """Creates the weights for inputs of `input_shape`; called once, before the first call."""
        self.built = True

    def _maybe_build(self, inputs):
        if self.built:
            return
        shapes = _nest.map_structure(_shape_of, inputs)
        self.build(shapes)
        self.built = True

    def call(self, inputs, *args, **kwargs):
        """The layer's computation, written with `pyfuncnet.ops`."""
        return inputs

    def compute_output_shape(self, input_shape):
        """The output shape for `input_shape`, found by running `call` symbolically."""
        if isinstance(input_shape, dict):
            tensors = {k: KerasTensor(tuple(s)) for k, s in input_shape.items()}
        elif input_shape and all(isinstance(s, (list, tuple)) for s in input_shape):
            tensors = [KerasTensor(tuple(s)) for s in input_shape]
        else:
            tensors = KerasTensor(tuple(input_shape))
        self._maybe_build(tensors)
        return _nest.map_structure(lambda t: t.shape, self.call(tensors))

    def compute_output_spec(self, *args, **kwargs):
        return self(*args, **kwargs)

    # ------------------------------------------------------------------ calling

    def __call__(self, *args, **kwargs):
        if args:
            inputs, args = args[0], args[1:]
        elif "inputs" in kwargs:
            inputs = kwargs.pop("inputs")
        else:
            raise TypeError(f"Layer '{self.name}' was called without inputs")
        if not self._call_has_training:
            kwargs.pop("training", None)
        if not self._call_has_mask:
            kwargs.pop("mask", None)
        flat = _nest.flatten([inputs, list(args), kwargs])
        if any(isinstance(t, KerasTensor) for t in flat):
            return self._symbolic_call(inputs, args, kwargs)
        inputs = _nest.map_structure(_keep_mask(_as_eager_input), inputs)
        self._check_inputs(inputs)
        with _InScope(self):
            try:
                self._maybe_build(inputs)
                outputs, previous_mask = self._call_with_masks(inputs, args, kwargs)
                self._finish_masks(inputs, outputs, previous_mask)
                return outputs
            except (ValueError, TypeError, IndexError) as e:
                raise _with_layer(e, self, inputs) from None

    def _check_inputs(self, inputs):
        specs = self.input_spec
        if specs is None:
            return
        specs = specs if isinstance(specs, (list, tuple)) else [specs]
        flat = _nest.flatten(inputs)
        for k, (spec, x) in enumerate(zip(specs, flat)):
            if spec is not None:
                spec.check(self, k, _shape_of(x))

    def _symbolic_call(self, inputs, args, kwargs):
        flat_in = [t for t in _nest.flatten(inputs) if not isinstance(t, KerasTensor)]
        if flat_in:
            inputs = _nest.map_structure(
                _keep_mask(lambda t: t if isinstance(t, KerasTensor) else _symbolic.symbolic(_as_eager_input(t))), inputs
            )
        self._check_inputs(inputs)
        _activity_stack.append([])
        with _symbolic.label_scope(self.name), _InScope(self), _symbolic.update_scope(self) as updates:
            try:
                self._maybe_build(inputs)
                outputs, previous_mask = self._call_with_masks(inputs, args, kwargs)
            except (ValueError, TypeError, IndexError) as e:
                raise _with_layer(e, self, inputs) from None
            finally:
                inner_losses = _activity_stack.pop()
            originals = {id(t) for t in _nest.flatten([inputs, list(args), kwargs]) if isinstance(t, KerasTensor)}

            def fresh(t):
                # A tensor returned twice (an RNN's last output and its final
                # state) gets a copy the second time: each output is a tensor of
                # its own, with its own place in the layer's history.
                new = _fresh(t, originals, self.name)
                if isinstance(t, KerasTensor):
                    originals.add(id(t))
                return new

            outputs = _nest.map_structure(fresh, outputs)
            try:
                self._finish_masks(inputs, outputs, previous_mask)
            except (ValueError, TypeError, IndexError) as e:
                raise _with_layer(e, self, inputs) from None
        if _expanding[0]:
            return outputs
        # The node keeps the arguments as given: a replay fills in the masks again.
        node = Node(self, (inputs, tuple(args), dict(kwargs)), outputs)
        # Updates of the layers called inside come along, as activity losses do.
        node.state_updates = updates
        # A node's activity losses include those of the layers called inside it, so a
        # model used as a layer carries its inner layers' penalties.
        node.activity_losses = inner_losses
        if self.activity_regularizer is not None:
            with _symbolic.label_scope(self.name):
                for out in node.output_tensors:
                    node.activity_losses.append(_per_sample(self.activity_regularizer, out))
        if _activity_stack:
            _activity_stack[-1].extend(node.activity_losses)
        return outputs

    # ------------------------------------------------------------------ node API

    def _node_attr(self, what, index=None):
        nodes = self._inbound_nodes
        if not nodes:
            raise AttributeError(
                f"Layer '{self.name}' has never been called and thus has no defined {what}."
            )
        if index is None:
            if len(nodes) > 1:
                raise AttributeError(
                    f"Layer '{self.name}' has multiple inbound nodes, hence the notion of \"layer {what}\" "
                    f"is ill-defined. Use `get_{what}_at(node_index)` instead."
                )
            index = 0
        if not 0 <= index < len(nodes):
            raise ValueError(f"Asked to get {what} at node {index}, but layer '{self.name}' has only {len(nodes)} inbound nodes.")
        node = nodes[index]
        if what in ("input", "input_shape"):
            tensors = node.input_tensors if node.input_tensors else node.output_tensors
            value = tensors[0] if len(tensors) == 1 else list(tensors)
        else:
            value = node.outputs
        if what.endswith("_shape"):
            return _nest.map_structure(lambda t: t.shape, value)
        return value

    @property
    def input(self):
        return self._node_attr("input")

    @property
    def output(self):
        return self._node_attr("output")

    @property
    def input_shape(self):
        return self._node_attr("input_shape")

    @property
    def output_shape(self):
        return self._node_attr("output_shape")

    def get_input_at(self, node_index):
        return self._node_attr("input", node_index)

    def get_output_at(self, node_index):
        return self._node_attr("output", node_index)

    def get_input_shape_at(self, node_index):
        return self._node_attr("input_shape", node_index)

    def get_output_shape_at(self, node_index):
        return self._node_attr("output_shape", node_index)

    # ------------------------------------------------------------------ config

    def get_config(self):
        """The constructor arguments that recreate this layer (without weights)."""
        config = {"name": self.name, "trainable": self.trainable, "dtype": self.dtype}
        if self._batch_input_shape is not None:
            config["batch_input_shape"] = self._batch_input_shape
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        return f"<{type(self).__name__} name={self.name}, built={self.built}>"


def _fresh(t, originals, label):
    """A layer's output as a new tensor: a layer that returns one of its inputs
    (or a tensor made elsewhere) still gets an output of its own."""
    if not isinstance(t, KerasTensor):
        return t
    if id(t) in originals or hasattr(t, "_keras_history") or t._node is None:
        new = _symbolic.apply("reshape", lambda shapes: {"shape": list(shapes[0])}, [t], label)[0]
        # The same value, so the same mask (in Keras it is the very tensor).
        _symbolic.set_keras_mask(new, _symbolic.get_keras_mask(t))
        return new
    return t


def _keep_mask(convert):
    """`convert` for one input, keeping the mask attached to it (as Keras does
    when it converts call arguments)."""

    def run(x):
        y = convert(x)
        if y is not x:
            mask = _symbolic.get_keras_mask(x)
            if mask is not None:
                _symbolic.set_keras_mask(y, mask)
        return y

    return run


def _is_tensor_argument(value):
    """Whether a call argument is a tensor, or a non-empty structure of tensors
    (and Nones), as Keras counts tensor arguments to fill in masks."""
    if _is_tensor(value):
        return True
    if _nest.is_nested(value) and len(value) > 0:
        return all(v is None or _is_tensor(v) for v in _nest.flatten(value))
    return False


def _is_tensor(x):
    return isinstance(x, (KerasTensor, np.ndarray, Variable))


def _per_sample(regularizer, output):
    """`regularizer(output)` divided by the batch size (Keras's activity regularization)."""
    from pyfuncnet import ops

    penalty = regularizer(output)
    if output.ndim == 0:
        return penalty
    first = output[(slice(None),) + (0,) * (output.ndim - 1)]
    batch = ops.sum(ops.add(ops.multiply(first, 0.0), 1.0))
    return ops.divide(penalty, batch)


def _with_layer(error, layer, inputs):
    """`error` with the layer and its input shapes named, same exception type."""
    shapes = _nest.map_structure(lambda t: getattr(t, "shape", None), inputs)
    message = f'Exception encountered when calling {type(layer).__name__}.call() (layer "{layer.name}", input shape {shapes}): {error}'
    try:
        return type(error)(message)
    except TypeError:
        return ValueError(message)
