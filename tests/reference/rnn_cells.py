"""User-written recurrent cells, defined on a given Keras module, so the same code
makes them for real Keras (`import keras`) and for pyfuncnet (`import pyfuncnet as
keras`). Used by make_rnn_cells_reference.py and tests/test_rnn_cells.py.

- `minimal`: the cell of Keras's RNN documentation: `h = x W + h_prev U` (one
  state, linear).
- `two_state`: states of different widths, `[units, 2]`, with an output of its
  own size: `h = tanh(x W + h_prev U + b)`, `m = 0.5 m_prev + sigmoid(h V)`, output
  `h`. Its `output_size` is given.
"""


def cell_classes(keras):
    """The cell classes on `keras`: `{"minimal": MinimalRNNCell, "two_state": TwoStateCell}`."""
    ops = keras.ops

    class MinimalRNNCell(keras.layers.Layer):
        def __init__(self, units, **kwargs):
            super().__init__(**kwargs)
            self.units = units
            self.state_size = units

        def build(self, input_shape):
            self.kernel = self.add_weight(shape=(input_shape[-1], self.units), initializer="uniform", name="kernel")
            self.recurrent_kernel = self.add_weight(shape=(self.units, self.units), initializer="uniform", name="recurrent_kernel")
            self.built = True

        def call(self, inputs, states):
            prev_output = states[0]
            h = ops.matmul(inputs, self.kernel)
            output = h + ops.matmul(prev_output, self.recurrent_kernel)
            return output, [output]

        def get_config(self):
            return {**super().get_config(), "units": self.units}

    class TwoStateCell(keras.layers.Layer):
        def __init__(self, units, **kwargs):
            super().__init__(**kwargs)
            self.units = units
            self.state_size = [units, 2]
            self.output_size = units

        def build(self, input_shape):
            self.kernel = self.add_weight(shape=(input_shape[-1], self.units), name="kernel")
            self.recurrent_kernel = self.add_weight(shape=(self.units, self.units), name="recurrent_kernel")
            self.bias = self.add_weight(shape=(self.units,), initializer="zeros", name="bias")
            self.memory_kernel = self.add_weight(shape=(self.units, 2), name="memory_kernel")
            self.built = True

        def call(self, inputs, states, training=None):
            h_prev, m_prev = states
            h = ops.tanh(ops.matmul(inputs, self.kernel) + ops.matmul(h_prev, self.recurrent_kernel) + self.bias)
            m = 0.5 * m_prev + ops.sigmoid(ops.matmul(h, self.memory_kernel))
            return h, [h, m]

        def get_config(self):
            return {**super().get_config(), "units": self.units}

    return {"minimal": MinimalRNNCell, "two_state": TwoStateCell}


def make_cell(keras, spec):
    """A cell from a JSON-ready spec: `["minimal", units]`, `["two_state", units]`,
    `["LSTMCell", units]` (any built-in cell class with its units), or
    `["stacked", [spec, ...]]`."""
    kind, arg = spec
    if kind == "stacked":
        return keras.layers.StackedRNNCells([make_cell(keras, s) for s in arg])
    classes = cell_classes(keras)
    if kind in classes:
        return classes[kind](arg)
    return getattr(keras.layers, kind)(arg)
