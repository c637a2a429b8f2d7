"""segzoo.cli: every dataclass field becomes a flag and comes back typed."""

import argparse
import dataclasses

import pytest

from segzoo.cli import add_dataclass_arguments, dataclass_from_args


@dataclasses.dataclass
class Options:
    name: str = dataclasses.field(default="a", metadata={"help": "a name", "choices": ("a", "b")})
    count: int = dataclasses.field(default=3, metadata={"help": "how many"})
    size: tuple[int, int] = dataclasses.field(default=(4, 5), metadata={"help": "size", "metavar": ("H", "W")})
    weights: tuple[float, ...] = dataclasses.field(default=None, metadata={"help": "weights"})
    flag: bool = dataclasses.field(default=True, metadata={"help": "a switch"})


def parse(argv):
    parser = add_dataclass_arguments(argparse.ArgumentParser(), Options)
    return dataclass_from_args(Options, parser.parse_args(argv))


def test_defaults_and_typed_values():
    assert parse([]) == Options()
    options = parse(["--name", "b", "--count", "7", "--size", "8", "9", "--weights", "1", "2.5", "--no-flag"])
    assert options == Options("b", 7, (8, 9), (1.0, 2.5), False)


def test_help_shows_defaults_and_bad_choices_fail(capsys):
    parser = add_dataclass_arguments(argparse.ArgumentParser(), Options)
    with pytest.raises(SystemExit):
        parser.parse_args(["--help"])
    text = capsys.readouterr().out
    assert "how many (default: 3)" in text and "--size H W" in text and "--no-flag" in text
    with pytest.raises(SystemExit):
        parser.parse_args(["--name", "c"])
