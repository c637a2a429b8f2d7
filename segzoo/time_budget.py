"""Fit a training run to a wall-clock budget: measure the step time, then choose the epochs.

:class:`TimeBudget` times the training steps of the first epoch (apart from the one
that builds the train step), works out how many epochs fit in what is left of the
budget, shortens the learning-rate schedule to end there (so the run still decays
fully and converges), says what it chose, and stops at that epoch.
After every epoch it re-plans with the median of the last few measured epoch times
(validation included): when fewer epochs fit than it chose, the schedule is shortened
again, so the run keeps to its budget (within about one epoch) and still ends with a fully
decayed learning rate; when the machine got faster (a busy spell at the start is over) and
clearly more epochs fit, the first half of the run lengthens its plan again.
"""

from __future__ import annotations

import logging
import math
import statistics
import time

import keras

logger = logging.getLogger(__name__)

#: Epoch times the re-plan takes the median of: a slow spell of fewer epochs does not move it.
RECENT_EPOCHS = 5


def epochs_that_fit(seconds_left, epoch_seconds, max_epochs):
    """How many whole epochs of ``epoch_seconds`` fit in ``seconds_left``: 1 to ``max_epochs``."""
    if epoch_seconds <= 0:
        return max_epochs
    return int(min(max(math.floor(seconds_left / epoch_seconds), 1), max_epochs))


class TimeBudget(keras.callbacks.Callback):
    """Choose the number of epochs so that training ends within ``seconds`` of its start.

    The first epoch is the measurement: its first step (which builds the train step) gives
    the cost of rebuilding it, the others the step time. At its end the callback chooses the
    epochs that fit in what is left, ends the schedule there and rebuilds the train step once.

    Args:
        seconds: the budget for training, in seconds.
        steps_per_epoch: training steps per epoch.
        validation_steps: validation batches per epoch (each costs about a third of a training step).
        max_epochs: the most epochs to run (the configured ``epochs``).
        schedule: the learning-rate schedule (with a ``total_steps`` attribute) to end at the chosen
            epoch; ``None`` only stops at the chosen epoch.
    """

    def __init__(self, seconds, steps_per_epoch, validation_steps, max_epochs, schedule=None):
        super().__init__()
        self.seconds = float(seconds)
        self.steps_per_epoch = int(steps_per_epoch)
        self.validation_steps = int(validation_steps)
        self.max_epochs = int(max_epochs)
        self.schedule = schedule
        self.chosen_epochs = None
        self._start = self._epoch_start = self._step_start = self._timer = None
        self._first_epoch = None
        self._build_seconds = 0.0
        self._untimed_epochs = 0  # epochs that rebuilt the train step: not typical of the others
        self._epoch_seconds = []

    def on_train_begin(self, logs=None):
        self._start = time.perf_counter()

    def on_epoch_begin(self, epoch, logs=None):
        self._first_epoch = epoch if self._first_epoch is None else self._first_epoch
        self._epoch_start = time.perf_counter()

    def on_train_batch_begin(self, batch, logs=None):
        if batch == 0 and self.chosen_epochs is None:
            self._step_start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        if self.chosen_epochs is not None:
            return
        now = time.perf_counter()
        if batch == 0:
            self._build_seconds, self._timer, self._timed_steps = now - self._step_start, now, 0
        else:
            self._train_end, self._timed_steps = now, batch

    def on_epoch_end(self, epoch, logs=None):
        now = time.perf_counter()
        if self.chosen_epochs is None:  # the first epoch: the measurement
            self._choose(now)
            self.model.stop_training = epoch + 1 >= self.chosen_epochs
            return
        if epoch + 1 >= self.chosen_epochs:
            self.model.stop_training = True
            return
        if self._untimed_epochs:
            self._untimed_epochs -= 1
            return
        # re-plan with the measured epoch times (validation included; the median of the last few, so that
        # one slow epoch on a shared machine does not change the plan): end the schedule sooner, never overrun
        self._epoch_seconds.append(now - self._epoch_start)
        epoch_seconds = statistics.median(self._epoch_seconds[-RECENT_EPOCHS:])
        left = self.seconds - (now - self._start)
        # a new plan costs one rebuild of the train step
        fits = epoch + 1 + (epochs_that_fit(left - self._build_seconds, epoch_seconds,
                                            self.max_epochs - epoch - 1) if left >= epoch_seconds else 0)
        if (self.chosen_epochs - epoch - 1) * epoch_seconds > left and fits < self.chosen_epochs:
            self._replan(fits, epoch, epoch_seconds, left)
        elif self._may_lengthen(epoch) and fits - 1 >= self.chosen_epochs + max(2, self.chosen_epochs // 20):
            self._replan(fits - 1, epoch, epoch_seconds, left)  # one epoch of slack: no shortening right after

    def _may_lengthen(self, epoch):
        """Whether the plan may grow after ``epoch``: in its first half, where a longer schedule raises the
        learning rate by little, and only with a schedule to lengthen."""
        return self.schedule is not None and self.chosen_epochs < self.max_epochs and \
            epoch + 1 <= self.chosen_epochs // 2

    def _replan(self, epochs, epoch, epoch_seconds, left):
        """Change the plan to ``epochs`` after ``epoch`` and fit the schedule to it."""
        logger.info("time budget: an epoch takes %.0f s and %.0f s are left: %d epochs instead of %d",
                    epoch_seconds, left, epochs, self.chosen_epochs)
        self.chosen_epochs = epochs
        self.model.stop_training = epoch + 1 >= epochs
        if not self.model.stop_training:
            self._fit_schedule()

    def _choose(self, now):
        """Set :attr:`chosen_epochs` from the first epoch's step time, and shorten the schedule."""
        step = ((self._train_end - self._timer) / self._timed_steps if self._timed_steps
                else self._build_seconds)
        epoch_seconds = step * (self.steps_per_epoch + self.validation_steps / 3.0)
        left = self.seconds - (now - self._start)
        runs = self.max_epochs - self._first_epoch - 1
        more = epochs_that_fit(left - self._build_seconds, epoch_seconds, runs) if left > epoch_seconds else 0
        self.chosen_epochs = self._first_epoch + 1 + (more if runs > 0 else 0)
        logger.info("time budget %.1f min: %.2f s per training step, about %.0f s per epoch -> %d epochs "
                    "(of %d asked)", self.seconds / 60, step, epoch_seconds, self.chosen_epochs, self.max_epochs)
        if self.chosen_epochs > self._first_epoch + 1:
            self._fit_schedule()

    def _fit_schedule(self):
        """End the learning-rate schedule at :attr:`chosen_epochs`; rebuild the train step to see it."""
        if self.schedule is None:
            return
        total_steps = max(self.chosen_epochs * self.steps_per_epoch, getattr(self.schedule, "warmup_steps", 0), 1)
        if total_steps == self.schedule.total_steps:
            return
        self.schedule.total_steps = total_steps
        self.model.make_train_function(force=True)
        self._untimed_epochs = 1
