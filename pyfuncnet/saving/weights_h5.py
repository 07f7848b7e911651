"""Model weights in Keras 3's `.weights.h5` format: `save_weights` and `load_weights`.

Files are interchangeable with Keras 3 (checked against files written by Keras 3.15):
a file Keras writes loads into the same pyfuncnet model, and the other way round.

The format
----------
One HDF5 file. Every object that owns state (the model, each layer, the optimizer)
gets a group `<path>/vars` holding its own variables as datasets `"0"`, `"1"`, ...
(for a layer: its trainable weights in creation order, then its non-trainable ones;
for an optimizer: `optimizer.variables`), and the attribute `name` = the object's
`name`. The group exists even when the object has no variables. The root's own group
is plain `vars` (`vars.attrs["name"]` is the model's name); there are no other
attributes or metadata. Paths follow Keras's walk over the model, not layer names:

- a Functional or Sequential model first lists `model.layers` under `layers/`, each
  layer named after its class in snake case and numbered in list order:
  `layers/input_layer`, `layers/dense`, `layers/dense_1`, ... (Sequential's `layers`
  has no InputLayer, so none is written). A model nested as a layer is a
  `layers/functional` (or `layers/sequential`) group with its own `layers/` inside.
- then the object's attributes, in sorted order with private (`_x`) names last:
  an attribute holding a layer gives `<attribute>/` (`block/vars`), a list, tuple
  or dict of layers gives `<attribute>/<class>`, `<attribute>/<class>_1`, ... and a
  nested list `<attribute>/container`. A subclassed model has a `layers` attribute
  too, so a layer in an attribute sorted after "layers" (`mlp`, `_private`) is found
  first through `model.layers` and lands under `layers/<class>_<index>`.
- a compiled model has `optimizer/vars`: the step count (int scalar), the learning
  rate (float scalar, unless it is a schedule) and, once the optimizer is built,
  its slots in Keras's order.
- an object reached a second time (a shared layer) is written once, at its first
  path; a number is still used up for it in its list.

Example of a functional MLP (input "digits", Dense "dense_1", "dense_2",
"predictions"): `vars {name: "mlp"}`, `layers/input_layer/vars {name: "digits"}`,
`layers/dense/vars/0` (784, 64), `layers/dense/vars/1` (64,), `layers/dense_1/...`,
`layers/dense_2/...`.

Loading matches groups by path only (the `name` attributes are not checked); groups
the model does not have are ignored, a layer without weights needs no group, and a
layer whose group is missing or holds a different number or shape of weights is an
error. Keras writes bfloat16 weights as 2-byte opaque data tagged with the attribute
`dtype = "bfloat16"`; they are read as float32. Saving needs a name ending in
".weights.h5"; with `overwrite=False` an existing file makes Keras ask on the
terminal ("[WARNING] <path> already exists - overwrite? [y/n]"), and so does this.

Known difference: the walk sees a layer's instance attributes, not properties, and a
subclassed model's `layers` holds only layers assigned directly or in lists (Keras
also tracks dict values and nested lists), so such layers of a subclassed model,
sorted after "layers", land under their attribute name instead of `layers/...`.
"""

import io
import os
import sys
import uuid
import warnings
import zipfile

import h5py
import numpy as np

from pyfuncnet.layers.layer import Layer, to_snake_case

WEIGHTS_SUFFIX = ".weights.h5"
# The weights member of a `.keras` archive.
KERAS_ARCHIVE_WEIGHTS = "model.weights.h5"

# Attributes where pyfuncnet's own classes keep layers that the walk reaches another
# way (`model.layers`) or that Keras does not save (Sequential's InputLayer).
_INTERNAL_ATTRIBUTES = frozenset({"_sublayers", "_functional_layers", "_stack", "_input_layer"})


# ---------------------------------------------------------------------------- walk


class _Entry:
    """One object's `vars` group: where it is and whose variables it holds."""

    def __init__(self, group_path, owner):
        self.group_path = group_path
        self.owner = owner

    @property
    def is_layer(self):
        return isinstance(self.owner, Layer)

    def variables(self):
        """The layer's own `Variable`s, or the optimizer's state arrays, in file order."""
        if self.is_layer:
            return self.owner._own_trainable + self.owner._own_non_trainable
        return self.owner.variables

    def describe(self):
        kind = type(self.owner).__name__
        return f"{'layer' if self.is_layer else 'optimizer'} '{self.owner.name}' ({kind}, group '{self.group_path}')"


def _is_saveable(obj):
    from pyfuncnet.optimizers import Optimizer

    return isinstance(obj, (Layer, Optimizer))


def _join(path, name):
    return f"{path}/{name}" if path else name


def _keras_order(attribute):
    # Keras visits private attributes after public ones ("~" sorts after letters).
    return "~" + attribute if attribute.startswith("_") else attribute


def _unique(name, used):
    if name in used:
        used[name] += 1
        return f"{name}_{used[name]}"
    used[name] = 0
    return name


def _children(obj):
    """`(attribute, value)` pairs of `obj` in the order Keras walks them."""
    from pyfuncnet.models.functional import Functional
    from pyfuncnet.models.model import Model

    if isinstance(obj, Functional):
        yield "layers", obj.layers
    if not isinstance(obj, Layer):
        return
    attributes = {k: v for k, v in vars(obj).items() if k not in _INTERNAL_ATTRIBUTES}
    if isinstance(obj, Model) and not isinstance(obj, Functional):
        # Keras's subclassed models expose `layers`, which its walk visits in
        # alphabetical turn like any attribute.
        attributes["layers"] = obj.layers
    for name in sorted(attributes, key=_keras_order):
        yield name, attributes[name]


def _visit(obj, path, entries, visited):
    if id(obj) in visited:
        return
    visited.add(id(obj))
    entries.append(_Entry(_join(path, "vars"), obj))
    for attribute, child in _children(obj):
        if _is_saveable(child):
            _visit(child, _join(path, attribute), entries, visited)
        elif isinstance(child, (list, tuple, dict)):
            _visit_container(child, _join(path, attribute), entries, visited, set())


def _visit_container(container, path, entries, visited, seen_containers):
    if id(container) in seen_containers:
        return
    seen_containers.add(id(container))
    used = {}
    items = container.values() if isinstance(container, dict) else container
    for item in items:
        if _is_saveable(item):
            _visit(item, _join(path, _unique(to_snake_case(type(item).__name__), used)), entries, visited)
        elif isinstance(item, (list, tuple, dict)):
            _visit_container(item, _join(path, _unique("container", used)), entries, visited, seen_containers)


def weight_groups(model):
    """The `vars` groups a weights file of `model` holds, in Keras's walk order.

    Args:
        model: a built `Model`.

    Returns:
        A list of `(group_path, owner)`: `owner` is the layer, model or optimizer
        whose own variables the group holds.

    Example:
        >>> [path for path, _ in weight_groups(model)]
        ['vars', 'layers/input_layer/vars', 'layers/dense/vars', 'layers/dense_1/vars']
    """
    return [(e.group_path, e.owner) for e in _entries(model)]


def _entries(model):
    entries = []
    _visit(model, "", entries, set())
    return entries


# ---------------------------------------------------------------------------- write


def write_weights(model, h5file):
    """Writes `model`'s weights into an open, empty, writable HDF5 file or group.

    `save_weights` calls it on a new file; `model.save` can call it on the
    `model.weights.h5` member of a `.keras` archive.

    Args:
        model: a built `Model`.
        h5file: an `h5py.File` (or `h5py.Group`) opened for writing.

    Example:
        >>> with h5py.File(io.BytesIO(), "w") as f:
        ...     write_weights(model, f)
    """
    for entry in _entries(model):
        group = h5file.create_group(entry.group_path)
        group.attrs["name"] = entry.owner.name
        for index, value in enumerate(entry.variables()):
            group[str(index)] = np.asarray(value)


def save_weights(model, filepath, overwrite=True):
    """Saves every weight of `model` to `filepath` in Keras 3's `.weights.h5` format.

    The file is written next to its destination under a temporary name and then
    renamed over it, so an interrupted save never leaves a partial file behind.

    Args:
        model: a built `Model`.
        filepath: a `str` or `pathlib.Path` ending in ".weights.h5".
        overwrite: replace an existing file without asking; with False, ask on the
            terminal (as Keras) and keep the file on "n".

    Raises:
        ValueError: the name does not end in ".weights.h5", or the model is not built.

    Example:
        >>> save_weights(model, "mlp.weights.h5")
    """
    filepath = _fspath(filepath, "save_weights")
    if not filepath.endswith(WEIGHTS_SUFFIX):
        raise ValueError(f"save_weights: the filename must end in `{WEIGHTS_SUFFIX}`. Received: filepath={filepath}")
    _check_built(model, "saving")
    if os.path.isdir(filepath):
        raise IsADirectoryError(f"save_weights: {filepath} is a directory; give the path of a file")
    if os.path.exists(filepath) and not overwrite and not _ask_to_overwrite(filepath):
        return
    # A symbolic link is written through, as opening the path would, not replaced.
    target = os.path.realpath(filepath)
    directory = os.path.dirname(target)
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"save_weights: the directory {directory} of {filepath} does not exist")
    temporary = os.path.join(directory, f".{os.path.basename(target)}.{uuid.uuid4().hex}.tmp")
    try:
        with h5py.File(temporary, "x") as f:
            write_weights(model, f)
        with open(temporary, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(temporary, target)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise
    _sync_directory(directory)


def _ask_to_overwrite(filepath):
    answer = input(f"[WARNING] {filepath} already exists - overwrite? [y/n]").strip().lower()
    while answer not in ("y", "n"):
        answer = input('Enter "y" (overwrite) or "n" (cancel).').strip().lower()
    if answer == "n":
        return False
    print("[TIP] Next time specify overwrite=True!")
    return True


def _sync_directory(directory):
    # Makes the rename durable; directories cannot be opened for syncing everywhere
    # (Windows), and the file itself is already complete either way.
    if not hasattr(os, "O_DIRECTORY"):
        return
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------- read


class _Mismatch(Exception):
    """A group that does not fit the object it should load into."""


def _safe_child(group, name, where):
    """`group[name]` refusing soft and external links (they could point outside
    the file), or None when there is no such member."""
    link = group.get(name, getlink=True)
    if link is None:
        return None
    if isinstance(link, (h5py.SoftLink, h5py.ExternalLink)):
        raise ValueError(f"load_weights: {where}: '{name}' is a {type(link).__name__}; links are not allowed in weights files")
    return group[name]


def _find_group(h5file, path, where):
    current = h5file
    for part in path.split("/"):
        current = _safe_child(current, part, where)
        if current is None:
            return None
        if not isinstance(current, h5py.Group):
            raise _Mismatch(f"'{path}' in the file is not a group")
    return current


def _dataset_value(dataset, shape, dtype, label):
    """The dataset's data as `dtype`, after checking it is plain numbers of `shape`
    stored in this file (checked before any data is read)."""
    if dataset.is_virtual or dataset.external:
        raise _Mismatch(f"{label} refers to data outside the file, which is not allowed")
    if tuple(dataset.shape) != tuple(shape):
        raise _Mismatch(f"{label} has shape {tuple(dataset.shape)} in the file, the model expects {tuple(shape)}")
    bfloat16 = dataset.attrs.get("dtype", None) in ("bfloat16", b"bfloat16")
    if bfloat16:
        if dataset.dtype.itemsize != 2 or dataset.dtype.kind not in "Vu":
            raise _Mismatch(f"{label} is tagged bfloat16 but stores {dataset.dtype} items")
        # bfloat16 is the top half of a float32: widen the 16 bits in place.
        bits = np.frombuffer(dataset[()].tobytes(), dtype="<u2").astype(np.uint32) << 16
        return bits.view(np.float32).reshape(shape).astype(dtype)
    if dataset.dtype.kind not in "biuf":
        raise _Mismatch(f"{label} holds {dataset.dtype} data, not numbers")
    return np.asarray(dataset[()]).astype(dtype)


def _read_entry(h5file, entry, where):
    """The values of `entry`'s group, checked against its variables.

    Returns:
        `(values, skip_reason)`: `values` (a list of arrays) to assign, or None
        with the reason (an optimizer whose state has another length, which Keras
        also skips with a warning).

    Raises:
        _Mismatch: the group does not fit.
    """
    group = _find_group(h5file, entry.group_path, where)
    current = entry.variables()
    keys = [] if group is None else list(group.keys())
    if len(keys) != len(current):
        if not entry.is_layer:
            state = "it is not built yet" if not entry.owner.built else f"it has {len(current)} variables"
            return None, (
                f"Skipping variable loading for optimizer '{entry.owner.name}': the file has {len(keys)} "
                f"variables under '{entry.group_path}', but {state}"
            )
        names = [v.path for v in current]
        raise _Mismatch(f"expects {len(current)} weights {names}, but the file has {len(keys)} under '{entry.group_path}'")
    values = []
    for index, variable in enumerate(current):
        label = f"weight {index}" + (f" '{variable.path}'" if entry.is_layer else "")
        dataset = _safe_child(group, str(index), where)
        if not isinstance(dataset, h5py.Dataset):
            raise _Mismatch(f"{label}: '{entry.group_path}/{index}' is missing or not a dataset")
        dtype = np.dtype(variable.dtype)
        values.append(_dataset_value(dataset, variable.shape, dtype, f"{label} ('{entry.group_path}/{index}')"))
    return values, None


def read_weights(model, h5file, skip_mismatch=False, source="the file"):
    """Loads `model`'s weights from an open HDF5 file in Keras 3's weights layout.

    Every group is read and checked before any weight is assigned: when one does not
    fit, nothing changes (unless `skip_mismatch`, which loads all the others).

    Args:
        model: a built `Model`.
        h5file: an `h5py.File` opened for reading.
        skip_mismatch: skip the layers whose weights do not fit, with a warning,
            instead of raising.
        source: how messages name the file.

    Raises:
        ValueError: a layer's weights are missing or have other shapes (naming the
            layer, the weight and both shapes), or the file holds links or
            non-numeric data.

    Example:
        >>> with h5py.File("mlp.weights.h5", "r") as f:
        ...     read_weights(model, f)
    """
    _check_built(model, "loading weights into")
    loads, problems = [], []
    for entry in _entries(model):
        try:
            values, skip_reason = _read_entry(h5file, entry, source)
        except _Mismatch as problem:
            problems.append(f"{entry.describe()}: {problem}")
            continue
        if skip_reason is not None:
            _warn(skip_reason)
        else:
            loads.append((entry, values))
    if problems:
        listing = "\n".join(f"- {p}" for p in problems)
        if not skip_mismatch:
            raise ValueError(
                f"Cannot load the weights of {source} into model '{model.name}': {len(problems)} object(s) do not "
                f"match, so no weight was changed (pass skip_mismatch=True to load the others):\n{listing}"
            )
        _warn(
            f"Loading {source} into model '{model.name}' skipped {len(problems)} object(s) that do not match "
            f"(skip_mismatch=True); they keep their weights:\n{listing}"
        )
    for entry, values in loads:
        if entry.is_layer:
            for variable, value in zip(entry.variables(), values):
                variable.assign(value)
        else:
            entry.owner.load_own_variables({str(i): v for i, v in enumerate(values)})


def load_weights(model, filepath, skip_mismatch=False):
    """Loads weights saved by `save_weights` (pyfuncnet or Keras 3) into `model`.

    Reads a ".weights.h5" file, or the weights inside a ".keras" archive. Weights
    are matched by the model's structure (see this module's docstring), not by
    layer names. Nothing in the file is executed: only numeric datasets are read.

    Args:
        model: a built `Model` with the architecture the file was saved from.
        filepath: a `str` or `pathlib.Path` ending in ".weights.h5" or ".keras".
        skip_mismatch: skip, with a warning, the layers whose weights are missing
            or have other shapes, instead of raising.

    Raises:
        FileNotFoundError: there is no such file.
        ValueError: the file is not a weights file (not HDF5, a ".keras" archive
            without weights, another suffix), or some weights do not match (then
            no weight is changed).

    Example:
        >>> model.save_weights("mlp.weights.h5")
        >>> load_weights(other_model, "mlp.weights.h5")
    """
    filepath = _fspath(filepath, "load_weights")
    if filepath.endswith((".h5", ".hdf5")) and not filepath.endswith(WEIGHTS_SUFFIX):
        raise ValueError(
            f"load_weights: {filepath} looks like a legacy Keras 2 H5 file, which pyfuncnet does not read; "
            f"save the weights with Keras 3 as `{WEIGHTS_SUFFIX}`"
        )
    if not filepath.endswith((WEIGHTS_SUFFIX, ".keras")):
        raise ValueError(
            f"load_weights: file format not supported: filepath={filepath}. Give a `{WEIGHTS_SUFFIX}` file "
            "or a `.keras` archive"
        )
    _check_built(model, "loading weights into")
    if not os.path.isfile(filepath):
        raise FileNotFoundError(f"load_weights: no such file: {filepath}")
    source = f"'{filepath}'"
    if filepath.endswith(".keras"):
        with zipfile.ZipFile(filepath) as archive:
            if KERAS_ARCHIVE_WEIGHTS not in archive.namelist():
                raise ValueError(f"load_weights: the archive {filepath} has no `{KERAS_ARCHIVE_WEIGHTS}`")
            data = io.BytesIO(archive.read(KERAS_ARCHIVE_WEIGHTS))
        try:
            h5file = h5py.File(data, "r")
        except OSError:
            raise ValueError(f"load_weights: `{KERAS_ARCHIVE_WEIGHTS}` in {filepath} is not an HDF5 file") from None
        with h5file:
            read_weights(model, h5file, skip_mismatch=skip_mismatch, source=source)
        return
    if not h5py.is_hdf5(filepath):
        raise ValueError(f"load_weights: {filepath} is not an HDF5 file, so it cannot hold Keras weights")
    with h5py.File(filepath, "r") as f:
        read_weights(model, f, skip_mismatch=skip_mismatch, source=source)


# ---------------------------------------------------------------------------- checks


def _fspath(filepath, what):
    try:
        path = os.fspath(filepath)
    except TypeError:
        raise TypeError(f"{what}: `filepath` must be a str or a path, got {type(filepath).__name__}") from None
    if not isinstance(path, str):
        raise TypeError(f"{what}: `filepath` must be a str or a path, got bytes {path!r}")
    return path


_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


def _warn(message):
    """A UserWarning attributed to the first caller outside pyfuncnet (the user's
    `load_weights` call, however many pyfuncnet frames lie between)."""
    level, frame = 1, sys._getframe(0)
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        frame = frame.f_back
        level += 1
    warnings.warn(message, UserWarning, stacklevel=level)


def _check_built(model, doing):
    if not getattr(model, "built", False):
        raise ValueError(
            f"You are {doing} a model that has not yet been built ('{model.name}'). "
            "Try building the model first by calling it on some data or by using `build()`."
        )
