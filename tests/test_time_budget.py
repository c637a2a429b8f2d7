"""segzoo.time_budget: epochs chosen from the measured step time, the schedule shortened to match,
re-planned when epochs run slower or faster, and the budget kept in a real training run."""

import time

import pytest

from segzoo import time_budget
from segzoo.schedules import WarmupDecay
from segzoo.time_budget import TimeBudget, epochs_that_fit


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class FakeModel:
    """What the callback touches: ``stop_training`` and rebuilding the train step."""

    def __init__(self):
        self.stop_training, self.rebuilt = False, 0

    def make_train_function(self, force=False):
        self.rebuilt += int(force)


@pytest.fixture
def clock(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(time_budget.time, "perf_counter", clock)
    return clock


def run_epoch(callback, clock, epoch, steps, step_seconds, first_step_seconds=None):
    callback.on_epoch_begin(epoch)
    for batch in range(steps):
        callback.on_train_batch_begin(batch)
        clock.now += first_step_seconds if (batch == 0 and first_step_seconds) else step_seconds
        callback.on_train_batch_end(batch)
    callback.on_epoch_end(epoch)


def test_epochs_that_fit():
    assert epochs_that_fit(100, 10, 50) == 10 and epochs_that_fit(100, 10, 4) == 4
    assert epochs_that_fit(5, 10, 50) == 1 and epochs_that_fit(100, 0, 7) == 7


def test_epochs_and_schedule_follow_the_measured_step_time(clock):
    schedule = WarmupDecay(1e-3, total_steps=500, warmup_steps=5)
    callback = TimeBudget(100, steps_per_epoch=10, validation_steps=0, max_epochs=50, schedule=schedule)
    callback.set_model(FakeModel())
    callback.on_train_begin()
    # the first step builds the train step (20 s), then 1 s a step: 10 s an epoch
    run_epoch(callback, clock, 0, 10, 1.0, first_step_seconds=20.0)
    # at t=29: 71 s left, less 20 s to rebuild the step -> 5 more epochs
    assert callback.chosen_epochs == 6 and schedule.total_steps == 60 and callback.model.rebuilt == 1
    run_epoch(callback, clock, 1, 10, 1.0, first_step_seconds=20.0)  # the rebuild: not taken as typical
    assert callback.chosen_epochs == 6
    for epoch in range(2, 6):
        assert not callback.model.stop_training
        run_epoch(callback, clock, epoch, 10, 1.0)
    assert callback.model.stop_training and clock.now <= 100


def test_slower_epochs_shorten_the_plan_again(clock):
    schedule = WarmupDecay(1e-3, total_steps=1000)
    callback = TimeBudget(200, steps_per_epoch=10, validation_steps=0, max_epochs=100, schedule=schedule)
    callback.set_model(FakeModel())
    callback.on_train_begin()
    run_epoch(callback, clock, 0, 10, 1.0, first_step_seconds=10.0)
    assert callback.chosen_epochs == 1 + 17  # t=19: 181 s left, less 10 s to rebuild
    run_epoch(callback, clock, 1, 10, 1.0, first_step_seconds=10.0)
    run_epoch(callback, clock, 2, 10, 3.0)  # the machine got busy: 30 s an epoch, 132 s left at t=68
    assert callback.chosen_epochs == 3 + 4 and schedule.total_steps == 70 and callback.model.rebuilt == 2
    run_epoch(callback, clock, 3, 10, 3.0, first_step_seconds=10.0)
    for epoch in range(4, 7):
        assert not callback.model.stop_training
        run_epoch(callback, clock, epoch, 10, 3.0)
    assert callback.model.stop_training and clock.now <= 200


def test_a_busy_start_does_not_cut_the_run_for_good(clock):
    schedule = WarmupDecay(1e-3, total_steps=1000)
    callback = TimeBudget(300, steps_per_epoch=10, validation_steps=0, max_epochs=100, schedule=schedule)
    callback.set_model(FakeModel())
    callback.on_train_begin()
    run_epoch(callback, clock, 0, 10, 3.0, first_step_seconds=10.0)  # a busy machine: 30 s an epoch
    assert callback.chosen_epochs == 1 + 8  # t=37: 263 s left, less 10 s to rebuild
    run_epoch(callback, clock, 1, 10, 1.0, first_step_seconds=10.0)  # the rebuild; the machine is free now
    run_epoch(callback, clock, 2, 10, 1.0)  # 10 s an epoch at t=66: 22 more fit, one is kept as slack
    assert callback.chosen_epochs == 24 and schedule.total_steps == 240 and callback.model.rebuilt == 2
    run_epoch(callback, clock, 3, 10, 1.0, first_step_seconds=10.0)
    for epoch in range(4, 24):
        assert not callback.model.stop_training and callback.chosen_epochs == 24
        run_epoch(callback, clock, epoch, 10, 1.0)
    assert callback.model.stop_training and clock.now <= 300 and callback.model.rebuilt == 2


def test_the_plan_does_not_grow_in_its_second_half_or_without_a_schedule(clock):
    for schedule, busy_epochs in ((WarmupDecay(1e-3, total_steps=1000), 6), (None, 1)):
        callback = TimeBudget(300, steps_per_epoch=10, validation_steps=0, max_epochs=100, schedule=schedule)
        callback.set_model(FakeModel())
        callback.on_train_begin()
        run_epoch(callback, clock, 0, 10, 3.0, first_step_seconds=10.0)
        chosen = callback.chosen_epochs
        for epoch in range(1, busy_epochs):
            run_epoch(callback, clock, epoch, 10, 3.0)
        for epoch in range(busy_epochs, busy_epochs + 3):  # faster now, but past half the plan, or no schedule
            run_epoch(callback, clock, epoch, 10, 1.0)
        assert callback.chosen_epochs == chosen
        clock.now = 0.0


def test_a_budget_that_only_fits_one_epoch(clock):
    callback = TimeBudget(10, steps_per_epoch=10, validation_steps=3, max_epochs=5)
    callback.set_model(FakeModel())
    callback.on_train_begin()
    run_epoch(callback, clock, 0, 10, 1.0, first_step_seconds=5.0)
    assert callback.chosen_epochs == 1 and callback.model.stop_training


@pytest.mark.slow
def test_training_keeps_its_budget_and_resumes_to_the_shortened_end(make_folder, tmp_path, caplog, monkeypatch):
    from segzoo.time_budget import TimeBudget
    from segzoo.training import TrainConfig, train

    folder = make_folder(num_sources=8, copies=0, size=(32, 48))
    config = TrainConfig(data=str(folder), preset="ddrnet23_slim", epochs=500, batch_size=2, image_size=(32, 48),
                         weights="none", checkpoint_dir=str(tmp_path / "run"), augment=False, progress=0,
                         warmup_epochs=0.0, steps_per_epoch=3, time_budget=1.0)
    trained_for = []  # seconds from the first training step's start to the end: what the budget governs
    monkeypatch.setattr(TimeBudget, "on_train_end",
                        lambda self, logs=None: trained_for.append(time.perf_counter() - self._start))
    with caplog.at_level("INFO", logger="segzoo"):
        model, history = train(config)
    # the budget, plus at most about an epoch and a rebuild of the train step; building the model and the
    # data before it is not counted (the whole call took 110 s once on a busy 2-core CI host, 80 s otherwise)
    assert trained_for and trained_for[0] < 60 + 30
    epochs = len(history["loss"])
    assert 1 < epochs < 500 and "epochs (of 500 asked)" in caplog.text
    assert model.optimizer.get_config()["learning_rate"]["config"]["total_steps"] >= epochs * 3
    # a resumed run goes to the end of its shortened schedule: nothing more to do
    _, again = train(TrainConfig(**{**config.__dict__, "resume": True}))
    assert again.get("loss", []) == []
