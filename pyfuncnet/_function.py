"""Compiling symbolic graphs: from `KerasTensor` outputs to the core's graph spec.

`Function(inputs, outputs)` is the compiled counterpart of eager ops: called on
arrays, it flattens the graph once per input signature into a spec (ordered nodes,
concrete shapes, constants and weight references), compiles it in the core and
runs it with one Rust call.
"""

import json

import numpy as np

from pyfuncnet import _core
from pyfuncnet._symbolic import KerasTensor, symbolic
from pyfuncnet._variable import store


def topological_nodes(outputs, stop=()):
    """The op nodes the outputs depend on, each after its inputs; the walk does not
    go past the tensors in `stop` (a model's inputs, which may be intermediate
    tensors of a larger graph)."""
    stop_ids = {id(t) for t in stop}
    order, seen = [], set()
    stack = [(t, False) for t in outputs]
    while stack:
        tensor, expanded = stack.pop()
        node = tensor._node
        if node is None or id(tensor) in stop_ids or id(node) in seen and not expanded:
            continue
        if expanded:
            if id(node) not in seen:
                seen.add(id(node))
                order.append(node)
            continue
        stack.append((tensor, True))
        for inp in node.inputs:
            if inp._node is not None and id(inp._node) not in seen and id(inp) not in stop_ids:
                stack.append((inp, False))
    return order


class GraphSpec:
    """The spec of a symbolic graph for concrete input shapes.

    Args:
        inputs: placeholder KerasTensors, fed in this order.
        outputs: KerasTensors to compute.
        input_shapes: the concrete shape of each input.
        loss: a scalar KerasTensor to differentiate (test and train steps), or None.
        trainable: the Variables a train step updates, in the optimizer's order.
        updates: `(variable, tensor)` pairs: a train step assigns each tensor to its
            (non-trainable) variable after the optimizer update.
        seed: the program's random seed (dropout).
        training: whether the spec is for a training step (expandable nodes may
            build different subgraphs for training and inference).

    Attributes:
        spec: the dict handed to the core.
        variables: the Variables the graph reads.
        output_dtypes: dtype of each output.
    """

    def __init__(self, inputs, outputs, input_shapes, loss=None, trainable=(), updates=(), seed=0, training=False):
        self.variables = []
        var_index = {}
        # Expanded nodes: their placeholders stand for the node's inputs, and its
        # outputs for the subgraph's; the tensors are kept so their ids stay unique.
        self._alias = {}
        self._keep = []
        shapes = {id(t): list(shape) for t, shape in zip(inputs, input_shapes)}
        update_values = [t for _, t in updates]
        nodes = topological_nodes(list(outputs) + ([loss] if loss is not None else []) + update_values, stop=inputs)
        flat = []
        self._flatten(nodes, shapes, training, flat)
        outputs = [self._resolve(t) for t in outputs]
        loss = None if loss is None else self._resolve(loss)
        updates = [(v, self._resolve(t)) for v, t in updates]
        ids = {}
        spec_inputs = []
        for t, shape in zip(inputs, input_shapes):
            ids[id(t)] = len(ids)
            spec_inputs.append({"shape": list(shape), "dtype": t.dtype})
        leaves = [i for _, ins, _ in flat for i in ins if i._node is None and id(i) not in ids]
        leaves += [t for t in outputs if t._node is None and id(t) not in ids]
        weights, consts = [], []
        for t in leaves:
            if id(t) in ids:
                continue
            if t._variable is not None:
                v = t._variable
                if id(v) not in var_index:
                    var_index[id(v)] = len(self.variables)
                    self.variables.append(v)
                weights.append(t)
            elif t._const is not None:
                consts.append(t)
            else:
                self._shape_of(t, {})  # raises: an input that was not given
            ids[id(t)] = None
        for t in weights:
            ids[id(t)] = len(spec_inputs) + len(weights[: weights.index(t)])
        for t in weights:
            if t._variable._index is None:
                raise TypeError(f"compiled graphs read float32 variables only; {t.name} is {t.dtype}")
        # Weight indices are the Variables' slots in the core's store.
        spec_weights = [{"index": t._variable._index, "shape": list(t.shape)} for t in weights]
        base = len(spec_inputs) + len(weights)
        spec_consts = []
        for k, t in enumerate(consts):
            ids[id(t)] = base + k
            spec_consts.append({"shape": list(t._const.shape), "data": t._const.astype(np.float32).ravel().tolist()})
            if t._const.dtype != np.float32:
                raise TypeError(f"integer constants are not supported in compiled graphs ({t.name})")
        next_id = base + len(consts)
        spec_nodes = []
        for node, ins, attrs in flat:
            spec_nodes.append({"op": node.op, "attrs": attrs, "inputs": [ids[id(i)] for i in ins], "label": node.label})
            for out in node.outputs:
                ids[id(out)] = next_id
                next_id += 1
        self.output_dtypes = [t.dtype for t in outputs]
        self.spec = {
            "inputs": spec_inputs,
            "weights": spec_weights,
            "consts": spec_consts,
            "nodes": spec_nodes,
            "outputs": [ids[id(t)] for t in outputs],
        }
        if loss is not None:
            self.spec["loss"] = ids[id(loss)]
        if trainable:
            self.spec["trainable"] = [v._index for v in trainable]
        if updates:
            self.spec["updates"] = [[v._index, ids[id(t)]] for v, t in updates]
        if seed:
            self.spec["seed"] = int(seed)

    def _resolve(self, t):
        while id(t) in self._alias:
            t = self._alias[id(t)]
        return t

    @staticmethod
    def _shape_of(t, shapes):
        if id(t) in shapes:
            return shapes[id(t)]
        if t._node is None and (t._variable is not None or t._const is not None):
            return list(t.shape)
        raise ValueError(f"The graph depends on the input {t.name} (shape {t.shape}), which is not among the given inputs")

    def _flatten(self, nodes, shapes, training, flat):
        """Appends `(node, inputs, attrs)` for each op of `nodes` to `flat`, in order,
        expanding expandable nodes; records every output's concrete shape."""
        for node in nodes:
            ins = [self._resolve(i) for i in node.inputs]
            in_shapes = [self._shape_of(i, shapes) for i in ins]
            if node.expand is None:
                attrs = node.resolve_attrs(in_shapes)
                types = _core.infer(node.op, json.dumps(attrs), [(s, i.dtype) for s, i in zip(in_shapes, ins)])
                for out, (shape, _) in zip(node.outputs, types):
                    shapes[id(out)] = list(shape)
                flat.append((node, ins, attrs))
                continue
            placeholders = [KerasTensor(tuple(s), i.dtype) for s, i in zip(in_shapes, ins)]
            for ph, i in zip(placeholders, ins):
                self._alias[id(ph)] = i
            subgraph = [symbolic(t) for t in node.expand(placeholders, training)]
            self._keep += placeholders + subgraph
            self._flatten(topological_nodes(subgraph, stop=placeholders), shapes, training, flat)
            for out, sub in zip(node.outputs, subgraph):
                sub = self._resolve(sub)
                got = self._shape_of(sub, shapes)
                if sub.dtype != out.dtype or len(got) != len(out.shape) or any(d is not None and d != g for d, g in zip(out.shape, got)):
                    raise ValueError(f"{node.label}: the expanded graph gives {sub.dtype} {tuple(got)} where {out.dtype} {out.shape} was inferred")
                self._alias[id(out)] = sub


class Function:
    """A symbolic graph compiled per input signature and run natively.

    Args:
        inputs: a KerasTensor or a list of them (placeholders).
        outputs: a KerasTensor or a list of them.

    Example:
        >>> x = KerasTensor((None, 3))
        >>> f = Function(x, ops.relu(x))
        >>> f(np.ones((2, 3), np.float32))
    """

    def __init__(self, inputs, outputs):
        self._single_input = isinstance(inputs, KerasTensor)
        self._single_output = isinstance(outputs, KerasTensor)
        self.inputs = [inputs] if self._single_input else list(inputs)
        self.outputs = [outputs] if self._single_output else list(outputs)
        self._compiled = {}

    def compiled_step(self, shapes):
        """The step compiled for inputs of `shapes` (a tuple of shapes), or None."""
        return self._compiled.get(shapes)

    def __call__(self, *arrays):
        from pyfuncnet.ops import _to_array

        if len(arrays) != len(self.inputs):
            raise ValueError(f"expected {len(self.inputs)} input arrays, got {len(arrays)}")
        arrays = [_to_array(a, "input") for a in arrays]
        for a, t in zip(arrays, self.inputs):
            if a.ndim != len(t.shape) or any(d is not None and d != s for d, s in zip(t.shape, a.shape)):
                raise ValueError(f"input {t.name}: expected shape {t.shape}, got {a.shape}")
            if t.dtype == "int32" and a.dtype != np.int32 or t.dtype != "int32" and a.dtype != np.float32:
                raise TypeError(f"input {t.name}: expected dtype {t.dtype}, got {a.dtype}")
        key = tuple(a.shape for a in arrays)
        step = self._compiled.get(key)
        if step is None:
            gs = GraphSpec(self.inputs, self.outputs, key)
            step = self._compiled[key] = _core.CompiledStep(json.dumps(gs.spec), "predict")
        outs, _ = step.run(arrays, store.core)
        return outs[0] if self._single_output else outs
