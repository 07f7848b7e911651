"""pyfuncnet: Keras-compatible deep learning, trained fast on multicore CPUs.

Use it as Keras: `import pyfuncnet as keras`.

The Keras namespaces (`layers`, `models`, `losses`, `optimizers`, ...) and the
top-level names (`Input`, `Model`, `Sequential`) are imported on first use, so
`import pyfuncnet` stays quick.
"""

import importlib

from pyfuncnet import _core
from pyfuncnet import backend, config, errors, ops
from pyfuncnet._symbolic import KerasTensor
from pyfuncnet._tape import GradientTape
from pyfuncnet._variable import Variable

__version__ = _core.__version__

_SUBMODULES = (
    "activations",
    "callbacks",
    "constraints",
    "initializers",
    "layers",
    "losses",
    "metrics",
    "models",
    "optimizers",
    "regularizers",
    "saving",
    "utils",
)

_NAMES = {
    "Input": ("pyfuncnet.layers.input_layer", "Input"),
    "InputSpec": ("pyfuncnet.layers.layer", "InputSpec"),
    "Layer": ("pyfuncnet.layers.layer", "Layer"),
    "Model": ("pyfuncnet.models.model", "Model"),
    "Sequential": ("pyfuncnet.models.sequential", "Sequential"),
}


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"pyfuncnet.{name}")
    if name in _NAMES:
        module, attr = _NAMES[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'pyfuncnet' has no attribute '{name}'")


def __dir__():
    return sorted(set(globals()) | set(_SUBMODULES) | set(_NAMES))


__all__ = ["GradientTape", "KerasTensor", "Variable", "backend", "config", "errors", "ops", *_SUBMODULES, *_NAMES]
