"""The ``segzoo`` command: one subcommand per job, clean errors, quiet start-up.

``segzoo --help`` lists the subcommands; ``segzoo <command> --help`` shows each one's
flags. Each subcommand lives in a module of this package with a docstring (its
description), ``add_arguments(parser)`` and ``run(args)``; :data:`COMMANDS` names them.
The scripts in ``examples/`` call the same entry points through :func:`command_main`.

A mistake the user can fix (:class:`segzoo.errors.SegzooError`, or a path that is
missing or already taken) prints one message
and exits with status 2 (``--debug`` shows the traceback); anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import sys

from segzoo import __version__, errors
from segzoo.cli.arguments import add_dataclass_arguments, dataclass_from_args, setup_logging

__all__ = ["COMMANDS", "add_dataclass_arguments", "build_parser", "command_main", "dataclass_from_args", "main",
           "setup_logging"]

#: Subcommand name: (module in segzoo.cli, one-line summary for ``segzoo --help``).
COMMANDS = {
    "quickstart": ("quickstart", "the main job end to end on built-in sample data (or your CVAT export)"),
    "train": ("train", "train a model on a CVAT export, an rgb/ + gt/ folder or a TFDS dataset"),
    "eval": ("evaluate", "mean IoU, per-class IoU, GFLOPs and latency of a checkpoint, with a report"),
    "predict-video": ("predict_video", "segment every frame of a video and write the overlay video"),
    "camera": ("camera", "segment a webcam stream live"),
    "export": ("export", "export a checkpoint to SavedModel, LiteRT or ONNX, checked against Keras"),
    "augment": ("augment", "write a dataset with N augmented copies of every image"),
    "convert": ("convert", "convert an official DDRNet or PIDNet checkpoint to segzoo weights"),
    "inspect": ("inspect", "statistics of a dataset and what is likely a mistake, before training"),
    "import": ("import_pairs", "import an image folder and a class-id mask folder (e.g. CamVid) as an rgb/ + gt/ "
                               "dataset"),
    "predict": ("predict", "predict a folder of images: masks, overlays, CVAT pre-annotations"),
    "rank": ("rank", "rank unlabelled images by how unsure the model is: what to label next"),
}

EXIT_USER_ERROR = 2

#: What a person can fix: segzoo's own errors, and a path that is missing, taken, or not theirs to write.
USER_ERRORS = (errors.SegzooError, FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError,
               PermissionError)


def _command_module(name):
    return importlib.import_module(f"segzoo.cli.{COMMANDS[name][0]}")


def _add_common_flags(parser):
    parser.add_argument("--verbose", action="store_true",
                        help="show third-party log lines and segzoo's debug messages")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error too")


def build_parser(command=None):
    """The argument parser: every subcommand's, or only ``command``'s (then its flags are loaded)."""
    parser = argparse.ArgumentParser(prog="segzoo", description="segzoo: real-time segmentation, from a CVAT "
                                     "export to a webcam. Run 'segzoo COMMAND --help' for a command's flags.")
    parser.add_argument("--version", action="version", version=f"segzoo {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for name, (_, summary) in COMMANDS.items():
        if command is None or name != command:
            subparsers.add_parser(name, help=summary, add_help=False)
            continue
        module = _command_module(name)
        sub = subparsers.add_parser(name, help=summary, description=module.__doc__,
                                    formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(sub)
        _add_common_flags(sub)
        parser.set_defaults(flags=[flag for action in sub._actions for flag in action.option_strings])
    return parser


def _closest(name, names):
    """`` (did you mean X?)`` for the closest of ``names`` to a mistyped ``name``, else ``""``."""
    match = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
    return f" (did you mean {match[0]}?)" if match else ""


def _parse(parser, command, argv):
    """``parser.parse_args(argv)``, with the closest flag suggested for each flag it does not know."""
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        named = [f"{value}{_closest(value.split('=')[0], args.flags) if value.startswith('-') else ''}"
                 for value in unknown]
        parser.exit(EXIT_USER_ERROR, f"segzoo {command}: error: unrecognized arguments: {' '.join(named)}; "
                                     f"'segzoo {command} --help' lists its flags.\n")
    return args


def main(argv=None):
    """Run ``segzoo`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    if command not in COMMANDS:
        hint = _closest(command, COMMANDS) if command is not None else ""
        if hint:
            print(f"segzoo: error: no command {command!r}{hint}; 'segzoo --help' lists them.", file=sys.stderr)
            return EXIT_USER_ERROR
        build_parser().parse_args(argv or ["--help"])  # lists the commands, or says which name is unknown
        return EXIT_USER_ERROR
    args = _parse(build_parser(command), command, argv)  # TensorFlow not loaded yet: --help answers at once
    if not args.verbose:
        from segzoo.cli.quiet import silence_third_party

        silence_third_party()
    setup_logging(verbose=args.verbose)
    try:
        with errors.command_line_messages():
            status = _command_module(command).run(args)
    except USER_ERRORS as error:
        if args.debug:
            raise
        print(f"segzoo {command}: error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    return 0 if status is None else int(status)


def command_main(command):
    """``main(argv=None)`` for one subcommand, as the ``examples/`` scripts expose it.

    It raises :class:`SystemExit` with the status when that is not 0, so a failing
    script fails its caller too.
    """

    def run_command(argv=None):
        status = main([command, *(sys.argv[1:] if argv is None else argv)])
        if status:
            raise SystemExit(status)

    run_command.__doc__ = f"Run ``segzoo {command}`` with ``argv``."
    return run_command
