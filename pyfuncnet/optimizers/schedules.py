"""Learning-rate schedules, as `keras.optimizers.schedules`.

A schedule is a callable from the optimizer's step count (`iterations`: the number
of updates applied so far) to a learning rate. Optimizers evaluate it once per
step and hand the value to the native update. The formulas are Keras 3's,
evaluated in float32 as Keras evaluates them; the result is a NumPy float32 scalar.
"""

import math
import numbers

import numpy as np

from pyfuncnet import utils

_F32 = np.float32


def _check_number(value, name, who):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{who}: `{name}` must be a finite number, got {value!r}")
    return value


def _check_steps(value, name, who):
    _check_number(value, name, who)
    if value <= 0:
        raise ValueError(f"{who}: `{name}` must be > 0, got {value!r}")
    return value


def _step(step, who):
    """The step as a float32 (Keras casts it to the learning rate's dtype)."""
    value = np.asarray(step)
    if value.shape != () or value.dtype.kind not in "iuf":
        raise ValueError(f"{who}: `step` must be a number, got {step!r}")
    return _F32(value)


class LearningRateSchedule:
    """Base class of schedules: `schedule(step) -> learning rate`.

    Subclasses implement `__call__(step)` and `get_config()`.

    Example:
        >>> class Halving(LearningRateSchedule):
        ...     def __init__(self, initial):
        ...         self.initial = initial
        ...     def __call__(self, step):
        ...         return self.initial * 0.5 ** (step // 100)
        ...     def get_config(self):
        ...         return {"initial": self.initial}
    """

    def __call__(self, step):
        raise NotImplementedError(f"{type(self).__name__} must implement __call__(step)")

    def get_config(self):
        """The constructor arguments, as a JSON-serializable dict."""
        raise NotImplementedError(f"{type(self).__name__} must implement get_config() to be serializable")

    @classmethod
    def from_config(cls, config):
        """A schedule built from `get_config()`'s output.

        Example:
            >>> ExponentialDecay.from_config({"initial_learning_rate": 0.1, "decay_steps": 10, "decay_rate": 0.5})
        """
        return cls(**config)


class ExponentialDecay(LearningRateSchedule):
    """`initial_learning_rate * decay_rate ** (step / decay_steps)`; with
    `staircase=True` the exponent is floored, so the rate drops in steps.

    Args:
        initial_learning_rate: the rate at step 0.
        decay_steps: the number of steps per factor of `decay_rate` (> 0).
        decay_rate: the decay factor.
        staircase: floor the exponent.
        name: the schedule's name.

    Example:
        >>> ExponentialDecay(0.1, decay_steps=10, decay_rate=0.5)(20)  # 0.025
    """

    def __init__(self, initial_learning_rate, decay_steps, decay_rate, staircase=False, name="ExponentialDecay"):
        who = "ExponentialDecay"
        self.initial_learning_rate = _check_number(initial_learning_rate, "initial_learning_rate", who)
        self.decay_steps = _check_steps(decay_steps, "decay_steps", who)
        self.decay_rate = _check_number(decay_rate, "decay_rate", who)
        self.staircase = bool(staircase)
        self.name = name

    def __call__(self, step):
        p = _step(step, self.name) / _F32(self.decay_steps)
        if self.staircase:
            p = np.floor(p)
        return _F32(self.initial_learning_rate) * np.power(_F32(self.decay_rate), p)

    def get_config(self):
        return {
            "initial_learning_rate": self.initial_learning_rate,
            "decay_steps": self.decay_steps,
            "decay_rate": self.decay_rate,
            "staircase": self.staircase,
            "name": self.name,
        }


class PiecewiseConstantDecay(LearningRateSchedule):
    """A constant rate per interval of steps: `values[0]` for `step <= boundaries[0]`,
    `values[i]` for `boundaries[i - 1] < step <= boundaries[i]`, and `values[-1]`
    after the last boundary.

    Args:
        boundaries: increasing step numbers.
        values: one more rate than there are boundaries.
        name: the schedule's name.

    Example:
        >>> PiecewiseConstantDecay([100, 200], [1.0, 0.5, 0.1])(150)  # 0.5
    """

    def __init__(self, boundaries, values, name="PiecewiseConstant"):
        who = "PiecewiseConstantDecay"
        boundaries, values = list(boundaries), list(values)
        if len(values) != len(boundaries) + 1:
            raise ValueError(
                f"{who}: `values` must have one more entry than `boundaries`, got {len(boundaries)} "
                f"boundaries and {len(values)} values"
            )
        for b in boundaries:
            _check_number(b, "boundaries", who)
        for v in values:
            _check_number(v, "values", who)
        if any(b2 < b1 for b1, b2 in zip(boundaries, boundaries[1:])):
            raise ValueError(f"{who}: `boundaries` must be increasing, got {boundaries}")
        self.boundaries = boundaries
        self.values = values
        self.name = name

    def __call__(self, step):
        s = _step(step, self.name)
        # The first interval whose upper boundary is at or above the step.
        index = sum(1 for b in self.boundaries if s > _F32(b))
        return _F32(self.values[index])

    def get_config(self):
        return {"boundaries": self.boundaries, "values": self.values, "name": self.name}


class PolynomialDecay(LearningRateSchedule):
    """Polynomial decay from `initial_learning_rate` to `end_learning_rate` over
    `decay_steps`: `(initial - end) * (1 - step / decay_steps) ** power + end`, with
    the step capped at `decay_steps`. With `cycle=True`, `decay_steps` is instead
    stretched to the first multiple of itself at or above the step, so the decay
    restarts from a lower peak each cycle.

    Args:
        initial_learning_rate: the rate at step 0.
        decay_steps: the length of the decay (> 0).
        end_learning_rate: the final rate.
        power: the polynomial's power.
        cycle: restart after `decay_steps`.
        name: the schedule's name.

    Example:
        >>> PolynomialDecay(0.1, decay_steps=100, end_learning_rate=0.0)(50)  # 0.05
    """

    def __init__(
        self,
        initial_learning_rate,
        decay_steps,
        end_learning_rate=0.0001,
        power=1.0,
        cycle=False,
        name="PolynomialDecay",
    ):
        who = "PolynomialDecay"
        self.initial_learning_rate = _check_number(initial_learning_rate, "initial_learning_rate", who)
        self.decay_steps = _check_steps(decay_steps, "decay_steps", who)
        self.end_learning_rate = _check_number(end_learning_rate, "end_learning_rate", who)
        self.power = _check_number(power, "power", who)
        self.cycle = bool(cycle)
        self.name = name

    def __call__(self, step):
        s = _step(step, self.name)
        decay_steps = _F32(self.decay_steps)
        if self.cycle:
            # Step 0 belongs to the first cycle.
            multiplier = _F32(1.0) if s == 0 else np.ceil(s / decay_steps)
            decay_steps = decay_steps * multiplier
        else:
            s = np.minimum(s, decay_steps)
        fraction = s / decay_steps
        initial, end = _F32(self.initial_learning_rate), _F32(self.end_learning_rate)
        return (initial - end) * np.power(_F32(1.0) - fraction, _F32(self.power)) + end

    def get_config(self):
        return {
            "initial_learning_rate": self.initial_learning_rate,
            "decay_steps": self.decay_steps,
            "end_learning_rate": self.end_learning_rate,
            "power": self.power,
            "cycle": self.cycle,
            "name": self.name,
        }


class InverseTimeDecay(LearningRateSchedule):
    """`initial_learning_rate / (1 + decay_rate * step / decay_steps)`; with
    `staircase=True` the ratio `step / decay_steps` is floored.

    Args:
        initial_learning_rate: the rate at step 0.
        decay_steps: the step scale (> 0).
        decay_rate: the decay factor.
        staircase: floor `step / decay_steps`.
        name: the schedule's name.

    Example:
        >>> InverseTimeDecay(0.1, decay_steps=10, decay_rate=1.0)(10)  # 0.05
    """

    def __init__(self, initial_learning_rate, decay_steps, decay_rate, staircase=False, name="InverseTimeDecay"):
        who = "InverseTimeDecay"
        self.initial_learning_rate = _check_number(initial_learning_rate, "initial_learning_rate", who)
        self.decay_steps = _check_steps(decay_steps, "decay_steps", who)
        self.decay_rate = _check_number(decay_rate, "decay_rate", who)
        self.staircase = bool(staircase)
        self.name = name

    def __call__(self, step):
        p = _step(step, self.name) / _F32(self.decay_steps)
        if self.staircase:
            p = np.floor(p)
        return _F32(self.initial_learning_rate) / (_F32(1.0) + _F32(self.decay_rate) * p)

    def get_config(self):
        return {
            "initial_learning_rate": self.initial_learning_rate,
            "decay_steps": self.decay_steps,
            "decay_rate": self.decay_rate,
            "staircase": self.staircase,
            "name": self.name,
        }


def _cosine(fraction, alpha):
    """`(1 - alpha) * 0.5 * (1 + cos(pi * fraction)) + alpha`, in float32."""
    cosine = _F32(0.5) * (_F32(1.0) + np.cos(_F32(math.pi) * fraction))
    return (_F32(1.0) - _F32(alpha)) * cosine + _F32(alpha)


class CosineDecay(LearningRateSchedule):
    """Cosine decay, with an optional linear warmup.

    Without `warmup_target`: `initial_learning_rate * ((1 - alpha) * c + alpha)` with
    `c = 0.5 * (1 + cos(pi * min(step, decay_steps) / decay_steps))`, so the rate goes
    from `initial_learning_rate` to `alpha * initial_learning_rate`.

    With `warmup_target`: the rate rises linearly from `initial_learning_rate` to
    `warmup_target` over `warmup_steps`, then decays as above from `warmup_target`
    over the next `decay_steps`.

    Args:
        initial_learning_rate: the rate at step 0.
        decay_steps: the length of the decay (> 0).
        alpha: the final rate as a fraction of the decay's starting rate.
        name: the schedule's name.
        warmup_target: the rate reached at the end of the warmup, or None for no warmup.
        warmup_steps: the length of the warmup.

    Example:
        >>> CosineDecay(0.1, decay_steps=100)(50)  # 0.05
    """

    def __init__(
        self, initial_learning_rate, decay_steps, alpha=0.0, name="CosineDecay", warmup_target=None, warmup_steps=0
    ):
        who = "CosineDecay"
        self.initial_learning_rate = _check_number(initial_learning_rate, "initial_learning_rate", who)
        self.decay_steps = _check_steps(decay_steps, "decay_steps", who)
        self.alpha = _check_number(alpha, "alpha", who)
        self.name = name
        self.warmup_target = None if warmup_target is None else _check_number(warmup_target, "warmup_target", who)
        self.warmup_steps = _check_number(warmup_steps, "warmup_steps", who)
        if warmup_steps < 0:
            raise ValueError(f"{who}: `warmup_steps` must be >= 0, got {warmup_steps!r}")

    def __call__(self, step):
        s = _step(step, self.name)
        decay_steps = _F32(self.decay_steps)
        if self.warmup_target is None:
            fraction = np.minimum(s, decay_steps) / decay_steps
            return _F32(self.initial_learning_rate) * _cosine(fraction, self.alpha)
        warmup_steps = _F32(self.warmup_steps)
        s = np.minimum(s, decay_steps + warmup_steps)
        if s < warmup_steps:
            initial = _F32(self.initial_learning_rate)
            return initial + (_F32(self.warmup_target) - initial) * (s / warmup_steps)
        fraction = (s - warmup_steps) / decay_steps
        return _F32(self.warmup_target) * _cosine(fraction, self.alpha)

    def get_config(self):
        return {
            "initial_learning_rate": self.initial_learning_rate,
            "decay_steps": self.decay_steps,
            "alpha": self.alpha,
            "name": self.name,
            "warmup_target": self.warmup_target,
            "warmup_steps": self.warmup_steps,
        }


class CosineDecayRestarts(LearningRateSchedule):
    """Cosine decay with warm restarts (SGDR).

    The first period lasts `first_decay_steps`; each next one is `t_mul` times
    longer and starts from `m_mul` times the previous peak: the rate is
    `initial * ((1 - alpha) * m_mul**i * 0.5 * (1 + cos(pi * f)) + alpha)` in the
    `i`-th period (from 0), `f` being the fraction of that period completed.

    Args:
        initial_learning_rate: the rate at step 0.
        first_decay_steps: the length of the first period (> 0).
        t_mul: the factor between period lengths.
        m_mul: the factor between period peaks.
        alpha: the floor, as a fraction of `initial_learning_rate`.
        name: the schedule's name.

    Example:
        >>> CosineDecayRestarts(0.1, first_decay_steps=10)(10)  # 0.1, a restart
    """

    def __init__(self, initial_learning_rate, first_decay_steps, t_mul=2.0, m_mul=1.0, alpha=0.0, name="SGDRDecay"):
        who = "CosineDecayRestarts"
        self.initial_learning_rate = _check_number(initial_learning_rate, "initial_learning_rate", who)
        self.first_decay_steps = _check_steps(first_decay_steps, "first_decay_steps", who)
        self.t_mul = _check_steps(t_mul, "t_mul", who)
        self.m_mul = _check_number(m_mul, "m_mul", who)
        self.alpha = _check_number(alpha, "alpha", who)
        self.name = name

    def __call__(self, step):
        fraction = _step(step, self.name) / _F32(self.first_decay_steps)
        t_mul = _F32(self.t_mul)
        if self.t_mul == 1.0:
            restarts = np.floor(fraction)
            fraction = fraction - restarts
        else:
            # Periods 1, t, t^2, ...: restart i starts at (1 - t^i) / (1 - t).
            restarts = np.floor(np.log(_F32(1.0) - fraction * (_F32(1.0) - t_mul)) / np.log(t_mul))
            start = (_F32(1.0) - np.power(t_mul, restarts)) / (_F32(1.0) - t_mul)
            fraction = (fraction - start) / np.power(t_mul, restarts)
        peak = np.power(_F32(self.m_mul), restarts)
        cosine = _F32(0.5) * peak * (_F32(1.0) + np.cos(_F32(math.pi) * fraction))
        alpha = _F32(self.alpha)
        return _F32(self.initial_learning_rate) * ((_F32(1.0) - alpha) * cosine + alpha)

    def get_config(self):
        return {
            "initial_learning_rate": self.initial_learning_rate,
            "first_decay_steps": self.first_decay_steps,
            "t_mul": self.t_mul,
            "m_mul": self.m_mul,
            "alpha": self.alpha,
            "name": self.name,
        }


_CLASSES = (
    LearningRateSchedule,
    ExponentialDecay,
    PiecewiseConstantDecay,
    PolynomialDecay,
    InverseTimeDecay,
    CosineDecay,
    CosineDecayRestarts,
)
_REGISTRY = {cls.__name__: cls for cls in _CLASSES}


def serialize(schedule):
    """Keras 3's serialized form: `{"module", "class_name", "config", "registered_name"}`.

    Args:
        schedule: a `LearningRateSchedule`.

    Example:
        >>> serialize(CosineDecay(0.1, 1000))["class_name"]
        'CosineDecay'
    """
    return utils._serialize_object(
        schedule, "keras.optimizers.schedules", LearningRateSchedule, "learning rate schedule"
    )


def deserialize(config, custom_objects=None):
    """The schedule a serialized config describes.

    Args:
        config: the output of `serialize`, or a Keras `{"class_name", "config"}` dict.
        custom_objects: a dict of user schedule classes by name.

    Example:
        >>> deserialize({"class_name": "ExponentialDecay",
        ...              "config": {"initial_learning_rate": 0.1, "decay_steps": 10, "decay_rate": 0.9}})
    """
    return utils._deserialize_object(config, _REGISTRY, custom_objects, "learning rate schedule")
