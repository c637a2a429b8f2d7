"""The README tells the truth: its commands, its preset table, its scripts and their flags."""

import functools
import os
import re
import subprocess
import sys

import pytest

from harness import REPO_ROOT
from segzoo import presets

README = open(os.path.join(REPO_ROOT, "README.md"), encoding="utf-8").read()
EXAMPLES = sorted(f for f in os.listdir(os.path.join(REPO_ROOT, "examples")) if f.endswith(".py"))


@functools.lru_cache(maxsize=None)
def help_text(script):
    """``examples/<script> --help``, run once per script."""
    result = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "examples", script), "--help"],
                            capture_output=True, text=True, cwd=REPO_ROOT, timeout=300,
                            env=dict(os.environ, PYTHONPATH=REPO_ROOT))
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def readme_commands():
    return re.findall(r"```bash\n# [^\n]*\n([^\n]+)\n```", README)


def test_readme_opens_with_the_two_commands_and_ci_runs_the_second_verbatim():
    quickstart, tests = readme_commands()[:2]
    assert "examples/quickstart.py" in quickstart and "pip install" in quickstart
    assert "pytest" in tests and '".[dev]"' in tests
    ci_lines = open(os.path.join(REPO_ROOT, ".ci", "run"), encoding="utf-8").read().splitlines()
    assert tests in ci_lines


def test_preset_table_matches_the_registry():
    assert presets.markdown_table() in README


@pytest.mark.parametrize("script", EXAMPLES)
def test_every_example_answers_help(script):
    assert "usage:" in help_text(script)


def test_flags_the_readme_shows_exist():
    """Every `--flag` written after an examples/<script>.py in the README is one that script accepts."""
    shown = re.findall(r"python examples/(\w+\.py)((?:\\\n|[^\n])*)", README)
    assert len(shown) >= 8
    for script, arguments in shown:
        for flag in re.findall(r"(--[a-z_]+)", arguments):
            assert flag in help_text(script), f"README shows {script} {flag}, which --help does not list"
