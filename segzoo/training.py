"""Training: data, model, loss, optimiser, strategy, checkpoints and resumption in one call.

:func:`train` runs a whole training from a :class:`TrainConfig`, the object
behind ``examples/train.py`` (one flag per field). The pieces are public too:
:func:`make_optimizer`, :func:`make_loss`; devices are set up by :mod:`segzoo.distributed`.

Checkpoints (``checkpoint_dir``): ``best.keras`` (best validation mean IoU),
``last.keras`` (end of the latest epoch, optimiser state included) and
``state.json`` (epochs done, best score), plus ``log.csv`` and TensorBoard
logs in ``logs/``. With ``ema_momentum``, validation and ``best.keras`` use the
moving average of the weights (:mod:`segzoo.weight_average`), and so does the
model :func:`train` returns; ``last.keras`` holds the weights being trained and
``average.npz`` their average. ``resume=True`` reloads ``last.keras`` and continues at the
next epoch: weights, optimiser moments, step counter and so the learning-rate
schedule all continue where the interrupted run stopped.

Devices: one (default); every GPU of one machine with TensorFlow's
``MirroredStrategy`` (``multi_gpu``); or, on the JAX backend, every device of
one or several machines with ``keras.distribution`` (``distributed``, see
:mod:`segzoo.distributed`). ``batch_size`` is always per device: the global
batch is ``batch_size x devices``, and ``learning_rate`` is the rate for one
device's batch, multiplied by the number of devices (the linear scaling rule;
``scale_learning_rate=False`` keeps it as given). With ``distributed``, each
process reads its own shard of the data, and only process 0 writes
checkpoints and logs and prints progress, into a ``checkpoint_dir`` that every
process can read (``resume`` loads ``last.keras`` in all of them).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import shutil

import keras

from segzoo import distributed, losses, postprocess, presets
from segzoo.constants import IGNORE_INDEX
from segzoo.files import PARTIAL_PREFIX, atomic_write, check_output, check_writable, file_digest, write_json
from segzoo.metrics import MeanIoU
from segzoo.models import check_keras_file, load_model
from segzoo.checkpoints.torch_file import CheckpointError
from segzoo.errors import ConfigError, OutputExistsError, option, switch
from segzoo.configs import AUTO_CLASS_WEIGHTS, OPTIMIZERS, TrainConfig
from segzoo.schedules import WarmupDecay
from segzoo.settings import check_settings
from segzoo.time_budget import TimeBudget
from segzoo.weight_average import WeightAverage

logger = logging.getLogger(__name__)

BINARY_LOSSES = ("bce", "binary_focal")

BEST_CHECKPOINT = "best.keras"
LAST_CHECKPOINT = "last.keras"
STATE_FILE = "state.json"
CONFIG_FILE = "config.json"
MONITOR = "val_mean_iou"
#: What a fresh run with overwrite=True deletes from checkpoint_dir first.
#: The moving average of the weights (``ema_momentum``), beside ``last.keras``.
AVERAGE_FILE = "average.npz"
RUN_FILES = (LAST_CHECKPOINT, BEST_CHECKPOINT, STATE_FILE, CONFIG_FILE, AVERAGE_FILE, "log.csv", "logs")


def resolve_class_weights(value, report=None):
    """``TrainConfig.class_weights`` as the loss takes it: ``None``, or one float per class.

    ``"auto"`` (or ``("auto",)``) takes the median-frequency weights of
    ``report`` (:func:`segzoo.data.inspection.check_training_data`);
    ``"sqrt"`` their square roots, a milder balance: on CamVid the full
    weights span 60x and make a model paint rare classes (pole, sign,
    pedestrian) over buildings, which costs more IoU than it gains.
    """
    if value is None:
        return None
    values = [value] if isinstance(value, str) else list(value)
    words = [v.strip().lower() for v in values if isinstance(v, str) and v.strip().lower() in AUTO_CLASS_WEIGHTS]
    if not words:
        return tuple(float(v) for v in values)
    if len(values) != 1:
        raise ConfigError(f"class_weights {values}: '{words[0]}' stands alone (or give one number per class).")
    power = AUTO_CLASS_WEIGHTS[words[0]]
    return tuple(round(w ** power, 4) for w in report.class_weights)


def make_loss(name, num_classes, ignore_index=IGNORE_INDEX, class_weights=None, ohem_threshold=None,
              ohem_min_kept=100000, focal_gamma=2.0, focal_alpha=None):
    """The loss called ``name`` with the options that apply to it; others must be left unset."""
    if name in BINARY_LOSSES:
        if class_weights or ohem_threshold is not None:
            raise ValueError(f"loss {name!r} takes no class_weights or OHEM options.")
        if name == "bce":
            return losses.get(name, ignore_index=ignore_index)
        alpha = 0.25 if focal_alpha is None else focal_alpha
        return losses.get(name, ignore_index=ignore_index, gamma=focal_gamma, alpha=alpha)
    if class_weights is not None and len(class_weights) != num_classes:
        raise ValueError(f"class_weights has {len(class_weights)} values for {num_classes} classes.")
    if name == "ce":
        return losses.get(name, ignore_index=ignore_index,
                          class_weights=list(class_weights) if class_weights else None,
                          ohem_threshold=ohem_threshold, ohem_min_kept=ohem_min_kept)
    if name == "focal":
        if ohem_threshold is not None:
            raise ValueError("OHEM applies to loss 'ce' only.")
        alpha = list(class_weights) if class_weights else focal_alpha
        return losses.get(name, ignore_index=ignore_index, gamma=focal_gamma, alpha=alpha)
    return losses.get(name)  # raises, listing the valid names


def make_optimizer(name, schedule, momentum=0.9, weight_decay=0.0):
    """An optimiser over a learning-rate ``schedule`` with decoupled weight decay.

    Weight decay (``w -= lr * weight_decay * w`` at every step) applies to every
    weight, batch-norm parameters included, as in the official DDRNet recipe.
    """
    weight_decay = weight_decay or None
    if name == "sgd":
        return keras.optimizers.SGD(schedule, momentum=momentum, nesterov=False, weight_decay=weight_decay)
    if name == "adam":
        return keras.optimizers.Adam(schedule, weight_decay=weight_decay)
    if name == "adamw":
        return keras.optimizers.AdamW(schedule, weight_decay=weight_decay or 0.0)
    raise ValueError(f"Unknown optimizer {name!r}; choose one of {OPTIMIZERS}.")


class _RunState(keras.callbacks.Callback):
    """After every epoch, saves ``best.keras`` (when the score improved), ``last.keras`` and ``state.json``.

    With a :class:`segzoo.weight_average.WeightAverage` (``average``), ``best.keras`` holds the averaged
    weights, which validation scored, ``last.keras`` the weights being trained, and ``average.npz`` the average.

    Every file is written atomically, in an order that a kill at any moment
    leaves resumable (see :func:`read_run_state`): both checkpoints are
    written to temporary files and hashed; ``state.json`` then names them as
    ``pending``; ``best.keras`` and then ``last.keras`` are moved into place;
    finally ``state.json`` names them as done.
    """

    def __init__(self, directory, state=None, average=None):
        super().__init__()
        self.directory = directory
        self.average = average
        state = dict(state or {})
        state.pop("pending", None)
        self.state = state
        self.best = -math.inf if state.get("best") is None else float(state["best"])

    def _write_state(self, state):
        write_json(os.path.join(self.directory, STATE_FILE), state)

    def on_epoch_end(self, epoch, logs=None):
        score = (logs or {}).get(MONITOR)
        improved = score is not None and math.isfinite(float(score)) and float(score) > self.best
        done = {"epochs_done": epoch + 1, "monitor": MONITOR,
                "best": float(score) if improved else (None if math.isinf(self.best) else self.best),
                "last_sha256": None, "best_sha256": self.state.get("best_sha256")}
        with distributed.without_distribution():
            with atomic_write(os.path.join(self.directory, LAST_CHECKPOINT)) as last:
                with contextlib.ExitStack() as stack:
                    if improved:
                        best = stack.enter_context(atomic_write(os.path.join(self.directory, BEST_CHECKPOINT)))
                        with self.average.applied() if self.average is not None else contextlib.nullcontext():
                            self.model.save(best)
                        done["best_sha256"] = file_digest(best)
                    if self.average is not None:
                        average = stack.enter_context(atomic_write(os.path.join(self.directory, AVERAGE_FILE)))
                        self.average.save(average)
                        done["average_sha256"] = file_digest(average)
                    self.model.save(last)
                    done["last_sha256"] = file_digest(last)
                    self._write_state({**self.state, "pending": done})
        if improved:
            self.best = float(score)
        self.state = done
        self._write_state(done)


def _read_json(path, what):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except ValueError as error:
        raise CheckpointError(f"{path}: the {what} is not readable JSON ({error}); it was damaged. Restore "
                              f"it, or start a new run with {switch('overwrite')}.") from error


def read_run_state(directory):
    """Check the run saved in ``directory`` and return its state (``epochs_done``, ``best``, ...).

    ``last.keras`` must be a complete ``.keras`` file and the one ``state.json``
    names (by SHA-256), or the one it names as being saved when the run was
    stopped (then that epoch counts as done); ``best.keras``, when present,
    likewise.

    Raises:
        FileNotFoundError: nothing to resume.
        CheckpointError: saying which file is wrong and how: empty, truncated,
            or not the one the state names.
    """
    path = os.path.join(directory, STATE_FILE)
    last = os.path.join(directory, LAST_CHECKPOINT)
    if not (os.path.isfile(path) and os.path.isfile(last)):
        missing = " and ".join(name for name, file in ((STATE_FILE, path), (LAST_CHECKPOINT, last))
                               if not os.path.isfile(file))
        raise FileNotFoundError(f"resume: no {missing} in {directory}; nothing to resume. Drop --resume to "
                                f"start a new run.")
    saved = _read_json(path, "run state")
    check_keras_file(last)
    state, pending = saved, saved.get("pending") or {}
    # runs saved before checkpoints were hashed are taken as they are; a run killed while saving its
    # first epoch has only the pending state
    if saved.get("last_sha256") or pending.get("last_sha256"):
        digest = file_digest(last)
        if digest == pending.get("last_sha256"):
            logger.info("%s: the run stopped while saving epoch %d; that epoch is complete.", directory,
                        pending["epochs_done"])
            state = pending
        elif digest != saved.get("last_sha256"):
            raise CheckpointError(f"{last} is not the checkpoint {STATE_FILE} names for epoch "
                                  f"{saved.get('epochs_done', pending.get('epochs_done'))} (its SHA-256 differs): "
                                  f"it was replaced or changed after the run wrote it. Restore it, or start a new "
                                  f"run with {switch('overwrite')}.")
    state = {key: value for key, value in state.items() if key != "pending"}
    best = os.path.join(directory, BEST_CHECKPOINT)
    if os.path.exists(best):
        check_keras_file(best)
        known = {saved.get("best_sha256"): saved.get("best"),
                 (saved.get("pending") or {}).get("best_sha256"): (saved.get("pending") or {}).get("best")}
        if saved.get("last_sha256") and state.get("best_sha256"):
            digest = file_digest(best)
            if digest not in known:
                raise CheckpointError(f"{best} is not the best checkpoint {STATE_FILE} names (its SHA-256 "
                                      f"differs): it was replaced or changed. Restore it, or delete it to "
                                      f"resume (the best score then starts anew).")
            state.update(best_sha256=digest, best=known[digest])
    elif state.get("best_sha256"):
        state.update(best=None, best_sha256=None)
        logger.warning("%s: %s is gone; the best score starts anew.", directory, BEST_CHECKPOINT)
    return state


def _no_epoch_saved(directory) -> bool:
    """Whether ``directory`` holds a run killed while saving its first epoch, before ``last.keras`` was in
    place: a ``state.json`` that names no finished epoch, and no ``last.keras``. Nothing there to keep."""
    try:
        with open(os.path.join(directory, STATE_FILE), encoding="utf-8") as f:
            state = json.load(f)
    except (OSError, ValueError):
        return False
    return "epochs_done" not in state and not os.path.exists(os.path.join(directory, LAST_CHECKPOINT))


def _check_new_run(directory, overwrite=False):
    # a config.json alone is a run killed before its first epoch was saved: nothing to keep
    existing = [f for f in (LAST_CHECKPOINT, BEST_CHECKPOINT, STATE_FILE) if os.path.exists(os.path.join(directory, f))]
    if existing and _no_epoch_saved(directory):
        logger.info("%s: a run stopped while saving its first epoch; starting anew.", directory)
    elif existing and not overwrite:
        raise OutputExistsError(f"{directory} already holds a run ({', '.join(existing)}). Pass resume=True "
                                f"(--resume) to continue it, {switch('overwrite')} to delete it and start anew, "
                                f"or choose another checkpoint_dir.")
    for name in RUN_FILES if existing else ():
        path = os.path.join(directory, name)
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.remove(path)


#: Fields that may differ on ``resume`` without ``allow_changes``: where and how the run
#: executes, not what it computes.
HARMLESS_FIELDS = ("data", "images", "checkpoint_dir", "resume", "allow_changes", "overwrite", "progress",
                   "multi_gpu", "gpu", "distributed", "coordinator_address", "coordinator_port", "num_processes",
                   "process_id", "cache", "deterministic")
#: Fields that ``last.keras`` fixes (the model, its loss, its optimiser and schedule): a resume
#: cannot change them, even with ``allow_changes``.
CHECKPOINT_FIELDS = ("preset", "weights", "loss", "class_weights", "ohem_threshold", "ohem_min_kept", "focal_gamma",
                     "focal_alpha", "aux_loss_weight", "optimizer", "learning_rate", "schedule", "warmup_epochs",
                     "poly_power", "end_learning_rate_ratio", "momentum", "weight_decay", "ema_momentum",
                     "precision", "scale_learning_rate")


def _jsonable(value):
    return json.loads(json.dumps(value))


def run_record(config, fingerprint, class_names):
    """What ``config.json`` of a run holds: the resolved :class:`TrainConfig` and the data's fingerprint."""
    return _jsonable({"config": dataclasses.asdict(config), "data": fingerprint, "class_names": list(class_names)})


#: Fields a resumed run does not take from the saved ``config.json``: they say how this
#: invocation runs (and, in a cluster, which process it is), not what the run computes.
INVOCATION_FIELDS = ("resume", "allow_changes", "overwrite", "gpu", "coordinator_address", "coordinator_port",
                     "num_processes", "process_id")


def saved_settings(directory) -> dict:
    """The settings of the run saved in ``directory`` (its ``config.json``), less :data:`INVOCATION_FIELDS`.

    What ``segzoo train --resume`` starts from, so that a run resumes with only
    ``--checkpoint_dir`` and ``--resume``. ``{}`` when the folder has no
    ``config.json``; settings of an older segzoo that no longer exist are left out.
    """
    path = os.path.join(directory, CONFIG_FILE)
    if not os.path.isfile(path):
        return {}
    saved = _read_json(path, "run configuration").get("config", {})
    known = {f.name for f in dataclasses.fields(TrainConfig)} - set(INVOCATION_FIELDS)
    dropped = sorted(set(saved) - known - set(INVOCATION_FIELDS))
    if dropped:
        logger.warning("%s: settings no longer known are left out: %s", path, ", ".join(dropped))
    return check_settings({name: value for name, value in saved.items() if name in known}, TrainConfig, path)


def _differences(saved, config, fingerprint):
    """``[(name, saved value, new value)]`` between a saved run record and this run."""
    new = _jsonable(dataclasses.asdict(config))
    old = saved.get("config", {})
    changes = [(name, old.get(name), new[name]) for name in new
               if name not in HARMLESS_FIELDS and name in old and old.get(name) != new[name]]
    old_data = saved.get("data") or {}
    for key in sorted(set(old_data) | set(fingerprint)):
        if old_data.get(key) != fingerprint.get(key):
            changes.append((f"data {key}", old_data.get(key), fingerprint.get(key)))
    return changes


def _check_resume(directory, config, fingerprint, class_names, model_classes):
    """Refuse a resume whose settings, data or classes differ from the saved run's (see :class:`TrainConfig`)."""
    path = os.path.join(directory, CONFIG_FILE)
    expected = 1 if config.loss in BINARY_LOSSES else len(class_names)  # binary losses: one sigmoid output
    if model_classes != expected:
        raise ConfigError(f"resume: {directory}/{LAST_CHECKPOINT} has {model_classes} output class(es), but the data "
                          f"{config.data} has {len(class_names)} classes {list(class_names)}. A checkpoint cannot "
                          f"train on another number of classes: start a new run (another checkpoint_dir).")
    if not os.path.isfile(path):
        logger.warning("%s: no %s (a run from an older segzoo); the settings of the resumed run are not "
                       "checked.", directory, CONFIG_FILE)
        return
    saved = _read_json(path, "run configuration")
    changes = _differences(saved, config, fingerprint)
    if list(saved.get("class_names", class_names)) != list(class_names):
        changes.append(("class_names", saved.get("class_names"), list(class_names)))
    if not changes:
        return
    listed = "\n  ".join(f"{name}: {old!r} -> {new!r}" for name, old, new in changes)
    fixed = [name for name, _, _ in changes if name in CHECKPOINT_FIELDS]
    if fixed:
        raise ConfigError(f"resume: {', '.join(fixed)} cannot change on resume: {LAST_CHECKPOINT} holds the model, its "
                          f"loss and its optimiser with its schedule, which would ignore the new values. Differences "
                          f"from the saved run:\n  {listed}\nDrop those flags, or start a new run in another "
                          f"checkpoint_dir.")
    if not config.allow_changes:
        raise ConfigError(f"resume: the settings or data differ from the run saved in {directory}:\n  {listed}\n"
                          f"Drop the changed flags, or pass {switch('allow_changes')} if the change is deliberate "
                          f"(e.g. more epochs).")
    logger.warning("resume with changes (allow_changes):\n  %s", listed)


def check_config(config: TrainConfig):
    """Refuse settings of ``config`` that cannot work together, before any work: raises :class:`ConfigError`."""
    if config.distributed and config.time_budget is not None:
        raise ConfigError("--time_budget fits one process's run; with --distributed set --epochs instead.")
    if config.warmup_epochs > config.epochs:
        raise ConfigError(f"{option('warmup_epochs', config.warmup_epochs)} is longer than the run "
                          f"({option('epochs', config.epochs)}): the learning rate would never reach its peak. "
                          f"Lower {option('warmup_epochs')} (0 turns the warm-up off) or raise {option('epochs')}.")
    if config.ema_momentum is not None and not 0 < config.ema_momentum < 1:
        raise ConfigError(f"{option('ema_momentum', config.ema_momentum)}: the momentum of a moving average lies "
                          f"between 0 and 1 (e.g. {option('ema_momentum', 0.999)}, an average over about 1000 "
                          f"steps); leave it out to train without one.")
    if config.ema_momentum is not None and config.distributed:
        raise ConfigError(f"{option('ema_momentum')} keeps the average in one process's memory; with "
                          f"--distributed leave it out.")
    if config.crop_size and min(config.crop_size) < 1:
        raise ConfigError(f"{option('crop_size', ' '.join(str(s) for s in config.crop_size))}: a training crop needs "
                          f"a positive height and width, e.g. {option('crop_size', '192 256')}.")


def train(config: TrainConfig):
    """Train a model as ``config`` says; returns ``(model, history)``.

    ``history`` maps each logged metric to its values per epoch (this call's
    epochs only when resuming; ``log.csv`` holds the whole run).
    """
    from segzoo import data

    check_config(config)
    run = distributed.start_run(config.distributed, config.multi_gpu, config.gpu, config.coordinator_address,
                                config.coordinator_port, config.num_processes, config.process_id)
    keras.utils.set_random_seed(config.seed)
    if config.precision != "float32":
        keras.mixed_precision.set_global_policy(config.precision)
    state = _open_run_folder(config, run)
    prepared = run.chief_first(lambda: data.prepare_source(  # a CVAT export is imported once, by process 0
        config.data, images=config.images, binary=config.binary,
        import_dir=os.path.join(config.checkpoint_dir, "dataset")))
    with data.open_source(prepared, data_dir=config.data_dir, val_ratio=config.val_ratio, seed=config.seed,
                          label_values=config.label_values) as source:
        data.scan_labels(source)  # labels that cannot be right fail here, with file names, before the first step
        train_ds, val_ds = _pipelines(config, source, run, resumed=state is not None)
        steps_per_epoch = config.steps_per_epoch or max(source.info.split_sizes["train"] // _global_batch(config, run),
                                                        1)
        fingerprint = data.data_fingerprint(config.data, config.images)
        with run.scope():
            if state is None:
                model, schedule = _new_model(config, source.info, fingerprint, steps_per_epoch, run)
            else:
                model, schedule = _resumed_model(config, state, source.info, fingerprint, run), None
        callbacks, epochs = _callbacks(config, run, state, model, schedule, steps_per_epoch, source.info)
        history = model.fit(train_ds, validation_data=val_ds, epochs=epochs,
                            initial_epoch=state["epochs_done"] if state is not None else 0,
                            steps_per_epoch=steps_per_epoch,
                            callbacks=callbacks, verbose=config.progress if run.is_chief else 0,
                            shuffle=False)  # the tf.data pipeline shuffles
        run.barrier("segzoo: training done")  # every process returns once process 0 wrote the last checkpoint
    return model, history.history


def _global_batch(config, run) -> int:
    """Images per optimiser step over every device: ``batch_size`` is per device."""
    return config.batch_size * run.num_devices


def _learning_rate(config, run) -> float:
    """The peak learning rate: ``learning_rate`` for one device's batch, times the devices (linear scaling)."""
    return config.learning_rate * (run.num_devices if config.scale_learning_rate else 1)


def _open_run_folder(config, run):
    """Check ``checkpoint_dir`` and, with ``resume``, read the run to continue: its state, or ``None`` for a new run."""
    if config.data is None:
        raise ValueError("No data: give an rgb/ + gt/ folder, a CVAT export or a TFDS dataset name.")
    check_output(config.checkpoint_dir, inputs=(config.data, config.images), overwrite=True, name="checkpoint_dir")
    if run.is_chief:
        check_writable(config.checkpoint_dir, "checkpoint_dir")
        _remove_partial_files(config.checkpoint_dir)
    state = read_run_state(config.checkpoint_dir) if config.resume else None
    if state is None and run.is_chief:
        _check_new_run(config.checkpoint_dir, config.overwrite)
    return state


def _pipelines(config, source, run, resumed):
    """The training and validation ``tf.data`` pipelines of ``source`` for this process; logs the data."""
    from segzoo import data

    options = dict(batch_size=config.batch_size * run.num_local_devices, image_size=tuple(config.image_size),
                   num_classes=source.info.num_classes, seed=config.seed, cache=config.cache,
                   deterministic=config.deterministic, **run.data_shard())
    # Processes in step (data parallel on JAX) run the same number of steps: validation is filled up to
    # full batches in every process.
    crop_size = tuple(config.crop_size) if config.crop_size else None
    if crop_size and not config.augment and run.is_chief:  # e.g. a recipe's crop, augmentation turned off
        logger.warning("%s applies to the online augmentation, which is off: training on whole images at "
                       "%s", option("crop_size"), option("image_size", tuple(config.image_size)))
    augment = data.OnlineAugment(scale_range=tuple(config.scale_range), crop_size=crop_size) if config.augment else None
    # One endless training stream (reshuffled every pass) read by a single iterator for the whole run: a
    # finite pipeline ends its iterator every epoch, and that waits for the iterator's worker threads,
    # which cost 18 s an epoch on one slow core (a third of the quickstart's epoch). It also keeps
    # processes in step (a fixed number of steps per epoch) and uses the images a batch would drop.
    train_ds = data.load(source, "train", shuffle=True, repeat=True, augment=augment, drop_remainder=True,
                         **options)
    val_ds = data.load(source, "validation", shuffle=False, pad_remainder=True, **options)
    if run.is_chief:
        info = source.info
        logger.info("%s: %d classes %s, %d training and %d validation images, global batch %d on %d device(s)%s",
                    source, info.num_classes, info.class_names, info.split_sizes.get("train", -1),
                    info.split_sizes.get("validation", -1), _global_batch(config, run), run.num_devices,
                    "" if resumed else f", peak learning rate {_learning_rate(config, run):g}")
    return train_ds, val_ds


def _new_model(config, info, fingerprint, steps_per_epoch, run):
    """A compiled model of ``config.preset`` for a new run, and its learning-rate schedule; records the run."""
    from segzoo import data

    single_logit = config.loss in BINARY_LOSSES  # one sigmoid output, not a softmax over the classes
    if single_logit and config.class_weights is not None:
        raise ConfigError(f"class_weights apply to the losses ce and focal, not {config.loss!r}.")
    # log what is likely a mistake in the data (never an error)
    report = data.check_training_data(config.data, images=config.images, binary=config.binary,
                                      data_dir=config.data_dir, val_ratio=config.val_ratio, seed=config.seed,
                                      log=run.is_chief)
    class_weights = resolve_class_weights(config.class_weights, report)
    if run.is_chief and config.class_weights is not None:
        logger.info("class weights: %s", " ".join(f"{w:g}" for w in class_weights))
    weights = None if str(config.weights).lower() == "none" else config.weights
    model = presets.from_name(config.preset, num_classes=1 if single_logit else info.num_classes, weights=weights,
                              aux_loss_weight=config.aux_loss_weight)
    names = postprocess.output_class_names(model.num_classes, info.class_names)
    model.set_classes(names, info.colors[:len(names)])
    total_steps = config.epochs * steps_per_epoch
    span = 1 / (1 - config.ema_momentum) if config.ema_momentum is not None else 0
    if run.is_chief and span > total_steps / 4:
        advice = (f"Lower it: {option('ema_momentum', round(1 - 10 / total_steps, 4))} spans a tenth of the run."
                  if total_steps > 20 else f"The run is too short for an average: leave {option('ema_momentum')} out.")
        logger.warning("%s averages over about %d steps, more than a quarter of the run's %d: the average will "
                       "weigh the first, barely trained steps heavily. %s",
                       option("ema_momentum", config.ema_momentum), round(span), total_steps, advice)
    schedule = WarmupDecay(_learning_rate(config, run), total_steps=total_steps,
                           warmup_steps=int(config.warmup_epochs * steps_per_epoch), kind=config.schedule,
                           power=config.poly_power, end_ratio=config.end_learning_rate_ratio)
    model.compile(
        optimizer=make_optimizer(config.optimizer, schedule, config.momentum, config.weight_decay),
        loss=make_loss(config.loss, info.num_classes, class_weights=class_weights,
                       ohem_threshold=config.ohem_threshold, ohem_min_kept=config.ohem_min_kept,
                       focal_gamma=config.focal_gamma, focal_alpha=config.focal_alpha),
        metrics=[MeanIoU(num_classes=2 if single_logit else info.num_classes, name="mean_iou")],
    )
    if run.is_chief:
        write_json(os.path.join(config.checkpoint_dir, CONFIG_FILE), run_record(config, fingerprint, info.class_names))
    return model, schedule


def _resumed_model(config, state, info, fingerprint, run):
    """The model of ``last.keras``, checked against ``config`` and the data (see :func:`_check_resume`)."""
    model = load_model(os.path.join(config.checkpoint_dir, LAST_CHECKPOINT))
    _check_resume(config.checkpoint_dir, config, fingerprint, info.class_names, model.num_classes)
    if run.is_chief:
        logger.info("Resuming after epoch %d (optimizer step %d)", state["epochs_done"],
                    int(model.optimizer.iterations))
    return model


def _callbacks(config, run, state, model, schedule, steps_per_epoch, info):
    """The callbacks of ``fit`` (checkpoints and logs on process 0, the time budget) and the epochs to run to.

    ``schedule``: the new run's learning-rate schedule, which a time budget shortens; ``None`` when resuming.
    """
    average = _weight_average(config, state) if config.ema_momentum is not None else None
    callbacks = [average] if average is not None else []  # first: validation and checkpoints see the average
    callbacks += _chief_callbacks(config.checkpoint_dir, state, average) if run.is_chief else []
    if config.time_budget is None:
        return callbacks, config.epochs
    validation_steps = -(-info.split_sizes.get("validation", 0) // _global_batch(config, run))
    callbacks.append(TimeBudget(config.time_budget * 60, steps_per_epoch, validation_steps, config.epochs,
                                schedule=schedule))
    planned = (model.optimizer.get_config().get("learning_rate") or {}) if state is not None else {}
    if isinstance(planned, dict) and "total_steps" in planned.get("config", {}):
        # a resumed run fitted to a time budget continues to the end of its shortened schedule
        return callbacks, min(config.epochs, -(-planned["config"]["total_steps"] // steps_per_epoch))
    return callbacks, config.epochs


def _remove_partial_files(directory):
    """Delete the temporary files a killed run left in ``directory`` (see :func:`segzoo.files.atomic_write`)."""
    for name in os.listdir(directory):
        if name.startswith(PARTIAL_PREFIX):
            path = os.path.join(directory, name)
            shutil.rmtree(path, ignore_errors=True) if os.path.isdir(path) else os.remove(path)


def _weight_average(config, state):
    """The :class:`WeightAverage` of a run; a resumed run continues the average it saved with its last epoch."""
    average = WeightAverage(config.ema_momentum)
    path = os.path.join(config.checkpoint_dir, AVERAGE_FILE)
    if state is None:
        return average
    if os.path.isfile(path) and state.get("average_sha256") == file_digest(path):
        average.resume_from = path
    else:  # a run saved without one, or stopped between writing the average and last.keras
        logger.warning("%s: no average of the weights saved with epoch %d; the average starts anew from its "
                       "weights.", config.checkpoint_dir, state["epochs_done"])
    return average


def _chief_callbacks(directory, state, average=None):
    """Checkpoints (best, last, state, the weight ``average``), CSV and TensorBoard logs into ``directory``;
    ``state`` of a resumed run."""
    return [
        _RunState(directory, state, average),
        keras.callbacks.CSVLogger(os.path.join(directory, "log.csv"), append=state is not None),
        keras.callbacks.TensorBoard(os.path.join(directory, "logs")),
    ]
