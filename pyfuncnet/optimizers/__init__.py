"""Optimizers, as `keras.optimizers`.

A Python optimizer holds its Keras 3 configuration; the update math (clipping,
weight decay and each optimizer's rule, operation for operation as Keras) runs in
the Rust core. `build(variables)` creates the core state (slots and step count)
for an ordered list of variables; the trainer hands `core` and
`current_learning_rate()` to each compiled training step, and `apply` /
`apply_gradients` update `Variable`s eagerly (custom training loops).

Every optimizer accepts Keras 3's common arguments:
    learning_rate: a float, a `schedules.LearningRateSchedule` (evaluated at
        `iterations` each step) or a callable without arguments returning the rate.
    weight_decay: if set, each step first does `w -= w * weight_decay * lr`.
    clipnorm: clip each gradient to this L2 norm.
    clipvalue: clip each gradient element to `[-clipvalue, clipvalue]`.
    global_clipnorm: clip all gradients together to this joint L2 norm
        (at most one of the three clipping options may be set).
    use_ema, ema_momentum, ema_overwrite_frequency, loss_scale_factor,
    gradient_accumulation_steps: accepted with their inert values (use_ema=False,
        the others None); other values raise NotImplementedError.
    name: the optimizer's name.
The legacy `decay` argument is ignored with a warning, as in Keras 3.
"""

import json
import math
import numbers
import warnings

import numpy as np

from pyfuncnet import _core, _variable, utils
from pyfuncnet._variable import Variable
from pyfuncnet.optimizers import schedules
from pyfuncnet.optimizers.schedules import LearningRateSchedule

# Keras optimizers the core does not implement: named in errors instead of "unknown".
_UNSUPPORTED = ("adafactor", "ftrl", "lion", "lamb", "muon", "lossscaleoptimizer")


def _number(value, name, who):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{who}: `{name}` must be a finite float, got {value!r}")
    return float(value)


def _optional_number(value, name, who):
    return None if value is None else _number(value, name, who)


def _boolean(value, name, who):
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{who}: `{name}` must be True or False, got {value!r}")
    return bool(value)


def _learning_rate(value, who):
    """A learning rate as stored: a schedule or callable as it is, else a float."""
    if isinstance(value, LearningRateSchedule) or callable(value):
        return value
    array = np.asarray(value.value if isinstance(value, Variable) else value)
    if array.shape != () or array.dtype.kind not in "iuf" or not math.isfinite(float(array)):
        raise ValueError(
            f"{who}: `learning_rate` must be a finite float, a LearningRateSchedule or a callable, got {value!r}"
        )
    return float(array)


class Optimizer:
    """Base class of optimizers: configuration, learning rate and core state.

    Subclasses name their core rule (`_core_id`) and their own hyper-parameters
    (`_hyperparameters`, attributes of the same names); the base class handles the
    common arguments (see the module docstring), the learning rate, `build`, the
    updates and saving. The base class itself has no update rule.

    Args:
        learning_rate: a float, a `LearningRateSchedule` or a callable.
        name: the optimizer's name.
        **kwargs: the common arguments listed in the module docstring.

    Example:
        >>> opt = Adam(learning_rate=1e-3)
        >>> opt.build(model_variables)
        >>> opt.apply(grads, model_variables)
    """

    _core_id = None
    _hyperparameters = ()
    # Keras creates the first `_interleaved_slots` slots variable by variable
    # (m0, v0, m1, v1, ...) and each later slot for all variables in a row; this
    # fixes the order of `variables`, and so of Keras weight files.
    _interleaved_slots = 1

    def __init__(
        self,
        learning_rate,
        weight_decay=None,
        clipnorm=None,
        clipvalue=None,
        global_clipnorm=None,
        use_ema=False,
        ema_momentum=0.99,
        ema_overwrite_frequency=None,
        loss_scale_factor=None,
        gradient_accumulation_steps=None,
        name=None,
        **kwargs,
    ):
        who = type(self).__name__
        if kwargs.pop("decay", None) is not None:
            warnings.warn(f"{who}: argument `decay` is no longer supported and is ignored", stacklevel=2)
        if kwargs:
            raise ValueError(f"{who}: argument(s) not recognized: {kwargs}")
        if name is not None and not isinstance(name, str):
            raise ValueError(f"{who}: `name` must be a string, got {name!r}")
        self.name = name if name is not None else who.lower()
        self._learning_rate = _learning_rate(learning_rate, who)
        self.weight_decay = _optional_number(weight_decay, "weight_decay", who)
        self.clipnorm = _optional_number(clipnorm, "clipnorm", who)
        self.clipvalue = _optional_number(clipvalue, "clipvalue", who)
        self.global_clipnorm = _optional_number(global_clipnorm, "global_clipnorm", who)
        if use_ema:
            raise NotImplementedError(f"{who}: `use_ema=True` is not supported; expected False")
        self.use_ema = False
        self.ema_momentum = _number(ema_momentum, "ema_momentum", who)
        self.ema_overwrite_frequency = ema_overwrite_frequency
        for key, value in (
            ("loss_scale_factor", loss_scale_factor),
            ("gradient_accumulation_steps", gradient_accumulation_steps),
        ):
            if value is not None:
                raise NotImplementedError(f"{who}: `{key}` is not supported; expected None, got {value!r}")
        self.loss_scale_factor = None
        self.gradient_accumulation_steps = None
        self.built = False
        self._core = None
        self._trainable_variables = []
        self._iterations = 0
        if self._core_id is not None:
            # The core checks every value (ranges, one clipping option, ...) now, not at the first step.
            _core.Optimizer(self._core_config(), [])

    # ------------------------------------------------------------------
    # Configuration

    def _core_config(self):
        """The JSON config of the core's update rule (the learning rate is passed per step)."""
        config = {"name": self._core_id}
        config.update({key: getattr(self, key) for key in self._hyperparameters})
        for key in ("weight_decay", "clipnorm", "clipvalue", "global_clipnorm"):
            config[key] = getattr(self, key)
        return json.dumps(config)

    def get_config(self):
        """Keras 3's optimizer config: the common arguments, then the optimizer's own.

        A schedule learning rate is written in its serialized form.

        Example:
            >>> SGD(learning_rate=0.1, momentum=0.9).get_config()["momentum"]
            0.9
        """
        lr = self._learning_rate
        config = {
            "name": self.name,
            "learning_rate": schedules.serialize(lr) if isinstance(lr, LearningRateSchedule) else lr,
            "weight_decay": self.weight_decay,
            "clipnorm": self.clipnorm,
            "global_clipnorm": self.global_clipnorm,
            "clipvalue": self.clipvalue,
            "use_ema": self.use_ema,
            "ema_momentum": self.ema_momentum,
            "ema_overwrite_frequency": self.ema_overwrite_frequency,
            "loss_scale_factor": self.loss_scale_factor,
            "gradient_accumulation_steps": self.gradient_accumulation_steps,
        }
        config.update({key: getattr(self, key) for key in self._hyperparameters})
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        """An optimizer built from `get_config()`'s output.

        Args:
            config: the config dict.
            custom_objects: user schedule classes by name, for a serialized schedule.

        Example:
            >>> Adam.from_config(Adam(learning_rate=0.01).get_config())
        """
        config = dict(config)
        if isinstance(config.get("learning_rate"), dict):
            config["learning_rate"] = schedules.deserialize(config["learning_rate"], custom_objects)
        return cls(**config)

    # ------------------------------------------------------------------
    # Learning rate and step count

    @property
    def learning_rate(self):
        """The current learning rate as a float (a schedule evaluated at `iterations`).

        Settable to a float, a `LearningRateSchedule` or a callable; as in Keras, an
        optimizer whose rate is a schedule or callable refuses a plain float.
        """
        return self.current_learning_rate()

    @learning_rate.setter
    def learning_rate(self, value):
        if isinstance(value, LearningRateSchedule) or callable(value):
            self._learning_rate = value
            return
        if not isinstance(self._learning_rate, float):
            raise TypeError(
                f"{type(self).__name__}: the learning rate is a {type(self._learning_rate).__name__}, so it cannot "
                f"be set to a float ({value!r}); create the optimizer with a float learning_rate to set it later"
            )
        self._learning_rate = _learning_rate(value, type(self).__name__)

    def current_learning_rate(self):
        """The learning rate for the next step: the float, the schedule at
        `iterations`, or the callable's value.

        Example:
            >>> SGD(schedules.ExponentialDecay(0.1, 10, 0.5)).current_learning_rate()  # 0.1 at step 0
        """
        lr = self._learning_rate
        if isinstance(lr, LearningRateSchedule):
            return float(lr(self.iterations))
        if callable(lr):
            return float(lr())
        return lr

    def _next_learning_rates(self, count):
        """The learning rates of the next `count` steps as float32, as
        `current_learning_rate` will give them; None when the rate is a callable (its
        value is only known when a step starts)."""
        lr = self._learning_rate
        if isinstance(lr, LearningRateSchedule):
            first = self.iterations
            return np.array([float(lr(first + j)) for j in range(count)], np.float32)
        if callable(lr):
            return None
        return np.full(count, lr, np.float32)

    @property
    def iterations(self):
        """The number of updates applied so far (Keras's `optimizer.iterations`)."""
        return self._core.iterations if self._core is not None else self._iterations

    @iterations.setter
    def iterations(self, value):
        if isinstance(value, bool) or not isinstance(value, (numbers.Integral, np.integer)) or value < 0:
            raise ValueError(f"{type(self).__name__}: `iterations` must be an int >= 0, got {value!r}")
        self._iterations = int(value)
        if self._core is not None:
            self._core.iterations = int(value)

    # ------------------------------------------------------------------
    # State

    def build(self, variables):
        """Creates the core state (slots, step count) for an ordered list of variables.

        Done once; calling it again with the same variables does nothing.

        Args:
            variables: the trainable `Variable`s, in the order gradients will come.

        Example:
            >>> opt.build(model.trainable_variables)
        """
        variables = list(variables)
        if self.built:
            if [id(v) for v in variables] != [id(v) for v in self._trainable_variables]:
                raise ValueError(
                    f"{self.name}: the optimizer is already built for {len(self._trainable_variables)} other "
                    f"variables; create a new optimizer for a different list of {len(variables)}"
                )
            return
        if self._core_id is None:
            raise NotImplementedError(
                f"{type(self).__name__} has no update rule: optimizers with a Python update_step are not "
                "supported; use one of SGD, RMSprop, Adam, AdamW, Adagrad, Adadelta, Adamax, Nadam"
            )
        for v in variables:
            if not hasattr(v, "shape"):
                raise TypeError(f"{self.name}.build: expected Variables, got {type(v).__name__}")
        sizes = [math.prod(v.shape) for v in variables]
        self._core = _core.Optimizer(self._core_config(), sizes)
        self._core.iterations = self._iterations
        self._trainable_variables = variables
        self.built = True

    @property
    def core(self):
        """The core optimizer state (`pyfuncnet._core.Optimizer`), once built."""
        if self._core is None:
            raise ValueError(f"{self.name}: the optimizer is not built; call build(variables) first")
        return self._core

    def _slot_arrays(self):
        """The slot arrays, shaped as their variables, in Keras's creation order."""
        per_variable = [
            [s.reshape(v.shape) for s in self._core.slots(i)] for i, v in enumerate(self._trainable_variables)
        ]
        count = len(per_variable[0]) if per_variable else 0
        lead = min(self._interleaved_slots, count)
        ordered = [slots[k] for slots in per_variable for k in range(lead)]
        ordered += [slots[k] for k in range(lead, count) for slots in per_variable]
        return ordered

    def _set_slot_arrays(self, arrays):
        """Inverse of `_slot_arrays`."""
        n = len(self._trainable_variables)
        count = len(arrays) // n if n else 0
        lead = min(self._interleaved_slots, count)
        per_variable = [[None] * count for _ in range(n)]
        position = iter(arrays)
        for i in range(n):
            for k in range(lead):
                per_variable[i][k] = next(position)
        for k in range(lead, count):
            for i in range(n):
                per_variable[i][k] = next(position)
        for i, slots in enumerate(per_variable):
            self._core.set_slots(i, [np.ascontiguousarray(s, dtype=np.float32).reshape(-1) for s in slots])

    def _extra_variables(self):
        """Optimizer-wide state Keras saves after the slots (Nadam's `u_product`)."""
        return []

    def _set_extra_variables(self, arrays):
        """Inverse of `_extra_variables`."""

    @property
    def variables(self):
        """The optimizer's state as NumPy arrays, in Keras 3's order: the step count,
        the learning rate (when it is a float), then, once built, the slots and any
        optimizer-wide state (Nadam's `u_product`)."""
        out = [np.array(self.iterations, dtype=np.int64)]
        if isinstance(self._learning_rate, float):
            out.append(np.array(self._learning_rate, dtype=np.float32))
        if self.built:
            out += self._slot_arrays() + self._extra_variables()
        return out

    def save_own_variables(self, store):
        """Writes `variables` into `store` under "0", "1", ... (as Keras's weight files).

        Args:
            store: a dict-like object.
        """
        for i, value in enumerate(self.variables):
            store[str(i)] = value

    def load_own_variables(self, store):
        """Restores `variables` from `store` (written by `save_own_variables` or Keras).

        As Keras, a store holding a different number of arrays is skipped with a
        warning (e.g. an optimizer not yet built).

        Args:
            store: a dict-like object with keys "0", "1", ...
        """
        current = self.variables
        if len(store.keys()) != len(current):
            warnings.warn(
                f"Skipping variable loading for optimizer '{self.name}': it has {len(current)} variables, "
                f"the saved optimizer has {len(store.keys())}",
                stacklevel=2,
            )
            return
        values = [np.asarray(store[str(i)]) for i in range(len(current))]
        for i, (old, new) in enumerate(zip(current, values)):
            if old.shape != new.shape:
                raise ValueError(f"{self.name}: saved variable {i} has shape {new.shape}, expected {old.shape}")
        self.iterations = int(values[0])
        rest = values[1:]
        if isinstance(self._learning_rate, float):
            self._learning_rate = float(rest[0])
            rest = rest[1:]
        if self.built:
            n_slots = len(rest) - len(self._extra_variables())
            self._set_slot_arrays(rest[:n_slots])
            self._set_extra_variables(rest[n_slots:])

    # ------------------------------------------------------------------
    # Updates

    def apply(self, grads, trainable_variables=None):
        """One update of `trainable_variables` with `grads`, as Keras's `optimizer.apply`.

        Builds the optimizer on first use. The update runs in the core, on the
        weights in place; then each updated variable's `constraint` (if any) is
        applied, as Keras does. A variable given a None gradient, or not given at
        all, is left as it is, slots included (with a warning for None); an empty
        list is a no-op.

        Args:
            grads: one gradient per variable (arrays of the variables' shapes, or None).
            trainable_variables: the float32 `Variable`s, among those the optimizer
                was built with; None means all of them, in build order.

        Example:
            >>> opt.apply([grad_w, grad_b], [w, b])
        """
        grads = list(grads)
        if trainable_variables is None:
            if not self.built:
                raise ValueError(f"{self.name}.apply: pass trainable_variables, or build() the optimizer first")
            trainable_variables = self._trainable_variables
        trainable_variables = list(trainable_variables)
        if len(grads) != len(trainable_variables):
            raise ValueError(
                f"{self.name}.apply: got {len(grads)} gradients for {len(trainable_variables)} variables"
            )
        if not grads:
            return
        if not self.built:
            self.build(trainable_variables)
        full = self._gradients_in_build_order(grads, trainable_variables)
        built = self._trainable_variables
        indices = []
        for v in built:
            if getattr(v, "_index", None) is None:
                raise TypeError(f"{self.name}.apply: variable '{v.name}' is not a float32 Variable")
            indices.append(v._index)
        # The core updates every variable it was built for: one without a gradient
        # gets zeros and is then put back as it was (value and slots), which is
        # Keras's "skip this variable" (zeros add nothing to a global clip norm).
        skipped = [(i, built[i].numpy(), self._core.slots(i)) for i, g in enumerate(full) if g is None]
        dense = [np.zeros(v.shape, np.float32) if g is None else g for v, g in zip(built, full)]
        self._core.apply(_variable.store.core, indices, dense, self.current_learning_rate())
        _variable.mark_store_changed()
        for i, value, slots in skipped:
            built[i].assign(value)
            self._core.set_slots(i, slots)
        # As Keras's `apply`: the updated variables' constraints, after the update.
        for v, g in zip(built, full):
            if g is not None and getattr(v, "constraint", None) is not None:
                v.assign(v.constraint(v))

    def _gradients_in_build_order(self, grads, variables):
        """The gradients as float32 arrays, one per built variable (None where
        there is none); checks that each variable is known and each shape matches."""
        position = {id(v): i for i, v in enumerate(self._trainable_variables)}
        full = [None] * len(self._trainable_variables)
        missing = []
        for g, v in zip(grads, variables):
            i = position.get(id(v))
            if i is None:
                raise ValueError(
                    f"{self.name}: unknown variable {getattr(v, 'name', v)!r}; this optimizer was built for "
                    f"{len(self._trainable_variables)} other variables and can only update those"
                )
            if g is None:
                missing.append(getattr(v, "path", v.name))
                continue
            g = np.ascontiguousarray(g, dtype=np.float32)
            if g.shape != tuple(v.shape):
                raise ValueError(
                    f"{self.name}: the gradient of variable '{v.name}' has shape {g.shape}, expected {tuple(v.shape)}"
                )
            full[i] = g
        if len(missing) == len(grads):
            raise ValueError(f"{self.name}: no gradients provided for any variable")
        if missing:
            warnings.warn(
                f"{self.name}: gradients do not exist for variables {missing}; they are not updated", stacklevel=3
            )
        return full

    def apply_gradients(self, grads_and_vars):
        """One update from `(gradient, variable)` pairs; returns `iterations`.

        Args:
            grads_and_vars: an iterable of `(gradient, Variable)` pairs.

        Example:
            >>> opt.apply_gradients(zip(grads, model.trainable_variables))
        """
        pairs = list(grads_and_vars)
        if pairs:
            grads, variables = zip(*pairs)
            self.apply(grads, variables)
        return self.iterations

    def __repr__(self):
        return f"<{type(self).__name__} name={self.name}, learning_rate={self._learning_rate!r}>"


class SGD(Optimizer):
    """Gradient descent, with optional (Nesterov) momentum.

    Without momentum: `w -= lr * g`. With momentum: `v = momentum * v - lr * g`,
    then `w += v` (or `w += momentum * v - lr * g` when `nesterov`).

    Args:
        learning_rate: a float, a `LearningRateSchedule` or a callable.
        momentum: in [0, 1].
        nesterov: use Nesterov momentum.
        name: the optimizer's name.
        **kwargs: the common arguments (weight_decay, clipnorm, ...).

    Example:
        >>> SGD(learning_rate=0.1, momentum=0.9, nesterov=True)
    """

    _core_id = "sgd"
    _hyperparameters = ("momentum", "nesterov")

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False, name="SGD", **kwargs):
        self.momentum = _number(momentum, "momentum", "SGD")
        self.nesterov = _boolean(nesterov, "nesterov", "SGD")
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)


class RMSprop(Optimizer):
    """RMSprop: divides the gradient by a moving root mean square of past gradients.

    Args:
        learning_rate: a float, a `LearningRateSchedule` or a callable.
        rho: the decay of the moving average of squared gradients.
        momentum: momentum on the update, in [0, 1].
        epsilon: added for numerical stability.
        centered: divide by the estimated variance (subtracting the mean gradient).
        name: the optimizer's name.
        **kwargs: the common arguments (weight_decay, clipnorm, ...).

    Example:
        >>> RMSprop(learning_rate=1e-3, centered=True)
    """

    _core_id = "rmsprop"
    _hyperparameters = ("rho", "momentum", "epsilon", "centered")

    def __init__(
        self, learning_rate=0.001, rho=0.9, momentum=0.0, epsilon=1e-7, centered=False, name="rmsprop", **kwargs
    ):
        self.rho = _number(rho, "rho", "RMSprop")
        self.momentum = _number(momentum, "momentum", "RMSprop")
        self.epsilon = _number(epsilon, "epsilon", "RMSprop")
        self.centered = _boolean(centered, "centered", "RMSprop")
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)


class Adam(Optimizer):
    """Adam: adaptive moment estimation, with optional AMSGrad.

    Args:
        learning_rate: a float, a `LearningRateSchedule` or a callable.
        beta_1: the decay of the first-moment estimate.
        beta_2: the decay of the second-moment estimate.
        epsilon: added for numerical stability.
        amsgrad: use the maximum of past second moments (AMSGrad).
        name: the optimizer's name.
        **kwargs: the common arguments (weight_decay, clipnorm, ...).

    Example:
        >>> Adam(learning_rate=3e-4, amsgrad=True)
    """

    _core_id = "adam"
    _hyperparameters = ("beta_1", "beta_2", "epsilon", "amsgrad")
    _interleaved_slots = 2

    def __init__(
        self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, amsgrad=False, name="adam", **kwargs
    ):
        who = type(self).__name__
        self.beta_1 = _number(beta_1, "beta_1", who)
        self.beta_2 = _number(beta_2, "beta_2", who)
        self.epsilon = _number(epsilon, "epsilon", who)
        self.amsgrad = _boolean(amsgrad, "amsgrad", who)
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)


class AdamW(Adam):
    """Adam with decoupled weight decay (`w -= w * weight_decay * lr` each step).

    Args:
        learning_rate: a float, a `LearningRateSchedule` or a callable.
        weight_decay: the decay factor (required).
        beta_1: the decay of the first-moment estimate.
        beta_2: the decay of the second-moment estimate.
        epsilon: added for numerical stability.
        amsgrad: use the maximum of past second moments (AMSGrad).
        name: the optimizer's name.
        **kwargs: the common arguments (clipnorm, ...).

    Example:
        >>> AdamW(learning_rate=1e-3, weight_decay=0.01)
    """

    _core_id = "adamw"

    def __init__(
        self,
        learning_rate=0.001,
        weight_decay=0.004,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-7,
        amsgrad=False,
        name="adamw",
        **kwargs,
    ):
        if weight_decay is None:
            raise ValueError("AdamW: `weight_decay` must be a float, got None")
        super().__init__(
            learning_rate=learning_rate,
            beta_1=beta_1,
            beta_2=beta_2,
            epsilon=epsilon,
            amsgrad=amsgrad,
            name=name,
            weight_decay=weight_decay,
            **kwargs,
        )


class Adagrad(Optimizer):
    """Adagrad: per-element learning rates scaled by the accumulated squared gradients.

    Args:
        learning_rate: a float, a `LearningRateSchedule` or a callable.
        initial_accumulator_value: the accumulators' starting value (>= 0).
        epsilon: added for numerical stability.
        name: the optimizer's name.
        **kwargs: the common arguments (weight_decay, clipnorm, ...).

    Example:
        >>> Adagrad(learning_rate=0.01)
    """

    _core_id = "adagrad"
    _hyperparameters = ("initial_accumulator_value", "epsilon")

    def __init__(self, learning_rate=0.001, initial_accumulator_value=0.1, epsilon=1e-7, name="adagrad", **kwargs):
        self.initial_accumulator_value = _number(initial_accumulator_value, "initial_accumulator_value", "Adagrad")
        self.epsilon = _number(epsilon, "epsilon", "Adagrad")
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)


class Adadelta(Optimizer):
    """Adadelta: step sizes from moving averages of squared gradients and updates.

    Args:
        learning_rate: a float, a `LearningRateSchedule` or a callable.
        rho: the decay of the moving averages.
        epsilon: added for numerical stability.
        name: the optimizer's name.
        **kwargs: the common arguments (weight_decay, clipnorm, ...).

    Example:
        >>> Adadelta(learning_rate=1.0, rho=0.95)
    """

    _core_id = "adadelta"
    _hyperparameters = ("rho", "epsilon")
    _interleaved_slots = 2

    def __init__(self, learning_rate=0.001, rho=0.95, epsilon=1e-7, name="adadelta", **kwargs):
        self.rho = _number(rho, "rho", "Adadelta")
        self.epsilon = _number(epsilon, "epsilon", "Adadelta")
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)


class Adamax(Optimizer):
    """Adamax: Adam with the infinity norm in place of the second moment.

    Args:
        learning_rate: a float, a `LearningRateSchedule` or a callable.
        beta_1: the decay of the first-moment estimate.
        beta_2: the decay of the exponentially weighted infinity norm.
        epsilon: added for numerical stability.
        name: the optimizer's name.
        **kwargs: the common arguments (weight_decay, clipnorm, ...).

    Example:
        >>> Adamax(learning_rate=2e-3)
    """

    _core_id = "adamax"
    _hyperparameters = ("beta_1", "beta_2", "epsilon")
    _interleaved_slots = 2

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, name="adamax", **kwargs):
        self.beta_1 = _number(beta_1, "beta_1", "Adamax")
        self.beta_2 = _number(beta_2, "beta_2", "Adamax")
        self.epsilon = _number(epsilon, "epsilon", "Adamax")
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)


class Nadam(Optimizer):
    """Nadam: Adam with Nesterov momentum (Keras's momentum-schedule variant).

    Args:
        learning_rate: a float, a `LearningRateSchedule` or a callable.
        beta_1: the decay of the first-moment estimate.
        beta_2: the decay of the second-moment estimate.
        epsilon: added for numerical stability.
        name: the optimizer's name.
        **kwargs: the common arguments (weight_decay, clipnorm, ...).

    Example:
        >>> Nadam(learning_rate=2e-3)
    """

    _core_id = "nadam"
    _hyperparameters = ("beta_1", "beta_2", "epsilon")
    _interleaved_slots = 2

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, name="nadam", **kwargs):
        self.beta_1 = _number(beta_1, "beta_1", "Nadam")
        self.beta_2 = _number(beta_2, "beta_2", "Nadam")
        self.epsilon = _number(epsilon, "epsilon", "Nadam")
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)

    def _extra_variables(self):
        # Keras's `u_product`: one per optimizer; the core keeps equal copies per variable.
        if not self._trainable_variables:
            return [np.array(1.0, dtype=np.float32)]
        return [np.array(self._core.scalars(0)[0], dtype=np.float32)]

    def _set_extra_variables(self, arrays):
        if self._trainable_variables:
            for i in range(len(self._trainable_variables)):
                self._core.set_scalars(i, [float(arrays[0])])


_CLASSES = (SGD, RMSprop, Adam, AdamW, Adagrad, Adadelta, Adamax, Nadam)
# Keras looks optimizers up by lower-case class name ("adam", "rmsprop", ...).
_REGISTRY = {cls.__name__.lower(): cls for cls in _CLASSES}


def _lookup_name(name):
    """A class name as the registry spells it; refuses the Keras optimizers the core lacks."""
    lower = name.lower()
    if lower in _UNSUPPORTED:
        raise NotImplementedError(
            f"The {name} optimizer is not supported; use one of {', '.join(cls.__name__ for cls in _CLASSES)}"
        )
    return lower if lower in _REGISTRY else name


def serialize(optimizer):
    """Keras 3's serialized form: `{"module", "class_name", "config", "registered_name"}`.

    Args:
        optimizer: an `Optimizer`.

    Example:
        >>> serialize(Adam())["class_name"]
        'Adam'
    """
    return utils._serialize_object(optimizer, "keras.optimizers", Optimizer, "optimizer")


def deserialize(config, custom_objects=None):
    """The optimizer a serialized config (or a name) describes.

    Args:
        config: the output of `serialize`, a Keras `{"class_name", "config"}` dict,
            or a name (any case: "adam", "Adam", "RMSprop").
        custom_objects: user optimizer or schedule classes by name.

    Example:
        >>> deserialize({"class_name": "SGD", "config": {"learning_rate": 0.1}})
    """
    if isinstance(config, str):
        config = {"class_name": config, "config": {}}
    if isinstance(config, dict) and isinstance(config.get("class_name"), str):
        config = dict(config)
        config["class_name"] = _lookup_name(config["class_name"])
        inner = config.get("config")
        if isinstance(inner, dict) and isinstance(inner.get("learning_rate"), dict):
            # Here, so that custom schedule classes are found too.
            schedule = schedules.deserialize(inner["learning_rate"], custom_objects)
            config["config"] = {**inner, "learning_rate": schedule}
    return utils._deserialize_object(config, _REGISTRY, custom_objects, "optimizer")


def get(identifier):
    """An optimizer from a name, a config dict or an instance (returned as is); None gives None.

    Args:
        identifier: e.g. "adam", "SGD", `{"class_name": "Adam", "config": {...}}`,
            or an `Optimizer`.

    Example:
        >>> get("rmsprop").learning_rate
        0.001
    """
    if identifier is None or isinstance(identifier, Optimizer):
        return identifier
    if isinstance(identifier, (str, dict)):
        return deserialize(identifier)
    raise ValueError(f"Could not interpret optimizer identifier: {identifier!r}")
