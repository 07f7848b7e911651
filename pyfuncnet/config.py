"""Global settings: threads, and the Keras `config` functions.

The thread count defaults to the cores available to the process, or to the
environment variable `PYFUNCNET_NUM_THREADS`. Results are bitwise identical for any
thread count.
"""

from pyfuncnet import _core

_EPSILON = 1e-7


def set_num_threads(n):
    """Sets the number of threads used by every computation (the calling thread
    and `n - 1` helpers).

    Args:
        n: a positive integer.
    """
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"set_num_threads: expected a positive integer, got {n!r}")
    if n < 1:
        raise ValueError(f"set_num_threads: the thread count must be at least 1, got {n}")
    _core.set_num_threads(n)


def get_num_threads():
    """Returns the number of threads used by every computation."""
    return _core.get_num_threads()


def build_info():
    """Returns a dict with the version, build profile, SIMD level and thread count."""
    return dict(_core.build_info())


def floatx():
    """The default float type: always `"float32"`."""
    return "float32"


def epsilon():
    """The fuzz factor used in numeric expressions (Keras default 1e-7)."""
    return _EPSILON


def set_epsilon(value):
    """Sets the fuzz factor returned by `epsilon()`."""
    global _EPSILON
    _EPSILON = float(value)


def image_data_format():
    """The default image layout: `"channels_last"`."""
    return "channels_last"


def backend():
    """The name of the compute backend."""
    return "pyfuncnet"
