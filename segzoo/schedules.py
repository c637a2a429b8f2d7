"""Learning-rate schedules with linear warm-up, serialisable so that a resumed run continues them."""

import math

import keras
from keras import ops

from segzoo.configs import SCHEDULES


@keras.saving.register_keras_serializable(package="segzoo")
class WarmupDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from ``warmup_ratio x peak`` to ``peak``, then a decay to ``end_ratio x peak``.

    The schedule is a function of the optimiser step alone, so a run resumed
    from a checkpoint (which restores the step) continues it exactly.

    Args:
        learning_rate: the peak learning rate, reached at the end of warm-up.
        total_steps: steps of the whole run; the decay ends there.
        warmup_steps: steps of linear warm-up (0 for none).
        kind: ``"poly"`` (``(1 - t) ** power``, DeepLab's and DDRNet's), ``"cosine"``,
            or ``"constant"`` (warm-up, then the peak).
        power: exponent of the polynomial decay.
        end_ratio: final learning rate as a fraction of the peak.
        warmup_ratio: first learning rate as a fraction of the peak.
    """

    def __init__(self, learning_rate, total_steps, warmup_steps=0, kind="poly", power=0.9,
                 end_ratio=0.0, warmup_ratio=0.1):
        if kind not in SCHEDULES:
            raise ValueError(f"kind must be one of {SCHEDULES}; got {kind!r}.")
        if total_steps < 1 or not 0 <= warmup_steps <= total_steps:
            raise ValueError(f"Need total_steps >= 1 and 0 <= warmup_steps <= total_steps; got "
                             f"total_steps={total_steps}, warmup_steps={warmup_steps}.")
        self.learning_rate = float(learning_rate)
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)
        self.kind = kind
        self.power = float(power)
        self.end_ratio = float(end_ratio)
        self.warmup_ratio = float(warmup_ratio)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        peak, end = self.learning_rate, self.learning_rate * self.end_ratio
        decay_steps = max(self.total_steps - self.warmup_steps, 1)
        t = ops.clip((step - self.warmup_steps) / decay_steps, 0.0, 1.0)
        if self.kind == "poly":
            decayed = end + (peak - end) * ops.power(1.0 - t, self.power)
        elif self.kind == "cosine":
            decayed = end + (peak - end) * 0.5 * (1.0 + ops.cos(math.pi * t))
        else:
            decayed = peak + 0.0 * t
        if self.warmup_steps == 0:
            return decayed
        start = peak * self.warmup_ratio
        warm = start + (peak - start) * step / self.warmup_steps
        return ops.where(step < self.warmup_steps, warm, decayed)

    def get_config(self):
        return dict(learning_rate=self.learning_rate, total_steps=self.total_steps,
                    warmup_steps=self.warmup_steps, kind=self.kind, power=self.power,
                    end_ratio=self.end_ratio, warmup_ratio=self.warmup_ratio)
