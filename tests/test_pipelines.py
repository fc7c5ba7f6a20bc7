"""Every shipped recipe validates: `caprl <verb> --config NAME --dry-run` exits 0."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from caprl_kit.cli import app
from caprl_kit.config import builtin_pipelines, load_config, pipelines_root

runner = CliRunner()
NAMES = builtin_pipelines()
CLI_VERB = {"serve_reward": "serve-reward", "pairs": "train pairs"}


def test_there_are_pipelines() -> None:
    assert NAMES


@pytest.mark.parametrize("name", NAMES)
def test_pipeline_dry_runs(name: str) -> None:
    cfg = load_config(name)
    verb = CLI_VERB.get(cfg.kind, cfg.kind)
    result = runner.invoke(app, [*verb.split(), "--config", name, "--dry-run"])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("name", NAMES)
def test_pipeline_opens_with_its_command(name: str) -> None:
    text = (pipelines_root() / f"{name}.yaml").read_text()
    header = text.split("\n\n")[0]
    kind = load_config(name).kind
    assert f"caprl {CLI_VERB.get(kind, kind)} --config {name}" in header


def test_caprl_pipelines_lists_every_recipe_with_its_description() -> None:
    from caprl_kit.config import pipeline_purpose

    result = CliRunner().invoke(app, ["pipelines"], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    for name in NAMES:
        purpose = pipeline_purpose(name)
        assert purpose.endswith(".") and "Prerequisites" not in purpose and "Run:" not in purpose, (name, purpose)
        assert name in result.output and purpose.split()[0] in result.output
    assert pipeline_purpose("train/caprlpp_video_qwen3vl4b_verl").endswith("FSDP2, async rollout.")
