"""segzoo.schedules.WarmupDecay: warm-up, decay shapes, serialisation."""

import math

import keras
import pytest

from segzoo.schedules import WarmupDecay


def values(schedule, steps):
    return [float(schedule(step)) for step in steps]


def test_poly_with_warmup():
    schedule = WarmupDecay(0.01, total_steps=110, warmup_steps=10, kind="poly", power=0.9, end_ratio=0.0,
                           warmup_ratio=0.1)
    assert values(schedule, [0, 5, 10]) == pytest.approx([0.001, 0.0055, 0.01])
    assert float(schedule(60)) == pytest.approx(0.01 * 0.5 ** 0.9)
    assert float(schedule(110)) == pytest.approx(0.0, abs=1e-9)
    assert float(schedule(500)) == pytest.approx(0.0, abs=1e-9)  # past the end: stays at the end


def test_cosine_and_constant():
    cosine = WarmupDecay(1.0, total_steps=100, kind="cosine", end_ratio=0.1)
    assert values(cosine, [0, 50, 100]) == pytest.approx([1.0, 0.55, 0.1])
    constant = WarmupDecay(0.5, total_steps=100, warmup_steps=4, kind="constant")
    assert values(constant, [2, 4, 99]) == pytest.approx([0.05 + 0.45 * 0.5, 0.5, 0.5])


def test_roundtrip_and_validation():
    schedule = WarmupDecay(0.1, total_steps=10, warmup_steps=2, kind="cosine")
    clone = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(schedule))
    assert values(clone, range(10)) == values(schedule, range(10))
    with pytest.raises(ValueError, match="kind"):
        WarmupDecay(0.1, 10, kind="step")
    with pytest.raises(ValueError, match="warmup_steps"):
        WarmupDecay(0.1, 10, warmup_steps=11)
    assert not math.isnan(float(WarmupDecay(0.1, 1)(0)))
