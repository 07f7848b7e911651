"""Models (`pyfuncnet.models`, as `keras.models`): `Model`, `Sequential`."""

from pyfuncnet.models.functional import Functional
from pyfuncnet.models.model import Model
from pyfuncnet.models.sequential import Sequential

__all__ = ["Functional", "Model", "Sequential"]
