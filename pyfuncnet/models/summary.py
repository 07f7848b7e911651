"""`model.summary()`: Keras 3's table of layers, output shapes and parameter counts.

The table is drawn as Keras draws it (heavy header box, a rule between rows,
columns sized from `positions` of `line_length` and shrunk evenly to fit, cells
word-wrapped), so the text matches Keras's for the same model.
"""

import re
import shutil

from pyfuncnet import _nest

_BYTES_PER_PARAM = 4


def readable_size(n_bytes):
    """`220200` -> `"215.04 KB"` (powers of 1024, two decimals, as Keras)."""
    size = float(n_bytes)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size / 1024 < 1:
            return f"{size:.2f} {unit}"
        size /= 1024
    return f"{size:.2f} PB"


def _is_sequential_like(model):
    """Keras draws the "Connected to" column only for graphs with branches, several
    inputs to one layer, or shared layers."""
    by_depth = getattr(model, "_nodes_by_depth", None)
    if by_depth is None or type(model).__name__ == "Sequential":
        return True
    nodes = []
    for depth_nodes in by_depth.values():
        if len(depth_nodes) > 1 or (len(depth_nodes) == 1 and len(depth_nodes[0].input_tensors) > 1):
            return False
        nodes += depth_nodes
    node_ids = {id(n) for n in nodes}
    for layer in model.layers:
        if sum(id(n) in node_ids for n in layer._inbound_nodes) > 1:
            return False
    return True


def _format_shape(shape):
    return "(" + ", ".join(str(d) for d in shape) + ")"


def _output_shape_text(layer):
    nodes = layer._inbound_nodes
    if not nodes:
        return "?"
    outputs = nodes[-1].outputs
    if not _nest.is_nested(outputs):
        return _format_shape(outputs.shape)
    shapes = _nest.map_structure(lambda t: _format_shape(t.shape), outputs)
    if isinstance(shapes, (list, tuple)) and len(shapes) == 1:
        return shapes[0]
    return str(shapes).replace("'", "")


def _params_text(layer):
    if not layer.built:
        return "0 (unbuilt)"
    return f"{layer.count_params():,}"


def _connections_text(layer, relevant):
    parts = []
    for node in layer._inbound_nodes:
        if id(node) not in relevant:
            continue
        for t in node.input_tensors:
            source, node_index, tensor_index = t._keras_history
            parts.append(f"{source.name}[{node_index}][{tensor_index}]")
    return ", ".join(parts) if parts else "-"


def _column_widths(line_length, positions):
    """Content width of each column: Keras's split of `line_length`, plus one space
    of padding each side, shrunk evenly (rounding half to even) to fit the borders."""
    widths, current = [], 0
    for pos in positions:
        width = int(pos * line_length) - current
        if width < 4:
            raise ValueError("Insufficient console width to print summary.")
        widths.append(width + 2)
        current += width
    excess = sum(widths) - (line_length - len(widths) - 1)
    if excess > 0:
        remaining, shares = excess, len(widths)
        for k in range(len(widths)):
            cut = min(widths[k], round(remaining / shares))
            widths[k] -= cut
            remaining -= cut
            shares -= 1
    return [w - 2 for w in widths]


def _wrap(text, width):
    """Greedy word wrap at spaces (leading spaces of the text kept); a word longer
    than `width` keeps a line of its own, cut with an ellipsis (rich's default
    overflow for table cells)."""
    lines = []
    for paragraph in text.split("\n"):
        line = None
        for token in re.findall(r" *\S+", paragraph) or [""]:
            if line is None:
                line = token
            elif len(line + token) <= width:
                line += token
                continue
            else:
                lines.append(line)
                line = token.lstrip(" ")
        lines.append(line or "")
    return [_fit(line, width) for line in lines]


def _fit(text, width):
    """One-line header text, cut with an ellipsis when too long."""
    return text if len(text) <= width else text[: width - 1] + "…"


def _justify(text, width, how):
    if how == "right":
        return text.rjust(width)
    if how == "center":
        pad = width - len(text)
        return " " * (pad // 2) + text + " " * (pad - pad // 2)
    return text.ljust(width)


def _rule(widths, left, fill, middle, right):
    return left + middle.join(fill * (w + 2) for w in widths) + right


def _rows(model, sequential_like, relevant, show_trainable, expand_nested, prefix="", depth=0):
    rows = []
    for layer in model.layers:
        name = f"{prefix}{layer.name} ({type(layer).__name__})"
        row = [name, _output_shape_text(layer), _params_text(layer)]
        if not sequential_like:
            row.append(_connections_text(layer, relevant))
        if show_trainable:
            row.append(("Y" if layer.trainable else "N") if layer.weights else "-")
        rows.append(row)
        if expand_nested and hasattr(layer, "_nodes_by_depth"):
            # Keras names the connections of the top model's nodes only ("-" inside).
            inner_prefix = "   " * (depth + 1) + "└ "
            rows += _rows(layer, sequential_like, relevant, show_trainable, expand_nested, inner_prefix, depth + 1)
    return rows


def _optimizer_params(model):
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None or not getattr(optimizer, "built", False):
        return 0
    return int(sum(int(getattr(v, "size", 1)) for v in optimizer.variables))


def summary_text(model, line_length=None, positions=None, expand_nested=False, show_trainable=False):
    """The summary of `model` as one string (ending in a newline)."""
    sequential_like = _is_sequential_like(model)
    if sequential_like:
        default_length, default_positions = 88, [0.45, 0.80, 1.0]
        header = ["Layer (type)", "Output Shape", "Param #"]
        align = ["left", "left", "right"]
    else:
        default_length, default_positions = 108, [0.3, 0.56, 0.74, 1.0]
        header = ["Layer (type)", "Output Shape", "Param #", "Connected to"]
        align = ["left", "left", "right", "left"]
    positions = list(positions or default_positions)
    if show_trainable:
        default_length += 12
        positions = [p * 0.90 for p in positions] + [1.0]
        header.append("Trainable")
        align.append("center")
    # As Keras: the default length is cut to the terminal's width.
    line_length = line_length or min(default_length, shutil.get_terminal_size((default_length + 4, 24)).columns - 4)
    widths = _column_widths(line_length, positions)
    relevant = {id(n) for ns in getattr(model, "_nodes_by_depth", {}).values() for n in ns}
    rows = _rows(model, sequential_like, relevant, show_trainable, expand_nested)

    out = [f'Model: "{model.name}"']
    out.append(_rule(widths, "┏", "━", "┳", "┓"))
    out.append("┃" + "┃".join(f" {_justify(_fit(h, w), w, a)} " for h, w, a in zip(header, widths, align)) + "┃")
    out.append(_rule(widths, "┡", "━", "╇", "┩"))
    for k, row in enumerate(rows):
        if k:
            out.append(_rule(widths, "├", "─", "┼", "┤"))
        cells = [_wrap(text, w) for text, w in zip(row, widths)]
        for line in range(max(len(c) for c in cells)):
            parts = [_justify(c[line] if line < len(c) else "", w, a) for c, w, a in zip(cells, widths, align)]
            out.append("│" + "│".join(f" {p} " for p in parts) + "│")
    out.append(_rule(widths, "└", "─", "┴", "┘"))

    trainable = sum(int(_size(v)) for v in model.trainable_weights)
    non_trainable = sum(int(_size(v)) for v in model.non_trainable_weights)
    optimizer = _optimizer_params(model)
    total = trainable + non_trainable + optimizer
    out.append(f" Total params: {total:,} ({readable_size(total * _BYTES_PER_PARAM)})")
    out.append(f" Trainable params: {trainable:,} ({readable_size(trainable * _BYTES_PER_PARAM)})")
    out.append(f" Non-trainable params: {non_trainable:,} ({readable_size(non_trainable * _BYTES_PER_PARAM)})")
    if optimizer:
        out.append(f" Optimizer params: {optimizer:,} ({readable_size(optimizer * _BYTES_PER_PARAM)})")
    return "\n".join(out) + "\n"


def _size(v):
    size = 1
    for d in v.shape:
        size *= int(d)
    return size


def print_summary(model, line_length=None, positions=None, print_fn=None, expand_nested=False, show_trainable=False):
    """Prints `summary_text(model)`; `print_fn` gets the whole text in one call."""
    text = summary_text(model, line_length, positions, expand_nested, show_trainable)
    if print_fn is None:
        print(text, end="")
    else:
        print_fn(text)
