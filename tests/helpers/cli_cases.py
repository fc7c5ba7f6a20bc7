"""Running the real CLI in bad-input tests: exit code, no traceback, and the message fragments that must appear."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

from click.testing import Result
from typer.testing import CliRunner

from caprl_kit.cli import app

runner = CliRunner()


def flat(text: str) -> str:
    """Whitespace removed: Rich wraps long messages (and long paths) at the console width."""
    return "".join(text.split())


def cli(argv: list[Any], code: int, *fragments: Any, traceback: bool = False) -> Result:
    """Run ``caprl argv`` in-process; assert the exit code, no traceback (unless asked for) and that the output
    holds every fragment (whitespace-insensitive)."""
    result = runner.invoke(app, [str(a) for a in argv])
    assert result.exit_code == code, (result.exit_code, result.output, result.exception)
    if not traceback:
        assert "Traceback" not in result.output, result.output
    for fragment in fragments:
        assert flat(str(fragment)) in flat(result.output), (fragment, result.output)
    return result


def write_yaml(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path
