"""Exceptions raised by pyfuncnet.

Each class subclasses `PyfuncnetError` and the builtin a user would catch:
`ShapeError` is a `ValueError`, `DTypeError` a `TypeError`, `OutOfRangeError` an
`IndexError`, `InvalidArgumentError` a `ValueError` and `UnsupportedError` a
`NotImplementedError`. They are declared once, in the Rust core.
"""

from pyfuncnet._core import (
    DTypeError,
    InvalidArgumentError,
    OutOfRangeError,
    PyfuncnetError,
    ShapeError,
    UnsupportedError,
)

__all__ = [
    "PyfuncnetError",
    "ShapeError",
    "DTypeError",
    "OutOfRangeError",
    "InvalidArgumentError",
    "UnsupportedError",
]
