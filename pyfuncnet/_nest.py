"""Nested structures of tensors: flatten them and rebuild them.

Models take and return a tensor, a list/tuple of them or a dict of them (Keras's
"structures"). Dicts flatten in sorted key order, as Keras does, so a structure
and its flat list correspond the same way everywhere.
"""


def is_nested(x):
    return isinstance(x, (list, tuple, dict))


def flatten(x):
    """The leaves of `x` in order (dict values by sorted key)."""
    if isinstance(x, dict):
        return [leaf for key in sorted(x) for leaf in flatten(x[key])]
    if isinstance(x, (list, tuple)):
        return [leaf for item in x for leaf in flatten(item)]
    return [x]


def pack_like(structure, leaves):
    """`structure` with its leaves replaced, in order, by `leaves`."""
    leaves = iter(leaves)

    def rebuild(s):
        if isinstance(s, dict):
            return {key: rebuild(s[key]) for key in sorted(s)} if s else {}
        if isinstance(s, (list, tuple)):
            items = [rebuild(item) for item in s]
            return type(s)(items) if isinstance(s, list) or type(s) is tuple else type(s)(*items)
        return next(leaves)

    return rebuild(structure)


def map_structure(fn, x):
    """`x` with `fn` applied to each leaf."""
    return pack_like(x, [fn(leaf) for leaf in flatten(x)])
