"""The text progress bar that `fit`, `evaluate` and `predict` print (Keras 3's `Progbar`).

With `verbose=1` on a display that redraws lines (a terminal, a Jupyter kernel or
PyCharm's console) the bar is redrawn in place with "\\r", at most every `interval`
seconds, in Keras 3's style:

    12/32 ━━━━━━━━━━━━━━━━━━━━ 0s 5ms/step - accuracy: 0.8125 - loss: 0.4402

(steps done, the bar, the ETA, the time per step, then each metric). When the output
is not such a display (a pipe, a log file), there is no redraw: only the final line is
printed, with no terminal colours. `verbose=2` prints one line when the bar finishes:

    32/32 - 1s - 10ms/step - accuracy: 0.9312 - loss: 0.2050
"""

import math
import numbers
import os
import sys
import time

import numpy as np

_BAR_CHAR = "━"

# Terminal styles (ANSI SGR codes), as Keras 3 draws its bar: the step count and the
# times in bold, the part of the bar that is done in green, the rest in light grey.
_BOLD = "\x1b[1m"
_GREEN = "\x1b[32m"
_GREY = "\x1b[37m"
_RESET = "\x1b[0m"


def _now():
    """Seconds on a monotonic clock (a module function so tests can replace it)."""
    return time.monotonic()


def _is_dynamic_display(stream):
    """Whether `stream` shows "\\r" redraws: a terminal, or a Jupyter / PyCharm console."""
    isatty = getattr(stream, "isatty", None)
    try:
        if isatty is not None and isatty():
            return True
    except ValueError:  # a closed stream
        return False
    return "ipykernel" in sys.modules or "PYCHARM_HOSTED" in os.environ


def _write(text):
    # Looked up at each write so redirections of sys.stdout (capture, contextlib) apply.
    sys.stdout.write(text)
    sys.stdout.flush()


def format_step_time(seconds, unit_name):
    """The time per step as Keras prints it: "2s/step", "15ms/step" or "850us/step".

    Args:
        seconds: the duration of one step.
        unit_name: the name of the unit ("step" or "sample").

    Example:
        >>> format_step_time(0.0153, "step")
        '15ms/step'
    """
    if seconds >= 1 or seconds == 0:
        return f"{seconds:.0f}s/{unit_name}"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.0f}ms/{unit_name}"
    return f"{seconds * 1e6:.0f}us/{unit_name}"


def format_eta(seconds):
    """The estimated time left as Keras prints it: "42s", "3:07" or "1:02:03".

    Args:
        seconds: the estimated time left.

    Example:
        >>> format_eta(187.5)
        '3:07'
    """
    if seconds > 3600:
        return "%d:%02d:%02d" % (seconds // 3600, (seconds % 3600) // 60, seconds % 60)
    if seconds > 60:
        return "%d:%02d" % (seconds // 60, seconds % 60)
    return "%ds" % seconds


def format_metric(value):
    """A metric value as Keras prints it: `%.4f`, or `%.4e` when its magnitude is at
    most 1e-3 (so tiny values stay readable); arrays print as their mean.

    Args:
        value: a number or a numeric array.

    Example:
        >>> format_metric(0.123456), format_metric(2.5e-5)
        ('0.1235', '2.5000e-05')
    """
    value = float(np.mean(value))
    if abs(value) > 1e-3:
        return f"{value:.4f}"
    return f"{value:.4e}"


def _is_numeric(value):
    if isinstance(value, np.ndarray):
        return value.dtype.kind in "biuf"
    return isinstance(value, (numbers.Real, np.generic)) and not isinstance(value, (str, bytes))


class Progbar:
    """Displays a progress bar, as `keras.utils.Progbar`.

    Metric values passed to `update` are averaged over the steps (weighted by the
    steps each value covers) unless they are "stateful"; the final update
    (`finalize=True`) shows the values it is given as they are. If neither
    `stateful_metrics` nor `stateless_metrics` is given, every metric is averaged.

    Args:
        target: the total number of steps, or None if unknown.
        width: the width of the bar in characters.
        verbose: 0 (silent), 1 (a bar redrawn in place) or 2 (one line at the end).
        interval: the least number of seconds between two redraws with `verbose=1`
            (the final update is always drawn).
        stateful_metrics: names of metrics shown as given, not averaged.
        unit_name: the name of a step in the time per step ("step" or "sample").
        stateless_metrics: names of the only metrics to average (the others are
            shown as given); give at most one of the two lists.

    Example:
        >>> bar = Progbar(target=3)
        >>> for step in range(1, 4):
        ...     bar.update(step, [("loss", 1.0 / step)])
    """

    def __init__(
        self,
        target,
        width=20,
        verbose=1,
        interval=0.05,
        stateful_metrics=None,
        unit_name="step",
        stateless_metrics=None,
    ):
        if target is not None and (isinstance(target, bool) or not isinstance(target, numbers.Integral) or target < 0):
            raise ValueError(f"Progbar: `target` must be None or a non-negative integer, got {target!r}")
        if isinstance(width, bool) or not isinstance(width, numbers.Integral) or width < 1:
            raise ValueError(f"Progbar: `width` must be a positive integer, got {width!r}")
        if verbose not in (0, 1, 2):
            raise ValueError(f"Progbar: `verbose` must be 0, 1 or 2, got {verbose!r}")
        if not isinstance(interval, numbers.Real) or interval < 0:
            raise ValueError(f"Progbar: `interval` must be a non-negative number of seconds, got {interval!r}")
        if stateful_metrics is not None and stateless_metrics is not None:
            raise ValueError("Progbar: give `stateful_metrics` or `stateless_metrics`, not both")
        self.target = None if target is None else int(target)
        self.width = int(width)
        self.verbose = verbose
        self.interval = interval
        self.unit_name = unit_name
        self.stateful_metrics = set(stateful_metrics) if stateful_metrics is not None else None
        self.stateless_metrics = set(stateless_metrics) if stateless_metrics is not None else None
        self._dynamic_display = _is_dynamic_display(sys.stdout)
        self._seen_so_far = 0
        # name -> [weighted sum, number of steps] for numbers, or the value itself.
        self._values = {}
        self._values_order = []
        self._start = _now()
        self._last_update = None  # nothing drawn yet
        self._time_after_first_step = None
        self._prev_width = 0

    def update(self, current, values=None, finalize=None):
        """Records the progress and redraws the bar when due.

        Args:
            current: the number of steps done.
            values: a list of `(name, value)` pairs for the last step(s).
            finalize: whether this is the last update; None means
                `current >= target` (never, when the target is unknown).
        """
        if finalize is None:
            finalize = self.target is not None and current >= self.target
        self._record(current, values or [], finalize)
        now = _now()
        step_time = self._step_duration(current, now)

        if self.verbose == 1:
            # Without redraws only the final line is worth printing.
            if not finalize and not self._dynamic_display:
                return
            if not finalize and self._last_update is not None and now - self._last_update < self.interval:
                return
            self._draw_bar(current, now, step_time, finalize)
        elif self.verbose == 2 and finalize:
            self._draw_summary(current, now, step_time)
        self._last_update = now

    def add(self, n, values=None):
        """Advances the bar by `n` steps (see `update`)."""
        self.update(self._seen_so_far + n, values)

    def _is_stateless(self, name):
        if self.stateful_metrics is not None:
            return name not in self.stateful_metrics
        if self.stateless_metrics is not None:
            return name in self.stateless_metrics
        return True

    def _record(self, current, values, finalize):
        for name, value in values:
            if name not in self._values_order:
                self._values_order.append(name)
            if not _is_numeric(value):
                self._values[name] = value
            elif finalize or not self._is_stateless(name):
                self._values[name] = [value, 1]
            else:
                # A value stands for the steps since the last update; at least one, so
                # a repeated `current` still counts.
                steps = max(current - self._seen_so_far, 1)
                total = self._values.get(name)
                if isinstance(total, list):
                    total[0] = total[0] + value * steps
                    total[1] += steps
                else:
                    self._values[name] = [value * steps, steps]
        self._seen_so_far = current

    def _step_duration(self, current, now):
        """Seconds per step, leaving out the first step (often slow: compilation)
        once later steps are known."""
        if not current:
            return 0.0
        if self._time_after_first_step is not None and current > 1:
            duration = (now - self._time_after_first_step) / (current - 1)
        else:
            duration = (now - self._start) / current
        if current == 1:
            self._time_after_first_step = now
        return duration

    def _metric_text(self):
        parts = []
        for name in self._values_order:
            value = self._values[name]
            if isinstance(value, list):
                text = format_metric(value[0] / max(1, value[1]))
            else:
                text = str(value)
            parts.append(f" - {name}: {text}")
        return "".join(parts)

    def _count_text(self, current):
        digits = len(str(self.target))
        return f"{int(current):{digits}d}/{self.target}"

    def _draw_bar(self, current, now, step_time, finalize):
        # (text, style) pieces: the width on screen counts the text only.
        pieces = []
        known_target = self.target is not None and self.target > 0
        if known_target:
            done = min(max(int(self.width * current / self.target), 0), self.width)
            pieces += [(self._count_text(current), _BOLD), (" ", None)]
            pieces += [(_BAR_CHAR * done, _GREEN), (_BAR_CHAR * (self.width - done), _GREY)]
        else:
            pieces.append((f"{int(current):7d}/Unknown", None))
        if known_target and not finalize:
            clock = format_eta(step_time * (self.target - current))
        else:
            clock = f"{now - self._start:.0f}s"
        pieces += [(" ", None), (clock, _BOLD), (" " + format_step_time(step_time, self.unit_name), None)]
        pieces.append((self._metric_text(), None))

        width = sum(len(text) for text, _ in pieces)
        if self._dynamic_display:
            line = "".join(f"{style}{text}{_RESET}" if style and text else text for text, style in pieces)
            # Blanks erase what is left of a longer previous line.
            message = "\r" + line + " " * max(self._prev_width - width, 0)
        else:
            message = "".join(text for text, _ in pieces)
        if finalize:
            message += "\n"
        _write(message)
        self._prev_width = width

    def _draw_summary(self, current, now, step_time):
        count = self._count_text(current) if self.target else f"{int(current)}/Unknown"
        line = f"{count} - {now - self._start:.0f}s - {format_step_time(step_time, self.unit_name)}"
        _write(line + self._metric_text() + "\n")
