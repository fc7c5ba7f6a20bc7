from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from caprl_kit.cli import app

runner = CliRunner()
HEAVY = ("torch", "transformers", "vllm", "ray", "verl", "trl", "pyarrow", "polars", "datasets")


def test_help_lists_the_four_verbs() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for verb in ("curate", "train", "annotate", "eval"):
        assert verb in result.output


@pytest.mark.parametrize("argv", [["--help"], ["annotate", "--help"], ["curate", "--help"], ["eval", "--help"]])
def test_help_imports_nothing_heavy(argv: list[str]) -> None:
    code = textwrap.dedent(f"""
        import sys
        from caprl_kit.cli import app
        try:
            app({argv!r})
        except SystemExit:
            pass
        heavy = [m for m in {HEAVY!r} if m in sys.modules]
        print("HEAVY", heavy)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "HEAVY []" in out, out


def test_import_cli_pulls_in_no_heavy_module() -> None:
    code = f"import sys, caprl_kit.cli; print([m for m in {HEAVY!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_bad_config_lists_every_problem_and_writes_nothing(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(textwrap.dedent("""
        kind: annotate
        input: {path: /data}
        backend:
          name: trnasformers
          model: /m
          sampling: {temperature: hot}
        sharding: {shard_sze: 3}
    """))
    out = tmp_path / "out"
    result = runner.invoke(app, ["annotate", "--config", str(cfg), "--output", str(out)])
    assert result.exit_code == 2
    text = " ".join(result.output.split())
    assert "did you mean 'transformers'" in text
    assert "backend.sampling.temperature" in text and "'hot'" in text
    assert "sharding.shard_sze: unknown key (did you mean 'shard_size'?)" in text
    assert not out.exists()


def test_dry_run_prints_config_and_plan_and_touches_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        ["annotate", "-c", "annotate/caption_images_qwen25vl3b", "--dry-run", "--output", str(out),
         "backend.sampling.n=4", "~prompt.image"],
    )
    assert result.exit_code == 0, result.output
    assert "# resolved config" in result.output and "# plan" in result.output
    assert "n: 4" in result.output
    assert not out.exists()


def test_unknown_builtin_name_suggests() -> None:
    result = runner.invoke(app, ["annotate", "-c", "annotate/caption_image_qwen25vl3b", "--dry-run"])
    assert result.exit_code == 2
    assert "did you mean 'annotate/caption_images_qwen25vl3b'" in " ".join(result.output.split())


def test_console_script_runs() -> None:
    exe = Path(sys.executable).with_name("caprl")
    result = subprocess.run([str(exe), "pipelines"], capture_output=True, text=True)
    assert result.returncode == 0
    assert "annotate/caption_images_qwen25vl3b" in result.stdout
