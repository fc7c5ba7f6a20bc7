"""caprl train (TRL) saves ``final/`` atomically: a run killed while saving it leaves ``final/`` as it was (absent,
or the previous complete model), and the next curriculum stage or a resume never loads half a model."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from caprl_kit.errors import CaprlError
from caprl_kit.synthetic import write_scenes
from caprl_kit.train.config import TrainConfig
from caprl_kit.train.pipeline import run, stage_model
from curated_sets import curate_import, scene_rows


@pytest.fixture(scope="module")
def train_file(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("curated")
    return curate_import(root, scene_rows(write_scenes(root / "images", 4))) / "train.parquet"


def grpo(tiny, train_file: Path, out: Path) -> TrainConfig:
    return TrainConfig.model_validate({
        "policy": str(tiny["captioner"]),
        "data": {"train_files": [str(train_file)], "max_response_length": 4},
        "reward": {"qa": {"answerer": {"name": "lexical"}, "qa_num": 1}},
        "algorithm": {"num_generations": 2, "max_steps": 1, "save_steps": 1, "kl_coef": 0.0},
        "trl": {"per_device_batch_size": 2, "report_to": []},
        "output_dir": str(out),
    })


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def crash_while_saving_final(monkeypatch) -> None:
    """The final save writes the model, then the process dies with the weights half written."""
    from trl import GRPOTrainer

    save = GRPOTrainer.save_model

    def dying(self, output_dir=None, _internal_call=False):
        save(self, output_dir, _internal_call)
        if not _internal_call:  # checkpoints save through here too; only the final model dies
            weights = Path(output_dir) / "model.safetensors"
            weights.write_bytes(weights.read_bytes()[:100])
            raise KeyboardInterrupt

    monkeypatch.setattr(GRPOTrainer, "save_model", dying)


def test_a_crash_while_saving_final_leaves_no_partial_final(tiny_models, train_file: Path, tmp_path: Path,
                                                           monkeypatch) -> None:
    out = tmp_path / "run"
    cfg = grpo(tiny_models, train_file, out)
    with monkeypatch.context() as m:  # first run: killed while saving -> no final/ at all
        crash_while_saving_final(m)
        with pytest.raises(KeyboardInterrupt):
            run(cfg)
    assert not (out / "final").exists()
    assert [p.name for p in out.iterdir() if p.name.startswith((".final", "final"))] == []  # no partial left
    with pytest.raises(CaprlError, match="has no final model"):
        stage_model(cfg)  # the next stage is not handed a broken model
    run(cfg)  # the rerun (resumed from checkpoint-1) saves a complete final/
    complete = digest(out / "final")
    assert "model.safetensors" in complete and "config.json" in complete
    with monkeypatch.context() as m:  # killed while replacing it: the previous complete final/ stays
        crash_while_saving_final(m)
        with pytest.raises(KeyboardInterrupt):
            run(cfg)
    assert digest(out / "final") == complete
    assert [p.name for p in out.iterdir() if p.name.startswith((".final", "final"))] == ["final"]
    assert stage_model(cfg) == str(out / "final")


def test_a_crash_while_exporting_a_verl_stage_leaves_no_partial_hf(tmp_path: Path, monkeypatch) -> None:
    import caprl_kit.train.pipeline as pipeline

    out = tmp_path / "stage"
    (out / "checkpoints" / "global_step_2" / "actor").mkdir(parents=True)
    cfg = TrainConfig.model_validate({"policy": "x", "trainer": "verl", "output_dir": str(out),
                                      "data": {"train_files": ["t.parquet"], "val_files": ["v.parquet"]}})

    def dying(checkpoint: str, target: str, python: str = "python3") -> list[str]:
        (Path(target) / "config.json").write_text("{}")  # verl's merger wrote part of the model, then died
        raise KeyboardInterrupt

    def merger(checkpoint: str, target: str, python: str = "python3") -> list[str]:
        for name in ("config.json", "model.safetensors"):
            (Path(target) / name).write_text(checkpoint)
        return []

    monkeypatch.setattr(pipeline, "export_checkpoint", dying)
    with pytest.raises(KeyboardInterrupt):
        stage_model(cfg)
    assert not (out / "hf").exists()  # the next stage would have loaded a half-written model from hf/
    monkeypatch.setattr(pipeline, "export_checkpoint", merger)
    assert stage_model(cfg) == str(out / "hf")
    assert sorted(p.name for p in (out / "hf").iterdir()) == ["config.json", "model.safetensors"]
    assert [p.name for p in out.iterdir() if "hf" in p.name] == ["hf"]
