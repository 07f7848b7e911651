"""pyfuncnet: Keras-compatible deep learning, trained fast on multicore CPUs.

Use it as Keras: `import pyfuncnet as keras`.
"""

from pyfuncnet import _core
from pyfuncnet import backend, config, errors, ops
from pyfuncnet._symbolic import KerasTensor
from pyfuncnet._tape import GradientTape
from pyfuncnet._variable import Variable

__version__ = _core.__version__

__all__ = [
    "GradientTape",
    "KerasTensor",
    "Variable",
    "backend",
    "config",
    "errors",
    "ops",
]
