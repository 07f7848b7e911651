"""Recurrent layers: LSTM, GRU, SimpleRNN, their cells, and the generic RNN.

A recurrent layer over a built-in cell runs as two ops: the input projection of
every time step (one matmul, so `dx` and the kernel's gradient are single GEMMs)
and the core's `rnn` op, which runs the recurrence with one GEMM and one fused
gate kernel per step and has a fused backward through time. Weights live on the
cell, as in Keras 3 (`lstm/lstm_cell/kernel`, ...): kernel `(input_dim, k * units)`,
recurrent_kernel `(units, k * units)`, bias; gates in Keras's order (LSTM i, f,
c, o; GRU z, r, h).

Any other cell (user-written, `StackedRNNCells` of mixed cells, or a built-in
cell with `recurrent_dropout` while training) runs step by step as Keras's
recurrence does: eagerly on arrays, and in a model as a node that compiling
unrolls over the sequence length of each program (programs are compiled per
input shape anyway).

Masks follow Keras 3 (JAX backend): a masked step keeps the state, and its output
is the previous output (the first state; the last cell's first state for stacked
cells), or zeros with `zero_output_for_mask`.
"""

import numpy as np

from pyfuncnet import _nest, _symbolic, activations, constraints, initializers, ops, regularizers
from pyfuncnet._symbolic import KerasTensor
from pyfuncnet._variable import Variable
from pyfuncnet.layers import layer as _layer_module
from pyfuncnet.layers.core import Dropout, _positive_int
from pyfuncnet.layers.layer import InputSpec, Layer, next_random_stream, to_snake_case


def _rate(layer, arg, value):
    value = float(value)
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{type(layer).__name__} '{layer.name}': `{arg}` must be in [0, 1), got {value}")
    return value


class _FusedCell(Layer):
    """What LSTMCell, GRUCell and SimpleRNNCell share: the weights and their
    arguments. `_kind` names the core's cell, `_gates` the blocks of the kernels."""

    _kind = None
    _gates = 1

    def __init__(self, units, activation="tanh", recurrent_activation="sigmoid", use_bias=True, kernel_initializer="glorot_uniform", recurrent_initializer="orthogonal", bias_initializer="zeros", kernel_regularizer=None, recurrent_regularizer=None, bias_regularizer=None, kernel_constraint=None, recurrent_constraint=None, bias_constraint=None, dropout=0.0, recurrent_dropout=0.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.units = _positive_int(f"{type(self).__name__} '{self.name}'", "units", units)
        self.activation = activations.get(activation)
        self.recurrent_activation = activations.get(recurrent_activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.recurrent_initializer = initializers.get(recurrent_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.kernel_regularizer = regularizers.get(kernel_regularizer)
        self.recurrent_regularizer = regularizers.get(recurrent_regularizer)
        self.bias_regularizer = regularizers.get(bias_regularizer)
        self.kernel_constraint = constraints.get(kernel_constraint)
        self.recurrent_constraint = constraints.get(recurrent_constraint)
        self.bias_constraint = constraints.get(bias_constraint)
        self.dropout = _rate(self, "dropout", dropout)
        self.recurrent_dropout = _rate(self, "recurrent_dropout", recurrent_dropout)
        self.seed = seed
        # Keras's cell dropout: one mask per sample and feature, the same at every
        # step. Named, so it takes no number from the default names of the user's
        # own Dropout layers.
        self._dropout_layer = None
        if self.dropout:
            self._dropout_layer = Dropout(self.dropout, noise_shape=(None, 1, None), seed=seed, name=f"{self.name}_dropout")
        # With recurrent dropout Keras switches to its per-gate cell: one input mask
        # and one recurrent mask per gate, each from a random stream of its own.
        self._mask_streams = [next_random_stream() for _ in range(2 * self._gates)] if self.recurrent_dropout else []
        self._eager_rng = np.random.default_rng(seed)
        # The dropout masks and weight blocks of the sequence being unrolled (see
        # `_prepare_step`), or None.
        self._step = None

    @property
    def state_size(self):
        return self.units

    @property
    def output_size(self):
        return self.units

    def _bias_shape(self):
        return (self._gates * self.units,)

    def _bias_initializer(self):
        return self.bias_initializer

    def build(self, input_shape):
        input_dim = input_shape[-1]
        if input_dim is None:
            raise ValueError(f"{type(self).__name__} '{self.name}': the last dimension of the input must be known, got shape {tuple(input_shape)}")
        width = self._gates * self.units
        self.kernel = self.add_weight(shape=(input_dim, width), initializer=self.kernel_initializer, regularizer=self.kernel_regularizer, constraint=self.kernel_constraint, name="kernel")
        self.recurrent_kernel = self.add_weight(shape=(self.units, width), initializer=self.recurrent_initializer, regularizer=self.recurrent_regularizer, constraint=self.recurrent_constraint, name="recurrent_kernel")
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(shape=self._bias_shape(), initializer=self._bias_initializer(), regularizer=self.bias_regularizer, constraint=self.bias_constraint, name="bias")
        self.built = True

    # The biases: added to the input projection, and (GRU reset_after) inside the recurrence.
    def _input_bias(self):
        return self.bias

    def _recurrent_bias(self):
        return None

    def _rnn_attrs(self):
        return {
            "cell": self._kind,
            "activation": _activation_name(self, "activation", self.activation),
            "recurrent_activation": _activation_name(self, "recurrent_activation", self.recurrent_activation),
        }

    def call(self, inputs, states, training=None):
        """One step: `(output, new_states)` for inputs `(batch, input_dim)` and the
        list of states, through the same fused op as the whole layer (or, while a
        sequence with dropout masks is unrolled, through Keras's per-step math)."""
        states = list(states) if isinstance(states, (list, tuple)) else [states]
        if self._step is None and training and self.recurrent_dropout:
            # A cell called on its own: masks for this call only.
            self._prepare_step(ops._shape(inputs)[0], isinstance(inputs, KerasTensor), training)
            try:
                return self.call(inputs, states, training)
            finally:
                self._step = None
        if self._step is not None:
            input_masks, recurrent_masks, blocks = self._step
            if recurrent_masks is not None:
                return self._per_gate_step(inputs, states, input_masks, recurrent_masks, blocks)
            inputs = ops.multiply(inputs, input_masks[0])
            training = False
        x = ops.expand_dims(inputs, 1)
        outputs, new_states = _run_fused(self, x, None, states, False, False, training)
        return ops.squeeze(outputs, 1), new_states

    def _prepare_step(self, batch, symbolic, training):
        """Draws the dropout masks a sequence shares over its steps (Keras draws
        them once per call) and slices the per-gate weight blocks once."""
        self._step = None
        if not training or not (self.dropout or self.recurrent_dropout):
            return
        if batch is None:
            raise ValueError(
                f"{type(self).__name__} '{self.name}': dropout masks need a known batch size; "
                "call the cell through an RNN layer (or on tensors with a fixed batch size)"
            )
        input_dim = self.kernel.shape[0]
        if not self.recurrent_dropout:
            self._step = ([self._mask((batch, input_dim), self.dropout, self._dropout_layer._stream, symbolic)], None, None)
            return
        gates = self._gates
        inputs = [self._mask((batch, input_dim), self.dropout, s, symbolic) for s in self._mask_streams[:gates]] if self.dropout else None
        recurrent = [self._mask((batch, self.units), self.recurrent_dropout, s, symbolic) for s in self._mask_streams[gates:]]
        self._step = (inputs, recurrent, self._gate_blocks())

    def _mask(self, shape, rate, stream, symbolic):
        """A dropout mask: 0 or 1 / (1 - rate) per entry."""
        if symbolic:
            attrs = {"rate": rate, "seed": int(self.seed or 0), "stream": stream}
            return _symbolic.apply("dropout", attrs, [np.ones(shape, np.float32)])[0]
        keep = self._eager_rng.random(shape) >= rate
        return keep.astype(np.float32) / np.float32(1.0 - rate)

    def _gate_blocks(self):
        """Per gate: the kernel's and recurrent kernel's columns and the biases."""
        u = self.units

        def columns(w, g):
            return ops._getitem(w, (Ellipsis, slice(g * u, (g + 1) * u)))

        input_bias, recurrent_bias = self._input_bias(), self._recurrent_bias()
        return [
            (
                columns(self.kernel, g),
                columns(self.recurrent_kernel, g),
                None if input_bias is None else columns(input_bias, g),
                None if recurrent_bias is None else columns(recurrent_bias, g),
            )
            for g in range(self._gates)
        ]

    def _gate_inputs(self, inputs, input_masks, blocks):
        """`x_g = (x * input_mask_g) kernel_g + bias_g` for each gate."""
        out = []
        for g, (kernel, _, bias, _) in enumerate(blocks):
            x = inputs if input_masks is None else ops.multiply(inputs, input_masks[g])
            x = ops.matmul(x, kernel)
            out.append(x if bias is None else ops.add(x, bias))
        return out

    def get_config(self):
        config = super().get_config()
        config.update(
            units=self.units,
            activation=activations.serialize(self.activation),
            recurrent_activation=activations.serialize(self.recurrent_activation),
            use_bias=self.use_bias,
            kernel_initializer=initializers.serialize(self.kernel_initializer),
            recurrent_initializer=initializers.serialize(self.recurrent_initializer),
            bias_initializer=initializers.serialize(self.bias_initializer),
            kernel_regularizer=regularizers.serialize(self.kernel_regularizer),
            recurrent_regularizer=regularizers.serialize(self.recurrent_regularizer),
            bias_regularizer=regularizers.serialize(self.bias_regularizer),
            kernel_constraint=constraints.serialize(self.kernel_constraint),
            recurrent_constraint=constraints.serialize(self.recurrent_constraint),
            bias_constraint=constraints.serialize(self.bias_constraint),
            dropout=self.dropout,
            recurrent_dropout=self.recurrent_dropout,
            seed=self.seed,
        )
        return config


def _activation_name(cell, arg, fn):
    name = activations.serialize(fn)
    if not isinstance(name, str):
        raise ValueError(f"{type(cell).__name__} '{cell.name}': `{arg}` must be a built-in activation, got {fn!r}")
    return name


class LSTMCell(_FusedCell):
    """The LSTM cell: gates i, f, c, o; `unit_forget_bias` starts the forget gate's
    bias at 1."""

    _kind = "lstm"
    _gates = 4

    def __init__(self, units, activation="tanh", recurrent_activation="sigmoid", use_bias=True, kernel_initializer="glorot_uniform", recurrent_initializer="orthogonal", bias_initializer="zeros", unit_forget_bias=True, **kwargs):
        super().__init__(units, activation=activation, recurrent_activation=recurrent_activation, use_bias=use_bias, kernel_initializer=kernel_initializer, recurrent_initializer=recurrent_initializer, bias_initializer=bias_initializer, **kwargs)
        self.unit_forget_bias = bool(unit_forget_bias)

    @property
    def state_size(self):
        return [self.units, self.units]

    def _bias_initializer(self):
        if not self.unit_forget_bias:
            return self.bias_initializer
        base, u = self.bias_initializer, self.units

        def forget_bias_one(shape, dtype=None):
            return np.concatenate([np.asarray(base((u,)), np.float32), np.ones(u, np.float32), np.asarray(base((2 * u,)), np.float32)])

        return forget_bias_one

    def _per_gate_step(self, inputs, states, input_masks, recurrent_masks, blocks):
        # Keras's LSTMCell with implementation 1 (what recurrent dropout selects).
        h, c = states
        x = self._gate_inputs(inputs, input_masks, blocks)
        z = [ops.add(x[g], ops.matmul(ops.multiply(h, recurrent_masks[g]), blocks[g][1])) for g in range(4)]
        i, f, o = (self.recurrent_activation(z[g]) for g in (0, 1, 3))
        c = ops.add(ops.multiply(f, c), ops.multiply(i, self.activation(z[2])))
        h = ops.multiply(o, self.activation(c))
        return h, [h, c]

    def get_config(self):
        config = super().get_config()
        config["unit_forget_bias"] = self.unit_forget_bias
        return config


class GRUCell(_FusedCell):
    """The GRU cell: gates z, r, h. With `reset_after` (Keras 3's default) the reset
    gate applies after the recurrent product and the bias is `(2, 3 * units)`: the
    input bias, then the recurrent one."""

    _kind = "gru"
    _gates = 3

    def __init__(self, units, activation="tanh", recurrent_activation="sigmoid", use_bias=True, reset_after=True, **kwargs):
        super().__init__(units, activation=activation, recurrent_activation=recurrent_activation, use_bias=use_bias, **kwargs)
        self.reset_after = bool(reset_after)

    def _bias_shape(self):
        return (2, 3 * self.units) if self.reset_after else (3 * self.units,)

    def _input_bias(self):
        if self.bias is None or not self.reset_after:
            return self.bias
        return ops._getitem(self.bias, 0)

    def _recurrent_bias(self):
        if not self.reset_after:
            return None
        if self.bias is None:
            return np.zeros(3 * self.units, np.float32)
        return ops._getitem(self.bias, 1)

    def _rnn_attrs(self):
        return dict(super()._rnn_attrs(), reset_after=self.reset_after)

    def _per_gate_step(self, inputs, states, input_masks, recurrent_masks, blocks):
        # Keras's GRUCell with implementation 1 (what recurrent dropout selects).
        h = states[0]
        x_z, x_r, x_h = self._gate_inputs(inputs, input_masks, blocks)

        def recurrent(g, h_in):
            out = ops.matmul(h_in, blocks[g][1])
            return out if blocks[g][3] is None else ops.add(out, blocks[g][3])

        z = self.recurrent_activation(ops.add(x_z, recurrent(0, ops.multiply(h, recurrent_masks[0]))))
        r = self.recurrent_activation(ops.add(x_r, recurrent(1, ops.multiply(h, recurrent_masks[1]))))
        h_dropped = ops.multiply(h, recurrent_masks[2])
        if self.reset_after:
            candidate = ops.multiply(r, recurrent(2, h_dropped))
        else:
            candidate = recurrent(2, ops.multiply(r, h_dropped))
        hh = self.activation(ops.add(x_h, candidate))
        h = ops.add(ops.multiply(z, h), ops.multiply(ops.subtract(1.0, z), hh))
        return h, [h]

    def get_config(self):
        config = super().get_config()
        config["reset_after"] = self.reset_after
        return config


class SimpleRNNCell(_FusedCell):
    """The fully connected cell: `h = activation(x W + h U + b)`."""

    _kind = "simple_rnn"
    _gates = 1

    def __init__(self, units, activation="tanh", use_bias=True, **kwargs):
        kwargs.pop("recurrent_activation", None)
        super().__init__(units, activation=activation, use_bias=use_bias, **kwargs)

    def _per_gate_step(self, inputs, states, input_masks, recurrent_masks, blocks):
        (x,) = self._gate_inputs(inputs, input_masks, blocks)
        h = ops.multiply(states[0], recurrent_masks[0])
        h = self.activation(ops.add(x, ops.matmul(h, blocks[0][1])))
        return h, [h]

    def get_config(self):
        config = super().get_config()
        del config["recurrent_activation"]
        return config


def _run_fused(cell, x, mask, initial_state, go_backwards, zero_output_for_mask, training, sequence=True):
    """The whole sequence through `cell`: `(outputs (batch, time, units), states)`;
    without `sequence` the outputs are left out (`(batch, 0, units)`), for a caller
    that reads only the final states."""
    x = ops._float(x)
    if cell._dropout_layer is not None and training is not False:
        x = cell._dropout_layer(x, training=training)
    if not cell.built:
        cell._maybe_build(x)
    xp = ops.matmul(x, cell.kernel)
    bias = cell._input_bias()
    if bias is not None:
        xp = ops.add(xp, bias)
    attrs = dict(cell._rnn_attrs(), go_backwards=bool(go_backwards), zero_output_for_mask=bool(zero_output_for_mask), sequence=bool(sequence))
    inputs = [xp, cell.recurrent_kernel]
    rec_bias = cell._recurrent_bias()
    if rec_bias is not None:
        inputs.append(rec_bias)
    lstm = isinstance(cell, LSTMCell)
    if initial_state is not None:
        inputs.extend(initial_state)
    attrs["initial_state"] = initial_state is not None
    if mask is not None:
        inputs.append(mask if ops._dtype_of(mask) == "bool" else ops.cast(mask, "bool"))
        attrs["masked"] = True
    outs = ops._run("rnn", attrs, inputs)
    states = list(outs[1:3] if lstm else outs[1:2])
    return outs[0], states


def _state_list(size):
    return list(size) if isinstance(size, (list, tuple)) else [size]


def _state_structure(cell):
    """The states as `cell.call` takes them: a list, or per stacked cell a list."""
    if isinstance(cell, StackedRNNCells):
        return [_state_structure(c) for c in cell.cells]
    return _state_list(cell.state_size)


def _returned_states(cell):
    """The structure `return_state` gives the states in, as Keras's: a list; for
    stacked cells one entry per cell, a list unless the cell's state is a single
    tensor it made no list of (a user-written cell with an int `state_size`)."""
    if not isinstance(cell, StackedRNNCells):
        return _state_list(cell.state_size)

    def entry(c):
        if isinstance(c, StackedRNNCells):
            return c.state_size
        if isinstance(c, _FusedCell) or isinstance(c.state_size, (list, tuple)):
            return _state_list(c.state_size)
        return 0  # one bare tensor

    return [entry(c) for c in cell.cells]


def _output_size(cell):
    size = getattr(cell, "output_size", None)
    return size if size is not None else _state_list(cell.state_size)[0]


def _call_cell(cell, inputs, states, training):
    """One step of `cell` as Keras's RNN makes it: `(output, new states as a flat list)`."""
    if isinstance(cell, Layer):
        output, new_states = cell(inputs, states, training=training)
    else:
        output, new_states = cell.call(inputs, states)
    return output, _nest.flatten(new_states)


def _fused_cells(cell):
    """The cells of `cell` when all are built-in (fusable), else None."""
    cells = cell.cells if isinstance(cell, StackedRNNCells) else [cell]
    return cells if all(isinstance(c, _FusedCell) for c in cells) else None


def _each_cell(cell):
    if isinstance(cell, StackedRNNCells):
        for c in cell.cells:
            yield from _each_cell(c)
    else:
        yield cell


class StackedRNNCells(Layer):
    """Cells stacked into one: each step runs them in order, each cell's output the
    next one's input; the states are the cells' states in a list per cell.

    Args:
        cells: the cells (each with `call(inputs, states)` and `state_size`).

    Example:
        >>> cells = [LSTMCell(32), LSTMCell(16)]
        >>> y = RNN(StackedRNNCells(cells))(Input(shape=(None, 8)))  # (None, 16)
    """

    def __init__(self, cells, **kwargs):
        super().__init__(**kwargs)
        for cell in cells:
            if "call" not in dir(cell):
                raise ValueError(f"All cells must have a `call` method. Received cell without a `call` method: {cell}")
            if "state_size" not in dir(cell):
                raise ValueError(f"All cells must have a `state_size` attribute. Received cell without a `state_size`: {cell}")
        self.cells = list(cells)

    @property
    def state_size(self):
        return [c.state_size for c in self.cells]

    @property
    def output_size(self):
        return _output_size(self.cells[-1])

    def build(self, input_shape):
        batch = input_shape[0]
        for cell in self.cells:
            if isinstance(cell, Layer) and not cell.built:
                # Keras's paths: "rnn/stacked_rnn_cells/lstm_cell/kernel".
                _layer_module._scope.append(cell)
                try:
                    cell.build(tuple(input_shape))
                    cell.built = True
                finally:
                    _layer_module._scope.pop()
            input_shape = (batch, _output_size(cell))
        self.built = True

    def call(self, inputs, states, training=None):
        new_states = []
        for cell, cell_states in zip(self.cells, states):
            as_list = isinstance(cell_states, (list, tuple))
            inputs, out = _call_cell(cell, inputs, list(cell_states) if as_list else [cell_states], training)
            new_states.append(out if as_list or len(out) != 1 else out[0])
        return inputs, new_states

    def get_config(self):
        config = super().get_config()
        config["cells"] = [{"class_name": type(c).__name__, "config": c.get_config()} for c in self.cells]
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        cells = [_cell_from_config(c, custom_objects) for c in config.pop("cells")]
        return cls(cells, **config)


def _cell_from_config(config, custom_objects=None):
    """A cell from its `{"class_name", "config"}`: a pyfuncnet layer or a class named
    in `custom_objects` (nothing is imported or run from the config itself)."""
    from pyfuncnet.layers.wrappers import _deserialize_layer

    return _deserialize_layer(config, custom_objects, "cell")


def copy_cell(cell):
    """A fresh cell with `cell`'s config (no weights), as Keras's serialize /
    deserialize round trip makes for Bidirectional."""
    if isinstance(cell, StackedRNNCells):
        config = cell.get_config()
        config.pop("cells")
        return StackedRNNCells([copy_cell(c) for c in cell.cells], **config)
    return type(cell).from_config(cell.get_config())


class RNN(Layer):
    """A recurrent layer over a cell.

    Built-in cells (LSTMCell, GRUCell, SimpleRNNCell, and stacks of them read
    forward) run as one fused op per cell over the whole sequence; other cells run
    step by step (see the module's doc).

    Args:
        cell: the cell: an object with `call(inputs, states)` returning
            `(output, new_states)` and `state_size` (an int or a list of ints), and
            optionally `output_size`; or a list of cells (stacked).
        return_sequences: output every step `(batch, time, units)`, not only the last.
        return_state: also return the final states.
        go_backwards: read the sequence from the end (outputs stay in that order).
        stateful: keep the final states of each batch as the initial states of the
            next (sample i continues sample i); needs a fixed batch size.
            `reset_states()` sets them to zero.
        unroll: accepted for Keras compatibility (the same computation either way).
        zero_output_for_mask: output 0 at masked steps instead of the kept state.

    Example:
        >>> y = RNN(LSTMCell(32), return_sequences=True)(Input(shape=(None, 8)))
    """

    def __init__(self, cell, return_sequences=False, return_state=False, go_backwards=False, stateful=False, unroll=False, zero_output_for_mask=False, **kwargs):
        super().__init__(**kwargs)
        if isinstance(cell, (list, tuple)):
            cell = StackedRNNCells(cell)
        if "call" not in dir(cell):
            raise ValueError(f"Argument `cell` should have a `call` method. Received: cell={cell}")
        size = getattr(cell, "state_size", None)
        if size is None:
            raise ValueError("state_size must be specified as property on the RNN cell.")
        flat = _nest.flatten(size)
        if not flat or not all(isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d > 0 for d in flat):
            raise ValueError(f"RNN '{self.name}': the cell's `state_size` must be a positive integer or a list of them, got {size!r}")
        self.cell = cell
        self.return_sequences = bool(return_sequences)
        self.return_state = bool(return_state)
        self.go_backwards = bool(go_backwards)
        self.stateful = bool(stateful)
        self.unroll = bool(unroll)
        self.zero_output_for_mask = bool(zero_output_for_mask)
        self.states = None
        self.supports_masking = True
        self.input_spec = InputSpec(ndim=3)

    @property
    def state_size(self):
        return _state_list(self.cell.state_size)

    def _state_sizes(self):
        return [int(d) for d in _nest.flatten(self.cell.state_size)]

    def build(self, input_shape):
        if not getattr(self.cell, "built", True):
            # The cell's weights get Keras's paths ("lstm/lstm_cell/kernel") also
            # when `build` is called directly rather than by a call.
            outer = [] if _layer_module._scope and _layer_module._scope[-1] is self else [self]
            for layer in outer + [self.cell]:
                _layer_module._scope.append(layer)
            try:
                self.cell.build((input_shape[0], input_shape[-1]))
                self.cell.built = True
            finally:
                del _layer_module._scope[-1 - len(outer):]
        if self.stateful:
            if self.states is not None:
                self.reset_states()
            else:
                batch = input_shape[0]
                if batch is None:
                    raise ValueError(f"When using `stateful=True` in a RNN, the batch size must be static. Found dynamic batch size: sequence.shape={tuple(input_shape)}")
                # Not weights: Keras keeps them out of `weights` and saved files.
                self.states = []
                for size in self._state_sizes():
                    state = Variable(np.zeros((batch, size), np.float32), trainable=False, name="rnn_state")
                    state.path = f"{self.name}/rnn_state"
                    state._rnn_state = True  # every compiled step carries it (see the trainer)
                    self.states.append(state)
        self.built = True

    def reset_states(self):
        """Sets the states of a stateful layer to zero."""
        for state in self.states or []:
            state.assign(np.zeros(state.shape, np.float32))

    reset_state = reset_states

    def call(self, sequences, initial_state=None, mask=None, training=None):
        where = f"{type(self).__name__} '{self.name}'"
        sizes = self._state_sizes()
        if initial_state is not None:
            initial_state = _nest.flatten(initial_state)
            if len(initial_state) != len(sizes):
                raise ValueError(f"{where}: `initial_state` must be a list of {len(sizes)} tensor(s) of shapes {[(None, d) for d in sizes]}, got {len(initial_state)}")
            initial_state = [ops._float(s) for s in initial_state]
        elif self.stateful:
            batch = ops._shape(sequences)[0]
            expected = self.states[0].shape[0]
            if batch is not None and batch != expected:
                raise ValueError(
                    f"If an RNN is stateful, the batch size of the input sequences must be the same as the batch size of the initial state. \n"
                    f"- Expected batch size: {expected}\n- Received batch size: {batch}"
                )
            initial_state = list(self.states) if isinstance(sequences, KerasTensor) else [s.value for s in self.states]
        if isinstance(mask, (list, tuple)):
            mask = mask[0]
        if mask is not None and ops._dtype_of(mask) != "bool":
            mask = ops.cast(mask, "bool")
        if not isinstance(sequences, KerasTensor):
            output, states = self._sequence(sequences, initial_state, mask, bool(training))
        elif self._fuses(training) and not (self.stateful and sequences.shape[0] is None):
            # `training` None: the graph's dropout ops act in training steps only.
            # (A stateful layer traced with an unknown batch size, as in a
            # subclassed model, is expanded once its states' batch size is known.)
            output, states = self._sequence(sequences, initial_state, mask, training)
        else:
            output, states = self._expandable(sequences, initial_state, mask, training)
        if self.stateful:
            for variable, state in zip(self.states, states):
                variable.assign(state)
        if self.return_state:
            return [output] + _nest.pack_like(_returned_states(self.cell), states)
        return output

    def _fuses(self, training):
        """Whether the sequence runs as fused ops: built-in cells read forward (a
        single cell may read backward) and no recurrent dropout while training
        (`training` None: maybe)."""
        cells = _fused_cells(self.cell)
        if cells is None or isinstance(self.cell, StackedRNNCells) and self.go_backwards:
            return False
        return training is False or not any(c.recurrent_dropout for c in cells)

    def _sequence(self, sequences, initial_state, mask, training):
        """`(output, final states)`: fused when it can, else step by step."""
        if not self._fuses(training):
            return self._unroll(sequences, initial_state, mask, training)
        cells = _fused_cells(self.cell)
        if initial_state is None:
            per_cell = [None] * len(cells)
        else:
            per_cell, k = [], 0
            for cell in cells:
                n = len(_state_list(cell.state_size))
                per_cell.append(initial_state[k : k + n])
                k += n
        x, states = sequences, []
        for n, (cell, cell_states) in enumerate(zip(cells, per_cell)):
            last = n == len(cells) - 1
            sequence = not last or self.return_sequences or (mask is not None and self.zero_output_for_mask)
            x, new = _run_fused(cell, x, mask, cell_states, self.go_backwards, last and self.zero_output_for_mask, training, sequence)
            states += new
        if self.return_sequences:
            return x, states
        if mask is None or not self.zero_output_for_mask:
            # The last output is the final state (a row masked at the last step
            # repeats its state there): the last cell left its sequence out.
            return new[0], states
        return ops._getitem(x, (slice(None), -1)), states

    def _unroll(self, sequences, initial_state, mask, training):
        """Keras's recurrence (JAX backend) one step at a time, on arrays or on
        symbolic tensors of concrete shapes."""
        where = f"{type(self).__name__} '{self.name}'"
        shape = ops._shape(sequences)
        batch, steps = shape[0], shape[1]
        if not steps:
            raise ValueError(f"{where}: the sequences must have at least one time step, got shape {shape}")
        sizes = self._state_sizes()
        states = list(initial_state) if initial_state is not None else self._initial_states(batch, sizes)
        structure = _state_structure(self.cell)
        # The previous output a masked step repeats: the first state, or the last
        # stacked cell's first state.
        previous_index = 0
        if isinstance(self.cell, StackedRNNCells):
            previous_index = len(sizes) - len(_nest.flatten(self.cell.cells[-1].state_size))
        symbolic = isinstance(sequences, KerasTensor)
        for cell in _each_cell(self.cell):
            if isinstance(cell, _FusedCell):
                cell._prepare_step(batch, symbolic, training)
        outputs = []
        try:
            for k in range(steps):
                t = steps - 1 - k if self.go_backwards else k
                x_t = ops._getitem(sequences, (slice(None), t))
                output, new = _call_cell(self.cell, x_t, _nest.pack_like(structure, states), training)
                if len(new) != len(states):
                    raise ValueError(f"{where}: the cell returned {len(new)} state(s), expected {len(states)} (its `state_size` is {self.cell.state_size!r})")
                if mask is not None:
                    keep = ops._getitem(mask, (slice(None), slice(t, t + 1)))
                    previous = 0.0 if self.zero_output_for_mask else states[previous_index]
                    output = ops.where(keep, output, previous)
                    new = [ops.where(keep, n, s) for n, s in zip(new, states)]
                states = new
                outputs.append(output)
        finally:
            for cell in _each_cell(self.cell):
                if isinstance(cell, _FusedCell):
                    cell._step = None
        output = ops.stack(outputs, axis=1) if self.return_sequences else outputs[-1]
        return output, states

    def _initial_states(self, batch, sizes):
        make = getattr(self.cell, "get_initial_state", None)
        if make is not None and not isinstance(self.cell, (_FusedCell, StackedRNNCells)):
            return [ops._float(s) for s in _nest.flatten(make(batch_size=batch))]
        return [np.zeros((batch, d), np.float32) for d in sizes]

    def _expandable(self, sequences, initial_state, mask, training):
        """A graph node that compiling unrolls over each program's sequence length."""
        inputs = [sequences] + list(initial_state or []) + ([mask] if mask is not None else [])
        n_states = len(self._state_sizes())
        has_state = initial_state is not None

        def split(tensors):
            states = tensors[1 : 1 + n_states] if has_state else None
            masks = tensors[1 + n_states if has_state else 1 :]
            return tensors[0], states, masks[0] if masks else None

        def expand(tensors, spec_training):
            seq, states, m = split(tensors)
            effective = spec_training if training is None else bool(training)
            with _layer_module.expanding(), _symbolic.update_scope(self) as updates, _symbolic.label_scope(self.name):
                output, final = self._sequence(seq, states, m, effective)
                self._refuse_updates(updates)
            return [output] + list(final)

        # The outputs' types: the same computation on one step (states given, so
        # none is made for an unknown batch size; no dropout masks either).
        shape = sequences.shape
        with _layer_module.expanding(), _symbolic.update_scope(self) as updates:
            output, final = self._sequence(
                KerasTensor((shape[0], 1) + tuple(shape[2:]), sequences.dtype),
                [KerasTensor((shape[0], d), "float32") for d in self._state_sizes()],
                None if mask is None else KerasTensor((shape[0], 1), "bool"),
                False,
            )
            self._refuse_updates(updates)
        output_shape = output.shape if not self.return_sequences else (output.shape[0], shape[1]) + tuple(output.shape[2:])
        types = [(output_shape, output.dtype)] + [(s.shape, s.dtype) for s in final]
        outs = _symbolic.expandable("rnn_steps", expand, inputs, types)
        return outs[0], outs[1:]

    def _refuse_updates(self, updates):
        """Raises for variable assignments made by the cell's steps (raising inside
        the update scope keeps them out of the model's updates)."""
        if updates:
            names = ", ".join(sorted({v.path for v, _, _ in updates}))
            raise NotImplementedError(f"{type(self).__name__} '{self.name}': its cell assigns variables at each step ({names}); state updates inside a recurrent cell are not supported")

    def compute_mask(self, inputs, mask=None):
        if isinstance(mask, (list, tuple)):
            mask = mask[0]
        output_mask = mask if self.return_sequences else None
        if self.return_state:
            return [output_mask] + [None] * len(self.state_size)
        return output_mask

    def get_config(self):
        config = super().get_config()
        config.update(
            return_sequences=self.return_sequences,
            return_state=self.return_state,
            go_backwards=self.go_backwards,
            stateful=self.stateful,
            unroll=self.unroll,
            zero_output_for_mask=self.zero_output_for_mask,
            cell={"class_name": type(self.cell).__name__, "config": self.cell.get_config()},
        )
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        cell = config.pop("cell")
        if isinstance(cell, dict):
            cell = _cell_from_config(cell, custom_objects)
        config.pop("batch_input_shape", None)
        return cls(cell, **config)


class _CellLayer(RNN):
    """LSTM, GRU and SimpleRNN: an RNN that builds its own cell from its arguments
    and reports them as its own (Keras's layer configs are flat)."""

    _cell_class = None

    def __init__(self, units, return_sequences=False, return_state=False, go_backwards=False, stateful=False, unroll=False, zero_output_for_mask=False, use_cudnn="auto", activity_regularizer=None, name=None, trainable=True, dtype=None, **cell_kwargs):
        # Keras names every such cell after its class alone ("lstm_cell").
        cell = self._cell_class(units, name=to_snake_case(self._cell_class.__name__), dtype=dtype, trainable=trainable, **cell_kwargs)
        super().__init__(cell, return_sequences=return_sequences, return_state=return_state, go_backwards=go_backwards, stateful=stateful, unroll=unroll, zero_output_for_mask=zero_output_for_mask, activity_regularizer=activity_regularizer, name=name, trainable=trainable, dtype=dtype)

    def __getattr__(self, name):
        # Keras exposes the cell's arguments and weights on the layer (`lstm.units`,
        # `lstm.kernel`); only reached for names the layer itself lacks.
        cell = self.__dict__.get("cell")
        if cell is None or name.startswith("_"):
            raise AttributeError(name)
        return getattr(cell, name)

    def get_config(self):
        config = super().get_config()
        del config["cell"]
        cell_config = self.cell.get_config()
        for key in ("name", "trainable", "dtype"):
            cell_config.pop(key, None)
        config.update(cell_config)
        config["activity_regularizer"] = regularizers.serialize(self.activity_regularizer)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config.pop("batch_input_shape", None)
        return cls(**config)


class LSTM(_CellLayer):
    """Long short-term memory (Hochreiter & Schmidhuber 1997), Keras 3's arguments.

    Example:
        >>> x = LSTM(32)(Embedding(10000, 64)(Input(shape=(None,), dtype="int32")))
    """

    _cell_class = LSTMCell


class GRU(_CellLayer):
    """Gated recurrent unit (Cho et al. 2014), Keras 3's arguments (`reset_after=True`
    by default)."""

    _cell_class = GRUCell


class SimpleRNN(_CellLayer):
    """The fully connected recurrent layer `h = activation(x W + h U + b)`."""

    _cell_class = SimpleRNNCell

    def get_config(self):
        # Keras's SimpleRNN takes a seed but leaves it out of its config.
        config = super().get_config()
        del config["seed"]
        return config
