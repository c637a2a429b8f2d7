"""The README tells the truth: its commands, its preset table, its scripts and their flags."""

import contextlib
import functools
import io
import os
import re
import runpy

import pytest

from harness import REPO_ROOT
from segzoo import cli, presets

README = open(os.path.join(REPO_ROOT, "README.md"), encoding="utf-8").read()
EXAMPLES = sorted(f for f in os.listdir(os.path.join(REPO_ROOT, "examples")) if f.endswith(".py"))


def help_text(argv):
    """What ``argv`` prints for ``--help``: ``segzoo <command> --help`` or ``examples/<script> --help``,
    run in this process (the install test runs them as new processes)."""
    stream = io.StringIO()
    with contextlib.redirect_stdout(stream), pytest.raises(SystemExit) as done:
        argv[0](argv[1:] + ["--help"])
    assert done.value.code == 0
    return stream.getvalue()


@functools.lru_cache(maxsize=None)
def command_help(command):
    """``segzoo <command> --help``."""
    return help_text([cli.main, command])


def readme_commands():
    return re.findall(r"```bash\n# [^\n]*\n([^\n]+)\n```", README)


def test_readme_opens_with_the_two_commands_and_ci_runs_the_second_verbatim():
    quickstart, tests = readme_commands()[:2]
    assert "segzoo quickstart" in quickstart and "pip install" in quickstart
    assert "pytest" in tests and '".[dev]"' in tests
    ci_lines = open(os.path.join(REPO_ROOT, ".ci", "run"), encoding="utf-8").read().splitlines()
    assert tests in ci_lines


def test_preset_table_matches_the_registry():
    assert presets.markdown_table() in README


@pytest.mark.parametrize("script", EXAMPLES)
def test_every_example_answers_help_as_its_command(script):
    main = runpy.run_path(os.path.join(REPO_ROOT, "examples", script), run_name="segzoo_example")["main"]
    text = help_text([main])
    assert text.startswith("usage: segzoo ") and "--debug" in text


def test_flags_the_readme_shows_exist():
    """Every `--flag` written after a `segzoo <command>` in the README is one that command accepts."""
    shown = re.findall(r"segzoo ([a-z][a-z-]+)((?:\\\n|[^\n`])*)", README)
    shown = [(command, arguments) for command, arguments in shown if command in cli.COMMANDS]
    assert len(shown) >= 10 and {command for command, _ in shown} >= set(cli.COMMANDS)
    for command, arguments in shown:
        for flag in re.findall(r"(--[a-z_]+)", arguments):
            assert flag in command_help(command), f"README shows segzoo {command} {flag}, which --help does not list"
