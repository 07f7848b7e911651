"""Recurrent layers: LSTM, GRU, SimpleRNN, their cells, and the generic RNN.

A recurrent layer over a built-in cell runs as two ops: the input projection of
every time step (one matmul, so `dx` and the kernel's gradient are single GEMMs)
and the core's `rnn` op, which runs the recurrence with one GEMM and one fused
gate kernel per step and has a fused backward through time. Weights live on the
cell, as in Keras 3 (`lstm/lstm_cell/kernel`, ...): kernel `(input_dim, k * units)`,
recurrent_kernel `(units, k * units)`, bias; gates in Keras's order (LSTM i, f,
c, o; GRU z, r, h).

Masks follow Keras 3 (JAX backend): a masked step keeps the state, and its output
is that state.
"""

import numpy as np

from pyfuncnet import _nest, activations, constraints, initializers, ops, regularizers
from pyfuncnet.layers import layer as _layer_module
from pyfuncnet.layers.core import Dropout, _positive_int
from pyfuncnet.layers.layer import InputSpec, Layer, to_snake_case


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
        if self.recurrent_dropout:
            raise NotImplementedError(f"{type(self).__name__} '{self.name}': `recurrent_dropout` is not supported yet (dropout on the inputs is)")
        self.seed = seed
        # Keras's cell dropout: one mask per sample and feature, the same at every
        # step. Named, so it takes no number from the default names of the user's
        # own Dropout layers.
        self._dropout_layer = None
        if self.dropout:
            self._dropout_layer = Dropout(self.dropout, noise_shape=(None, 1, None), seed=seed, name=f"{self.name}_dropout")

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
        list of states, through the same fused op as the whole layer."""
        states = list(states) if isinstance(states, (list, tuple)) else [states]
        x = ops.expand_dims(inputs, 1)
        outputs, new_states = _run_fused(self, x, None, states, False, False, training)
        return ops.squeeze(outputs, 1), new_states

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

    def get_config(self):
        config = super().get_config()
        del config["recurrent_activation"]
        return config


def _run_fused(cell, x, mask, initial_state, go_backwards, zero_output_for_mask, training):
    """The whole sequence through `cell`: `(outputs (batch, time, units), states)`."""
    x = ops._float(x)
    if cell._dropout_layer is not None and training is not False:
        x = cell._dropout_layer(x, training=training)
    if not cell.built:
        cell._maybe_build(x)
    xp = ops.matmul(x, cell.kernel)
    bias = cell._input_bias()
    if bias is not None:
        xp = ops.add(xp, bias)
    attrs = dict(cell._rnn_attrs(), go_backwards=bool(go_backwards), zero_output_for_mask=bool(zero_output_for_mask))
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


class RNN(Layer):
    """A recurrent layer over a cell.

    Built-in cells (LSTMCell, GRUCell, SimpleRNNCell) run as one fused op over the
    whole sequence.

    Args:
        cell: the cell.
        return_sequences: output every step `(batch, time, units)`, not only the last.
        return_state: also return the final states.
        go_backwards: read the sequence from the end (outputs stay in that order).
        stateful: accepted as False only (stateful layers are not supported yet).
        unroll: accepted for Keras compatibility (the fused op is used either way).
        zero_output_for_mask: output 0 at masked steps instead of the kept state.
    """

    def __init__(self, cell, return_sequences=False, return_state=False, go_backwards=False, stateful=False, unroll=False, zero_output_for_mask=False, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(cell, _FusedCell):
            raise NotImplementedError(f"RNN '{self.name}': only LSTMCell, GRUCell and SimpleRNNCell are supported as cells so far, got {type(cell).__name__}")
        self.cell = cell
        self.return_sequences = bool(return_sequences)
        self.return_state = bool(return_state)
        self.go_backwards = bool(go_backwards)
        self.stateful = bool(stateful)
        self.unroll = bool(unroll)
        self.zero_output_for_mask = bool(zero_output_for_mask)
        if self.stateful:
            raise NotImplementedError(f"{type(self).__name__} '{self.name}': stateful recurrent layers are not supported yet")
        self.supports_masking = True
        self.input_spec = InputSpec(ndim=3)

    def build(self, input_shape):
        if not self.cell.built:
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
        self.built = True

    def call(self, sequences, initial_state=None, mask=None, training=None):
        where = f"{type(self).__name__} '{self.name}'"
        if initial_state is not None:
            initial_state = list(initial_state) if isinstance(initial_state, (list, tuple)) else [initial_state]
            expected = len(_nest.flatten(self.cell.state_size))
            if len(initial_state) != expected:
                raise ValueError(f"{where}: `initial_state` must be a list of {expected} tensor(s) of shape (batch, {self.cell.units}), got {len(initial_state)}")
            initial_state = [ops._float(s) for s in initial_state]
        if isinstance(mask, (list, tuple)):
            mask = mask[0]
        outputs, states = _run_fused(self.cell, sequences, mask, initial_state, self.go_backwards, self.zero_output_for_mask, training)
        output = outputs if self.return_sequences else ops._getitem(outputs, (slice(None), -1))
        if self.return_state:
            return [output] + states
        return output

    def compute_mask(self, inputs, mask=None):
        if isinstance(mask, (list, tuple)):
            mask = mask[0]
        output_mask = mask if self.return_sequences else None
        if self.return_state:
            return [output_mask] + [None] * len(_nest.flatten(self.cell.state_size))
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
    def from_config(cls, config):
        config = dict(config)
        cell = config.pop("cell")
        if isinstance(cell, dict):
            cells = {c.__name__: c for c in (LSTMCell, GRUCell, SimpleRNNCell)}
            if cell.get("class_name") not in cells:
                raise ValueError(f"RNN.from_config: unknown cell class {cell.get('class_name')!r}")
            cell = cells[cell["class_name"]](**cell["config"])
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
