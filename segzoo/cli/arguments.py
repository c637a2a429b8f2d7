"""Flags from dataclasses (one flag per field, so every option a script has is an argument), the flags several
commands share, and logging setup. Nothing here imports TensorFlow: parsers build before it loads.

A field's ``metadata`` holds its ``help`` text and, optionally, ``choices``,
``metavar`` and, for a tuple field, the ``type`` that parses each value
(:func:`segzoo.settings.config_field` declares such a field).
Booleans become ``--flag`` / ``--no_flag`` pairs (:func:`add_boolean_argument`;
``--no-flag``, argparse's own spelling, stays accepted but unlisted);
``tuple[int, int]`` fields take two values (``--image_size 480 640``),
``tuple[float, ...]`` one or more. Flags are spelt snake_case.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import typing

from segzoo.configs import PREDICTOR_RUNTIMES

#: Help of the ``--checkpoint`` flag of the commands that load a trained model.
CHECKPOINT_HELP = "a .keras checkpoint"


class BooleanFlag(argparse.BooleanOptionalAction):
    """:class:`argparse.BooleanOptionalAction` spelt snake_case: ``--name`` sets True, ``--no_name`` False."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, **kwargs)
        # The parent adds "--no-<name>" after each "--<name>": spell those "--no_<name>".
        self.option_strings = [name if name in option_strings else "--no_" + name[len("--no-"):]
                               for name in self.option_strings]
        self.negative_option_strings = tuple(name for name in self.option_strings if name not in option_strings)

    def __call__(self, parser, namespace, values, option_string=None):
        if option_string in self.option_strings:
            setattr(namespace, self.dest, option_string not in self.negative_option_strings)


def add_boolean_argument(parser, flag, **kwargs):
    """Add ``flag`` / ``--no_<name>`` (:class:`BooleanFlag`) to ``parser`` (or an argument group).

    ``--no-<name>``, the spelling of argparse's ``BooleanOptionalAction``, is
    kept as an alias that ``--help`` does not list. Returns the action.
    """
    action = parser.add_argument(flag, action=BooleanFlag, **kwargs)
    parser.add_argument(f"--no-{flag[2:]}", dest=action.dest, action="store_false", default=argparse.SUPPRESS,
                        help=argparse.SUPPRESS)
    return action


def add_checkpoint_argument(parser, required=True, help=CHECKPOINT_HELP):
    """Add ``--checkpoint``, the ``.keras`` model a command loads, to ``parser``. Returns the action."""
    return parser.add_argument("--checkpoint", required=required, help=help)


def add_calibration_arguments(parser, what):
    """Add ``--calibration_data`` and ``--calibration_images``: the training images ``what`` calibrates on."""
    parser.add_argument("--calibration_data",
                        help=f"training images for {what} to calibrate on: rgb/ + gt/ folder or zip, or CVAT "
                             f"export")
    parser.add_argument("--calibration_images", type=int, default=64,
                        help="images drawn from --calibration_data (default: 64)")
    return parser


def add_predictor_arguments(parser):
    """Add the :class:`segzoo.inference.FramePredictor` options (``--input_size``, ``--smoothing``,
    ``--keep_largest``, ``--no_fps``, ``--runtime``, ``--calibration_data``, ``--calibration_images``,
    ``--argmax_at_stride``) to an argparse parser; :func:`segzoo.inference.predictor_from_args` reads them."""
    parser.add_argument("--input_size", type=int, nargs=2, metavar=("H", "W"),
                        help="resize frames to this size for the model (default: the frame size "
                             "rounded to the model's size divisor)")
    parser.add_argument("--smoothing", type=float, default=0.0,
                        help="temporal smoothing of probabilities, 0 (off) to 0.9 (strong) (default: 0)")
    parser.add_argument("--keep_largest", type=int, default=0,
                        help="keep only the N largest regions of each class, 0 keeps all (default: 0)")
    parser.add_argument("--no_fps", action="store_true", help="do not draw the FPS counter")
    parser.add_argument("--runtime", choices=PREDICTOR_RUNTIMES, default="keras",
                        help="run the Keras graph; or export the model for the frame size on the first frame "
                             "and run it on LiteRT or ONNX Runtime, faster on a CPU (int8: calibrated on "
                             "--calibration_data); or auto: time those on the first frame and keep the fastest "
                             "(default: keras)")
    add_calibration_arguments(parser, "the int8 runtimes; with --runtime auto they join the float ones")
    parser.add_argument("--argmax_at_stride", action="store_true",
                        help="take the argmax at the model's output stride (1/8 of the input for DDRNet) and "
                             "upsample the class map to the frame, instead of upsampling every class's logits "
                             "first: faster, blockier at class borders")
    return parser


def add_dataclass_arguments(parser, cls, group_title=None, skip=(), only_given=False):
    """Add one ``--<field>`` flag per field of dataclass ``cls`` to ``parser`` (except ``skip``).

    With ``only_given``, the parsed namespace holds only the flags that were
    typed (see :func:`given_fields`), so that they can override settings from
    elsewhere (a recipe file, a saved run); ``--help`` still shows the defaults.
    """
    target = parser.add_argument_group(group_title) if group_title else parser
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        if field.name in skip:
            continue
        kind, default = hints[field.name], field.default
        help_text = field.metadata.get("help", "")
        shown = " ".join(map(str, default)) if isinstance(default, tuple) else default
        kwargs = {"default": argparse.SUPPRESS if only_given else default,
                  "help": f"{help_text} (default: {shown})"}
        if kind is bool:
            add_boolean_argument(target, f"--{field.name}", **kwargs)
            continue
        if (typing.get_origin(kind) or kind) is tuple:
            item_types = typing.get_args(kind)  # (int, int) or (float, ...)
            fixed = bool(item_types) and item_types[-1] is not Ellipsis
            metavar = field.metadata.get("metavar") or (
                ("LOW", "HIGH") if fixed and len(item_types) == 2 else field.name.upper())
            kwargs.update(nargs=len(item_types) if fixed else "+", type=field.metadata.get("type", item_types[0]),
                          metavar=metavar)
        else:
            kwargs.update(type=kind, choices=field.metadata.get("choices"))
        target.add_argument(f"--{field.name}", **kwargs)
    return parser


def given_fields(cls, args) -> dict:
    """``{field: value}`` of the fields of dataclass ``cls`` present in parsed ``args`` (lists as tuples)."""
    fields = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}
    return {name: tuple(v) if isinstance(v, list) else v for name, v in fields.items()}


def dataclass_from_args(cls, args, **values):
    """An instance of ``cls`` from parsed ``args`` (fields absent from ``args`` keep defaults), plus ``values``."""
    return cls(**{**given_fields(cls, args), **values})


def setup_logging(verbose=False):
    """Log segzoo's progress lines (INFO) plainly, and only warnings from other libraries."""
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("segzoo").setLevel(logging.DEBUG if verbose else logging.INFO)
