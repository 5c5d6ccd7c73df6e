"""The ``nvsynth`` command line (issue 2): subcommands and their help."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nvsynth import __version__
from nvsynth.app import cli

SUBCOMMANDS = ("recon", "render", "targets", "inspect", "demo")
REPO = Path(__file__).resolve().parents[1]


def _nvsynth() -> list[str]:
    """The installed console script when present (setup installs it), else the module."""
    script = Path(sys.executable).parent / "nvsynth"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "nvsynth.app.cli"]


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = cli.build_parser()
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def test_top_level_help_lists_subcommands() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([*_nvsynth(), "--help"], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    for name in SUBCOMMANDS:
        assert f"\n    {name}" in proc.stdout, name  # listed with its one-line help
    assert "--version" in proc.stdout


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"nvsynth {__version__}"


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_subcommand_help_describes_every_option(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main([name, "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: nvsynth {name}")
    sub = _subparsers()[name]
    assert sub.description or sub.format_usage()
    for action in sub._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        assert action.help and len(action.help) > 10, f"{name}: {action.dest} has no help"
        for opt in action.option_strings or [action.dest]:
            assert opt in text, f"{name}: {opt} missing from --help"
        assert action.help.split("(")[0].strip()[:20] in " ".join(text.split())


def test_subcommands_are_the_documented_set() -> None:
    assert set(_subparsers()) == set(SUBCOMMANDS)


def test_render_save_has_both_spellings() -> None:
    parser = cli.build_parser()
    assert parser.parse_args(["render", "-save", "out"]).save == Path("out")
    assert parser.parse_args(["render", "--save", "out"]).save == Path("out")
    args = parser.parse_args(["inspect", "x.h5", "-o", "png", "--num", "4", "--index", "2"])
    assert (args.path, args.out, args.num, args.index) == (Path("x.h5"), Path("png"), 4, 2)


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in ([], ["render"], ["frobnicate"], ["inspect"], ["render", "-save", "x", "--pattern", "spiral"]):
        with pytest.raises(SystemExit) as info:
            cli.main(argv)
        assert info.value.code == 2, argv
    assert "error:" in capsys.readouterr().err
