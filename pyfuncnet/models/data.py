"""Data handed to fit / evaluate / predict: matched to the model's inputs and
outputs, checked, split and cut into batches.

Arrays, lists of arrays and dicts keyed by input/output names are accepted, and
Python generators (or other iterators) yielding `x`, `(x, y)` or `(x, y,
sample_weight)`.
"""

import numpy as np

from pyfuncnet import _core, _nest


def _as_array(value, what):
    try:
        arr = np.asarray(value)
    except Exception as e:  # noqa: BLE001 - reported with the argument's name
        raise TypeError(f"{what}: cannot convert a {type(value).__name__} to an array ({e})") from None
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{what}: expected numeric data, got an array of dtype {arr.dtype}")
    if arr.ndim == 0:
        raise ValueError(f"{what}: expected an array with a batch dimension, got a scalar")
    return arr


def match_structure(data, names, what):
    """`data` as a list of arrays in the order of `names`.

    Args:
        data: an array, a list/tuple of arrays (in order) or a dict keyed by name.
        names: the model's input (or output) names.
        what: "x", "y" or "sample_weight", for messages.
    """
    if isinstance(data, dict):
        unknown = sorted(k for k in data if k not in names)
        missing = [n for n in names if n not in data]
        if missing:
            raise ValueError(
                f"Missing data for {'input' if what == 'x' else 'output'} {missing[0]!r} in `{what}`: "
                f"the dict has keys {sorted(data)}, expected keys {list(names)}"
            )
        if unknown:
            raise ValueError(f"`{what}` has keys {unknown} that match no {'input' if what == 'x' else 'output'}; expected keys {list(names)}")
        return [_as_array(data[n], f"{what}[{n!r}]") for n in names]
    if isinstance(data, (list, tuple)) and not _is_plain_numbers(data):
        flat = _nest.flatten(list(data))
        if len(flat) != len(names):
            raise ValueError(f"`{what}` is a list of {len(flat)} arrays, but the model has {len(names)} {'inputs' if what == 'x' else 'outputs'}: {list(names)}")
        return [_as_array(a, f"{what}[{k}] ({n})") for k, (a, n) in enumerate(zip(flat, names))]
    if len(names) != 1:
        raise ValueError(f"`{what}` is a single array, but the model has {len(names)} {'inputs' if what == 'x' else 'outputs'}: {list(names)}; pass a list or a dict")
    return [_as_array(data, what)]


def _is_plain_numbers(data):
    """A list of numbers (one array given as a Python list) rather than a list of arrays."""
    return all(isinstance(v, (int, float, np.number)) for v in data)


def check_inputs(arrays, tensors, names, model_name, finite=False):
    """Casts to the inputs' dtypes and checks shapes (and, with `finite`, that float
    inputs hold no NaN or Inf, as training requires); returns the cast arrays."""
    out = []
    for arr, t, name in zip(arrays, tensors, names):
        want = t.shape
        if arr.ndim != len(want) or any(w is not None and w != g for w, g in zip(want[1:], arr.shape[1:])):
            raise ValueError(
                f"Input {name!r} of model '{model_name}' is incompatible: expected shape {want}, "
                f"got an array of shape {arr.shape}"
            )
        if t.dtype == "int32":
            if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)) or arr.dtype.kind == "f" and np.any(arr != np.round(arr)):
                raise ValueError(f"Input {name!r} of model '{model_name}' expects integers; got non-integer values")
            arr = np.ascontiguousarray(arr, dtype=np.int32)
        else:
            arr = np.ascontiguousarray(arr, dtype=np.float32)
            if finite and arr.size and not _core.all_finite(arr):
                bad = np.argwhere(~np.isfinite(arr))[0]
                raise ValueError(f"Input {name!r} contains NaN or Inf (first at index {tuple(int(i) for i in bad)})")
        out.append(arr)
    return out


def check_count(arrays, what_names):
    """All arrays have the same number of samples; returns it."""
    counts = {what: a.shape[0] for what, a in zip(what_names, arrays)}
    if len(set(counts.values())) > 1:
        detail = ", ".join(f"{k}: {v}" for k, v in counts.items())
        raise ValueError(f"Data cardinality is ambiguous: make sure all arrays contain the same number of samples ({detail})")
    return next(iter(counts.values())) if counts else 0


def split_validation(arrays, n, fraction):
    """The first `1 - fraction` and the last `fraction` of the `n` samples of each
    array (None entries stay None), as Keras splits before shuffling."""
    if not 0 < fraction < 1:
        raise ValueError(f"validation_split must be in (0, 1), got {fraction}")
    cut = int(n * (1.0 - fraction))
    if cut == 0 or cut == n:
        raise ValueError(f"validation_split={fraction} leaves no training or no validation samples out of {n}")
    head = [None if a is None else a[:cut] for a in arrays]
    tail = [None if a is None else a[cut:] for a in arrays]
    return head, tail


def class_weights_to_sample_weights(y, class_weight, output_name):
    """Per-sample weights from a `{class: weight}` dict and the labels `y`."""
    labels = np.argmax(y, axis=-1) if y.ndim > 1 and y.shape[-1] > 1 else np.asarray(y).reshape(len(y), -1)[:, 0]
    labels = np.round(labels).astype(np.int64)
    weights = np.ones(len(labels), np.float32)
    for cls in np.unique(labels):
        if int(cls) not in class_weight:
            raise ValueError(f"class_weight for output {output_name!r} has no entry for class {int(cls)}; it has {sorted(class_weight)}")
        weights[labels == cls] = class_weight[int(cls)]
    return weights


def take_rows(a, idx):
    """`a[idx]` for an index array `idx`, as a new C-contiguous array: copied by the
    core's threads when `a` is a contiguous float32 or int32 array (the shuffled
    batches of `fit`), else by NumPy."""
    if a.dtype in (np.float32, np.int32) and a.flags.c_contiguous and a.ndim > 0:
        out = np.empty((len(idx),) + a.shape[1:], a.dtype)
        _core.take_rows(a, idx, out)
        return out
    return np.ascontiguousarray(a[idx])


def unpack_batch(item):
    """`(x, y, sample_weight)` from what a generator yielded."""
    if isinstance(item, tuple):
        if len(item) == 1:
            return item[0], None, None
        if len(item) == 2:
            return item[0], item[1], None
        if len(item) == 3:
            return item
        raise ValueError(f"A data generator must yield x, (x, y) or (x, y, sample_weight); got a tuple of {len(item)} items")
    return item, None, None


def is_iterator_data(x):
    """Generators and other iterators (not arrays, lists or dicts)."""
    if isinstance(x, (np.ndarray, list, tuple, dict)) or x is None:
        return False
    return hasattr(x, "__next__") or (hasattr(x, "__iter__") and not hasattr(x, "__array__") and not hasattr(x, "shape"))
