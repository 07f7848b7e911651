"""Utilities, as `keras.utils`: one-hot labels, padding, global seeding,
normalisation and the progress bar.

`set_random_seed` is the one switch for reproducible runs: it reseeds Python's
`random`, NumPy's global generator and the generator that unseeded initializers
draw their seeds from, and remembers the seed so training can key dropout by it.

The module also holds the serialization helpers that initializers, regularizers,
constraints, optimizers and schedules share, so they all read and write Keras 3's
`{"module", "class_name", "config", "registered_name"}` form.
"""

import random

import numpy as np

from pyfuncnet._progbar import Progbar  # noqa: F401 - keras.utils.Progbar
from pyfuncnet._symbolic import KerasTensor
from pyfuncnet._variable import Variable

_random_seed = None


def set_random_seed(seed):
    """Seeds every random generator pyfuncnet uses.

    Reseeds Python's `random`, NumPy's global generator and the generator that
    unseeded initializers draw their seeds from, so a script that calls this first
    builds identical weights on every run. The seed is remembered
    (`get_random_seed`) for keying dropout during training.

    Args:
        seed: an int in [0, 2**32).

    Example:
        >>> set_random_seed(1337)
        >>> get_random_seed()
        1337
    """
    global _random_seed
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"set_random_seed: `seed` must be an integer, got {seed!r} of type {type(seed).__name__}")
    seed = int(seed)
    if not 0 <= seed < 2**32:
        raise ValueError(f"set_random_seed: `seed` must be in [0, 2**32), got {seed}")
    random.seed(seed)
    np.random.seed(seed)
    # Imported here: initializers imports this module for its serialization helpers.
    from pyfuncnet import initializers

    initializers._reseed(seed)
    # Dropout and noise layers created from now on get the same streams as in
    # any other run that set this seed first.
    from pyfuncnet.layers.layer import reset_random_streams

    reset_random_streams()
    _random_seed = seed


def get_random_seed():
    """The seed last given to `set_random_seed`, or None if it was never called.

    Example:
        >>> set_random_seed(7)
        >>> get_random_seed()
        7
    """
    return _random_seed


def to_categorical(x, num_classes=None):
    """Converts integer class labels to one-hot rows, as `keras.utils.to_categorical`.

    A trailing axis of size 1 is dropped first, so labels shaped `(n, 1)` give
    `(n, num_classes)`, like labels shaped `(n,)`. As in Keras, the result is a
    float64 NumPy array with the class axis last.

    Args:
        x: array-like of integer labels in `[0, num_classes)` (floats with
            integral values are accepted).
        num_classes: the number of classes; `max(x) + 1` when None or 0.

    Example:
        >>> to_categorical([0, 2, 1], num_classes=3)
        array([[1., 0., 0.],
               [0., 0., 1.],
               [0., 1., 0.]])
    """
    labels = np.asarray(x)
    if labels.dtype.kind == "f":
        if not np.all(np.isfinite(labels)) or np.any(labels != np.trunc(labels)):
            raise ValueError("to_categorical: `x` must hold integer class labels, got non-integral values")
    elif labels.dtype.kind not in "iub":
        raise ValueError(f"to_categorical: `x` must hold integer class labels, got dtype {labels.dtype}")
    labels = labels.astype(np.int64)
    shape = labels.shape
    if len(shape) > 1 and shape[-1] == 1:
        shape = shape[:-1]
    flat = labels.reshape(-1)
    if not num_classes:
        if flat.size == 0:
            raise ValueError("to_categorical: cannot infer `num_classes` from empty labels; pass num_classes")
        num_classes = int(flat.max()) + 1
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 0:
        raise ValueError(f"to_categorical: `num_classes` must be a positive integer, got {num_classes!r}")
    if flat.size and (flat.min() < 0 or flat.max() >= num_classes):
        bad = flat[(flat < 0) | (flat >= num_classes)][0]
        raise ValueError(f"to_categorical: label {bad} is outside [0, {num_classes}) (num_classes={num_classes})")
    one_hot = np.zeros((flat.size, int(num_classes)))
    one_hot[np.arange(flat.size), flat] = 1.0
    return one_hot.reshape(shape + (int(num_classes),))


def pad_sequences(sequences, maxlen=None, dtype="int32", padding="pre", truncating="pre", value=0.0):
    """Pads (or truncates) sequences to one length, as `keras.utils.pad_sequences`.

    Sequences longer than `maxlen` lose elements at the start (`truncating="pre"`)
    or the end ("post"); shorter ones are filled with `value` before ("pre") or
    after ("post") their elements. Elements may themselves be arrays (all of one
    shape), which gives a result of shape `(len(sequences), maxlen) + element_shape`.

    Args:
        sequences: a list of sequences (lists or arrays).
        maxlen: the length of the result; the longest sequence's length when None.
        dtype: the result's dtype.
        padding: "pre" or "post": where the fill goes.
        truncating: "pre" or "post": which end of a long sequence is dropped.
        value: the fill value.

    Example:
        >>> pad_sequences([[1, 2, 3], [4]], maxlen=2)
        array([[2, 3],
               [0, 4]], dtype=int32)
    """
    if not hasattr(sequences, "__len__"):
        raise ValueError(f"pad_sequences: `sequences` must be a list of sequences, got {type(sequences).__name__}")
    for name, choice in (("padding", padding), ("truncating", truncating)):
        if choice not in ("pre", "post"):
            raise ValueError(f"pad_sequences: `{name}` must be 'pre' or 'post', got {choice!r}")
    lengths = []
    for k, s in enumerate(sequences):
        if not hasattr(s, "__len__"):
            raise ValueError(f"pad_sequences: sequence {k} has no length: {s!r}")
        lengths.append(len(s))
    if maxlen is None:
        maxlen = max(lengths, default=0)
    if isinstance(maxlen, bool) or not isinstance(maxlen, (int, np.integer)) or maxlen < 0:
        raise ValueError(f"pad_sequences: `maxlen` must be None or an int >= 0, got {maxlen!r}")
    dtype = np.dtype(dtype)
    if isinstance(value, str) and dtype.kind not in "OUS":
        raise ValueError(f"pad_sequences: a string `value` ({value!r}) needs a string or object dtype, got {dtype}")
    # Every element has the shape of the first non-empty sequence's elements.
    element_shape = next((np.asarray(s).shape[1:] for s, n in zip(sequences, lengths) if n), ())
    out = np.full((len(sequences), int(maxlen)) + element_shape, value, dtype=dtype)
    if maxlen == 0:
        return out
    for k, (s, n) in enumerate(zip(sequences, lengths)):
        if not n:
            continue
        kept = np.asarray(s[-maxlen:] if truncating == "pre" else s[:maxlen], dtype=dtype)
        if kept.shape[1:] != element_shape:
            raise ValueError(
                f"pad_sequences: the elements of sequence {k} have shape {kept.shape[1:]}, expected {element_shape} "
                "(the shape of the first non-empty sequence's elements)"
            )
        if padding == "post":
            out[k, : len(kept)] = kept
        else:
            out[k, maxlen - len(kept) :] = kept
    return out


def normalize(x, axis=-1, order=2):
    """Divides `x` by its `order`-norm along `axis`, as `keras.utils.normalize`.

    On NumPy input a zero norm is replaced by 1 (zero vectors stay zero) and the
    dtype follows NumPy's division. On symbolic tensors and Variables it is
    written with `pyfuncnet.ops` (`x / max(norm, epsilon)`, as `keras.ops.normalize`)
    and so can be part of a model.

    Args:
        x: an array, a `Variable` or a symbolic tensor.
        axis: the axis the norm runs over.
        order: the norm order, an int >= 1 (2 for the Euclidean norm).

    Example:
        >>> normalize(np.array([[3.0, 4.0]]))
        array([[0.6, 0.8]])
    """
    if isinstance(order, bool) or not isinstance(order, (int, np.integer)) or order < 1:
        raise ValueError(f"normalize: `order` must be an int >= 1, got {order!r}")
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise ValueError(f"normalize: `axis` must be an int, got {axis!r}")
    if isinstance(x, (KerasTensor, Variable)):
        return _normalize_tensor(x, int(axis), int(order))
    x = np.asarray(x)
    norm = np.linalg.norm(x, ord=order, axis=int(axis), keepdims=True)
    norm[norm == 0] = 1
    return x / norm


def _normalize_tensor(x, axis, order):
    from pyfuncnet import config, ops

    eps = config.epsilon()
    if order == 2:
        # 1 / max(norm, eps) as rsqrt(max(sum of squares, eps**2)): the same value,
        # and a finite gradient for all-zero slices.
        sum_sq = ops.sum(ops.square(x), axis=axis, keepdims=True)
        return ops.multiply(x, ops.rsqrt(ops.maximum(sum_sq, eps * eps)))
    total = ops.sum(ops.power(ops.abs(x), float(order)), axis=axis, keepdims=True)
    return ops.divide(x, ops.maximum(ops.power(total, 1.0 / order), eps))


# ----------------------------------------------------------------------------
# Serialization shared by the config-backed modules


def _function_config(fn):
    """Keras 3's serialized form of a plain function (a custom activation, loss, ...)."""
    name = getattr(fn, "__name__", None)
    if name is None:
        raise ValueError(f"serialize: cannot serialize {fn!r}: it has no __name__")
    module = getattr(fn, "__module__", None)
    return {"module": module, "class_name": "function", "config": name, "registered_name": name}


def _serialize_object(obj, builtin_module, base, kind):
    """Keras 3's serialized form of an object with `get_config`, a function or None.

    Instances of built-in classes (defined in the pyfuncnet module named by
    `builtin_module`) are written as Keras writes its own (`"module": "keras.<kind>"`,
    `"registered_name": None`) so the files load in Keras; other classes carry
    their own module and class name; plain functions are written by name; None
    stays None.

    Args:
        obj: what to serialize.
        builtin_module: Keras's module name of the built-ins ("keras.initializers").
        base: the base class of the kind (`Initializer`, ...).
        kind: what is serialized, for error messages ("initializer", ...).
    """
    if obj is None:
        return None
    if isinstance(obj, base):
        cls = type(obj)
        ours = cls.__module__ == "pyfuncnet." + builtin_module.split(".", 1)[1]
        return {
            "module": builtin_module if ours else cls.__module__,
            "class_name": cls.__name__,
            "config": obj.get_config(),
            "registered_name": None if ours else cls.__name__,
        }
    if callable(obj) and not isinstance(obj, type):
        return _function_config(obj)
    raise TypeError(f"serialize: expected a {kind}, a function or None, got {type(obj).__name__}")


def _deserialize_object(identifier, registry, custom_objects, kind):
    """The object a Keras config dict or name stands for (None for None).

    Args:
        identifier: a class name or string id (`"glorot_uniform"`), or a dict with
            `class_name` and `config` (the output of `_serialize_object`, or Keras
            2's `{"class_name", "config"}`); a serialized function is looked up in
            `custom_objects`.
        registry: maps names (class names and string ids) to built-in classes.
        custom_objects: maps names to user classes and functions; searched first.
        kind: what is looked up, for error messages ("initializer", ...).
    """
    if identifier is None:
        return None
    if isinstance(identifier, str):
        identifier = {"class_name": identifier, "config": {}}
    if not isinstance(identifier, dict) or not isinstance(identifier.get("class_name"), str):
        raise ValueError(
            f"Could not interpret {kind} identifier: {identifier!r}; expected a name or a dict with "
            "'class_name' and 'config'"
        )
    custom = custom_objects or {}
    name = identifier["class_name"]
    if name == "function":
        fn_name = identifier.get("registered_name") or identifier.get("config")
        fn = custom.get(fn_name) if isinstance(fn_name, str) else None
        if fn is None:
            raise ValueError(f"Could not find the {kind} function {fn_name!r}; pass it in custom_objects")
        return fn
    config = identifier.get("config") or {}
    if not isinstance(config, dict):
        raise ValueError(f"{kind} '{name}': `config` must be a dict, got {config!r}")
    cls = custom.get(identifier.get("registered_name")) or custom.get(name) or registry.get(name)
    if cls is None:
        # The string ids where the module has them, else the class names.
        ids = [n for n in registry if n[0].islower()]
        known = ", ".join(sorted(ids or registry))
        raise ValueError(f"Could not interpret {kind} identifier: {name!r}; expected one of: {known}")
    return cls.from_config(dict(config))
