"""What each job can be told: its settings as dataclasses, and the names its options take.

:class:`TrainConfig` (``segzoo train``) and :class:`QuickstartConfig` (``segzoo
quickstart``) declare one flag per field (:func:`segzoo.settings.config_field`);
the tuples below are the names of the optimisers, schedules, precisions,
runtimes, export formats and convertible presets that the library checks and
the command line offers as choices. This module imports neither Keras nor
TensorFlow, so the command line builds its parsers, and answers ``--help`` or a
mistyped flag, before TensorFlow loads. The modules that act on these names
import them from here.
"""

from __future__ import annotations

import dataclasses

from segzoo.settings import config_field as _field

__all__ = ["AUTO_CLASS_WEIGHTS", "CONVERTIBLE_PRESETS", "FORMATS", "OPTIMIZERS", "OUTPUTS", "PRECISIONS",
           "PREDICTOR_RUNTIMES", "QUANTIZATIONS", "QuickstartConfig", "RUNTIMES", "SCHEDULES", "TrainConfig"]

#: Optimisers of :func:`segzoo.training.make_optimizer`.
OPTIMIZERS = ("sgd", "adam", "adamw")
#: Learning-rate decays of :class:`segzoo.schedules.WarmupDecay`.
SCHEDULES = ("poly", "cosine", "constant")
#: Keras dtype policies training takes.
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
#: What runs a model's forward pass (:func:`segzoo.runtime.make_forward`).
RUNTIMES = ("keras", "keras-xla", "keras-mixed16", "litert", "litert-int8", "onnx", "onnx-int8", "onnx-tensorrt")
#: The runtimes of live prediction and evaluation: :data:`RUNTIMES` and ``auto``, the fastest of them here.
PREDICTOR_RUNTIMES = ("auto", *RUNTIMES)
#: Export formats, quantisations and outputs of :func:`segzoo.export.export_model`.
FORMATS = ("saved_model", "litert", "onnx")
QUANTIZATIONS = ("none", "float16", "int8")
OUTPUTS = ("logits", "probabilities", "classes")
#: The presets whose authors published checkpoints (``segzoo convert``): the keys of
#: :data:`segzoo.weights.OFFICIAL_CHECKPOINTS`, which live beside the name maps that need Keras.
CONVERTIBLE_PRESETS = ("ddrnet23_slim", "ddrnet23", "ddrnet39", "pidnet_s", "pidnet_m", "pidnet_l")
#: The automatic class weightings, by the power of the median-frequency weights they take (``sqrt``: milder).
AUTO_CLASS_WEIGHTS = {"auto": 1.0, "sqrt": 0.5}


def _class_weight_value(text):
    """One ``--class_weights`` value: a number, ``auto`` or ``sqrt``."""
    word = str(text).strip().lower()
    return word if word in AUTO_CLASS_WEIGHTS else float(text)


@dataclasses.dataclass
class TrainConfig:
    """Everything a training run needs; each field is a flag of ``examples/train.py``."""

    data: str = _field(None, "an rgb/ + gt/ folder or zip, a CVAT export (folder or .zip) or a built TFDS dataset name")
    label_values: tuple[int, ...] = _field(None, "rgb/ + gt/ data: the stored label value of each class in order, "
                                                  "e.g. 0 255 for binary masks stored as 0/255")
    preset: str = _field("ddrnet23_slim", "model name, see segzoo.presets.list_presets()")
    images: str = _field(None, "CVAT export saved without images: the folder of the original images")
    data_dir: str = _field(None, "TFDS data directory, for a TFDS dataset name")
    epochs: int = _field(100, "epochs to train")
    time_budget: float = _field(None, "minutes for training: after a few steps, fit the number of epochs (at most "
                                      "--epochs) and the learning-rate schedule to this budget; says what it chose")
    batch_size: int = _field(8, "images per batch on each device (the global batch is this x devices)")
    image_size: tuple[int, int] = _field((480, 640), "height and width the random scale is relative to, and of "
                                                     "validation; the training crop too unless --crop_size is "
                                                     "given; multiples of the model's divisor",
                                   metavar=("H", "W"))
    crop_size: tuple[int, int] = _field(None, "height and width of the training crop, cut from the image scaled "
                                              "relative to --image_size (default: --image_size); smaller crops "
                                              "make more steps fit a time budget; multiples of the model's divisor",
                                        metavar=("H", "W"))
    steps_per_epoch: int = _field(None, "steps per epoch (default: one pass over the training split)")
    weights: str = _field("imagenet", "'imagenet' (pretrained backbone), 'none', or a .weights.h5 file")
    loss: str = _field("ce", "ce, focal, bce or binary_focal (the last two train a 1-channel sigmoid model)")
    class_weights: tuple[float, ...] = _field(None, "per-class loss weights, one per class; 'auto': median-"
                                                    "frequency weights of the training split (segzoo inspect "
                                                    "prints them); 'sqrt': their square roots, milder",
                                          type=_class_weight_value)
    ohem_threshold: float = _field(None, "OHEM: keep pixels whose true-class probability is below this (e.g. 0.9)")
    ohem_min_kept: int = _field(100000, "OHEM: keep at least this many pixels per batch")
    focal_gamma: float = _field(2.0, "focal losses: gamma")
    focal_alpha: float = _field(None, "focal losses: alpha (binary focal default 0.25)")
    aux_loss_weight: float = _field(0.4, "weight of the auxiliary head's loss (DDRNet); 0 turns it off")
    optimizer: str = _field("adamw", "sgd, adam or adamw", choices=OPTIMIZERS)
    learning_rate: float = _field(1e-3, "peak learning rate")
    schedule: str = _field("poly", "learning-rate decay: poly, cosine or constant", choices=SCHEDULES)
    warmup_epochs: float = _field(1.0, "epochs of linear warm-up")
    poly_power: float = _field(0.9, "exponent of the polynomial decay")
    end_learning_rate_ratio: float = _field(0.01, "final learning rate as a fraction of the peak")
    momentum: float = _field(0.9, "SGD momentum")
    weight_decay: float = _field(1e-4, "decoupled weight decay, applied to every weight at every step")
    ema_momentum: float = _field(None, "keep an exponential moving average of the weights with this momentum "
                                       "(e.g. 0.999: it spans about 1 / (1 - momentum) steps); validation, "
                                       "best.keras and the trained model use the average")
    precision: str = _field("float32", "float32, mixed_float16 or mixed_bfloat16", choices=PRECISIONS)
    augment: bool = _field(True, "online augmentation: random scale and crop, flip, colour jitter")
    scale_range: tuple[float, float] = _field((0.5, 2.0), "online augmentation: random scale range")
    cache: bool = _field(False, "cache decoded images in memory")
    val_ratio: float = _field(0.1, "validation fraction when the data has no split lists")
    binary: bool = _field(False, "CVAT import: merge every foreground class into one")
    checkpoint_dir: str = _field("runs/train", "folder for checkpoints and logs")
    resume: bool = _field(False, "continue the run saved in checkpoint_dir")
    allow_changes: bool = _field(False, "--resume: accept settings or data that differ from the saved run's "
                                        "(e.g. more epochs); without it such a resume is refused")
    overwrite: bool = _field(False, "a new run in a checkpoint_dir that holds one: delete that run first")
    multi_gpu: bool = _field(False, "train on every visible GPU with MirroredStrategy (TensorFlow)")
    gpu: int = _field(None, "train on this GPU only")
    distributed: bool = _field(False, "data parallel on every device of every process with JAX keras.distribution "
                                      "(needs KERAS_BACKEND=jax); one machine or a cluster")
    coordinator_address: str = _field(None, "--distributed, several processes: host:port of process 0; unset: "
                                            "$SEGZOO_COORDINATOR_ADDRESS, or SLURM's first node")
    coordinator_port: int = _field(None, "--distributed: port of a coordinator host given without one, e.g. SLURM's "
                                         "first node; unset: $SEGZOO_COORDINATOR_PORT, else 61440 + SLURM_JOB_ID "
                                         "mod 4096")
    num_processes: int = _field(None, "--distributed: processes in the run, one per machine; unset: "
                                      "$SEGZOO_NUM_PROCESSES or SLURM_NTASKS, else 1")
    process_id: int = _field(None, "--distributed: this process's index, 0 to num_processes - 1; unset: "
                                   "$SEGZOO_PROCESS_ID, SLURM_PROCID or JOB_COMPLETION_INDEX")
    scale_learning_rate: bool = _field(True, "learning_rate is for one device's batch: on several devices "
                                             "(--multi_gpu, --distributed) multiply it by their number")
    seed: int = _field(0, "random seed")
    deterministic: bool = _field(False, "deterministic input pipeline (slower)")
    progress: int = _field(1, "Keras progress output: 0 silent, 1 progress bar, 2 one line per epoch")


@dataclasses.dataclass
class QuickstartConfig:
    """Options of the quickstart; each field is a flag of ``examples/quickstart.py``."""

    out: str = _field("segzoo_quickstart", "report folder")
    cvat: str = _field(None, "your CVAT export (folder or .zip) instead of the generated sample")
    images: str = _field(None, "with --cvat: the original images of an export saved without images")
    video: str = _field(None, "a video to predict on (default: the sample's video)")
    preset: str = _field("ddrnet23_slim", "model, see segzoo.presets.list_presets()")
    image_size: tuple[int, int] = _field((240, 320), "evaluation height and width, and the size the training "
                                                     "images are randomly scaled around", metavar=("H", "W"))
    crop_size: tuple[int, int] = _field(None, "training crop height and width (default: 4/5 of --image_size on each "
                                              "side, multiples of 32: 0.64 of the pixels, a step about 0.6 of a whole "
                                              "image's, so more steps fit the budget); a --crop_size equal to "
                                              "--image_size trains on whole images",
                                        metavar=("H", "W"))
    num_images: int = _field(64, "sample: labelled images to generate")
    heldout_images: int = _field(16, "sample: unseen images to evaluate on")
    copies: int = _field(3, "offline augmentation: copies of each image")
    epochs: int = _field(24, "training epochs (at most: --time_budget may choose fewer)")
    time_budget: float = _field(10.0, "minutes for the whole run: training gets what the other steps leave and "
                                      "fits its epochs to that after timing a few steps; 0 turns this off")
    batch_size: int = _field(8, "training batch size")
    learning_rate: float = _field(2e-3, "peak learning rate (AdamW, polynomial decay)")
    binary: bool = _field(True, "merge every defect class (hole, crack) into one 'foreground' class "
                                "(the original project's use)")
    weights: str = _field("none", "'none' (no download) or 'imagenet' (pretrained backbone)")
    seed: int = _field(0, "random seed")
    fast: bool = _field(False, "a small, quick run of the same chain (for tests and a first look)")

    def effective(self) -> QuickstartConfig:
        """The configuration with ``fast`` applied: fewer, smaller images and epochs."""
        if not self.fast:
            return self
        return dataclasses.replace(self, image_size=(128, 160), num_images=16, heldout_images=4, copies=1,
                                   epochs=2, batch_size=4)
