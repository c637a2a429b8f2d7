"""Fit a training run to a wall-clock budget: measure the step time, then choose the epochs.

:class:`TimeBudget` times a few training steps at the start of the first epoch
(after the one that traces the graph), works out how many epochs fit in what is
left of the budget, shortens the learning-rate schedule to end there (so the run
still decays fully and converges), says what it chose, and stops at that epoch.
After every epoch it re-checks with the measured epoch time (validation included)
and stops early rather than overrun.
"""

from __future__ import annotations

import logging
import math
import time

import keras

logger = logging.getLogger(__name__)


def epochs_that_fit(seconds_left, epoch_seconds, max_epochs):
    """How many whole epochs of ``epoch_seconds`` fit in ``seconds_left``: 1 to ``max_epochs``."""
    if epoch_seconds <= 0:
        return max_epochs
    return int(min(max(math.floor(seconds_left / epoch_seconds), 1), max_epochs))


class TimeBudget(keras.callbacks.Callback):
    """Choose the number of epochs so that training ends within ``seconds`` of ``start``.

    Args:
        seconds: the budget for training, in seconds.
        steps_per_epoch: training steps per epoch.
        validation_steps: validation batches per epoch (they cost about a third of a training step each).
        max_epochs: the most epochs to run (the configured ``epochs``).
        schedule: the learning-rate schedule (with a ``total_steps`` attribute) to end at the chosen
            epoch; the train step is rebuilt once so the new length takes effect.
        calibration_steps: steps timed after the first (tracing) step.
        start: ``time.perf_counter()`` when the budget began (default: when training begins).
    """

    def __init__(self, seconds, steps_per_epoch, validation_steps, max_epochs, schedule=None,
                 calibration_steps=3, start=None):
        super().__init__()
        self.seconds = float(seconds)
        self.steps_per_epoch = int(steps_per_epoch)
        self.validation_steps = int(validation_steps)
        self.max_epochs = int(max_epochs)
        self.schedule = schedule
        self.calibration_steps = max(int(calibration_steps), 1)
        self.start = start
        self.chosen_epochs = None
        self._first_epoch = self._epoch = None
        self._timer = self._epoch_start = None

    def on_train_begin(self, logs=None):
        self.start = time.perf_counter() if self.start is None else self.start

    def on_epoch_begin(self, epoch, logs=None):
        self._first_epoch = epoch if self._first_epoch is None else self._first_epoch
        self._epoch, self._epoch_start = epoch, time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        if self.chosen_epochs is not None or self._epoch != self._first_epoch:
            return
        if batch == 0:  # the step that traced the graph is not timed
            self._timer = time.perf_counter()
            return
        if batch < min(self.calibration_steps, self.steps_per_epoch - 1):
            return
        now = time.perf_counter()
        step = (now - self._timer) / batch
        # this epoch's remaining steps and validation, then whole epochs
        this_epoch = step * (self.steps_per_epoch - batch - 1 + self.validation_steps / 3.0)
        epoch_seconds = step * (self.steps_per_epoch + self.validation_steps / 3.0)
        left = self.seconds - (now - self.start) - this_epoch
        runs = self.max_epochs - self._first_epoch
        self.chosen_epochs = self._first_epoch + 1 + epochs_that_fit(left, epoch_seconds, runs - 1) \
            if runs > 1 and left >= epoch_seconds else self._first_epoch + 1
        logger.info("time budget %.1f min: %.2f s per training step, about %.0f s per epoch -> %d epochs "
                    "(of %d asked)", self.seconds / 60, step, epoch_seconds, self.chosen_epochs, self.max_epochs)
        if self.schedule is not None and self.chosen_epochs < self.max_epochs:
            self.schedule.total_steps = max(self.chosen_epochs * self.steps_per_epoch,
                                            getattr(self.schedule, "warmup_steps", 0), 1)
            self.model.make_train_function(force=True)

    def on_epoch_end(self, epoch, logs=None):
        if self.chosen_epochs is None:
            return
        epoch_seconds = time.perf_counter() - self._epoch_start
        left = self.seconds - (time.perf_counter() - self.start)
        if epoch + 1 >= self.chosen_epochs:
            self.model.stop_training = True
        elif left < epoch_seconds:
            logger.warning("time budget: %.0f s left and an epoch takes %.0f s: stopping after epoch %d of %d",
                           left, epoch_seconds, epoch + 1, self.chosen_epochs)
            self.model.stop_training = True
