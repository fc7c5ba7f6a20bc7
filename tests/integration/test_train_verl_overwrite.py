"""caprl train with ``trainer: verl``: a rerun resumes verl's newest checkpoint, ``--overwrite`` starts over (the
previous checkpoints discarded, ``trainer.resume_mode=disable``). The launch is real (the generated command runs as
a subprocess, streamed to OUTPUT/verl.log); ``verl.trainer.main_ppo`` is a stand-in on PYTHONPATH that resumes the
way verl's ``resume_mode`` does (verl itself needs GPUs)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from caprl_kit.train.config import TrainConfig
from caprl_kit.train.pipeline import run
from caprl_kit.train.verl import build_overrides

# verl's resume: ``auto`` continues from the step in default_local_dir/latest_checkpointed_iteration.txt, ``disable``
# starts at 0; each launch here trains one step and checkpoints it
MAIN_PPO = '''
import json, os, sys
args = dict(a.split("=", 1) for a in sys.argv[1:])
root, mode = args["trainer.default_local_dir"], args["trainer.resume_mode"]
tracker = os.path.join(root, "latest_checkpointed_iteration.txt")
start = int(open(tracker).read()) if mode == "auto" and os.path.exists(tracker) else 0
print(json.dumps({"resume_mode": mode, "start": start}), flush=True)
os.makedirs(os.path.join(root, f"global_step_{start + 1}", "actor"), exist_ok=True)
open(tracker, "w").write(str(start + 1))
'''


@pytest.fixture()
def fake_verl(tmp_path: Path, monkeypatch) -> None:
    pkg = tmp_path / "fake_verl" / "verl" / "trainer"
    pkg.mkdir(parents=True)
    (pkg.parent / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "main_ppo.py").write_text(MAIN_PPO)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "fake_verl"))  # the launched process's verl, not this one's
    monkeypatch.setattr("caprl_kit.train.verl.dry_run", lambda cfg: [])  # verl's own checks: tests/test_train.py


def verl_cfg(tmp_path: Path, **verl) -> TrainConfig:
    for name in ("train.parquet", "val.parquet"):
        (tmp_path / name).write_bytes(b"")
    return TrainConfig.model_validate({
        "trainer": "verl", "policy": "Qwen/Qwen2.5-VL-3B-Instruct", "output_dir": str(tmp_path / "run"),
        "data": {"train_files": [str(tmp_path / "train.parquet")], "val_files": [str(tmp_path / "val.parquet")]},
        "verl": {"python": sys.executable, **verl}})


def launched(cfg: TrainConfig) -> dict:
    return json.loads((Path(str(cfg.output_dir)) / "verl.log").read_text().splitlines()[0])


def steps(root: Path) -> list[str]:
    return sorted(p.name for p in root.glob("global_step_*"))


def test_overwrite_tells_verl_not_to_resume() -> None:
    cfg = TrainConfig.model_validate({"trainer": "verl", "policy": "p", "output_dir": "/runs/a",
                                      "data": {"train_files": ["t"], "val_files": ["v"]}})
    assert "trainer.resume_mode=auto" in build_overrides(cfg)
    assert "trainer.resume_mode=disable" in build_overrides(cfg, overwrite=True)
    assert "trainer.resume_mode=auto" not in build_overrides(cfg, overwrite=True)


def test_rerun_resumes_and_overwrite_starts_over(tmp_path: Path, fake_verl) -> None:
    cfg = verl_cfg(tmp_path)
    ckpt = tmp_path / "run" / "checkpoints"
    run(cfg)
    assert launched(cfg) == {"resume_mode": "auto", "start": 0} and steps(ckpt) == ["global_step_1"]
    run(cfg)  # a rerun continues from the newest checkpoint
    assert launched(cfg) == {"resume_mode": "auto", "start": 1} and steps(ckpt) == ["global_step_1", "global_step_2"]
    run(cfg, overwrite=True)  # the previous run is discarded: training starts over, no old step is left behind
    assert launched(cfg) == {"resume_mode": "disable", "start": 0} and steps(ckpt) == ["global_step_1"]


def test_overwrite_discards_verls_checkpoints_in_a_checkpoint_dir_outside_the_output(tmp_path: Path,
                                                                                    fake_verl) -> None:
    elsewhere = tmp_path / "ckpt"
    cfg = verl_cfg(tmp_path, checkpoint_dir=str(elsewhere))
    run(cfg)
    run(cfg)
    assert steps(elsewhere) == ["global_step_1", "global_step_2"]
    (elsewhere / "notes.txt").write_text("the user's")
    run(cfg, overwrite=True)
    assert launched(cfg) == {"resume_mode": "disable", "start": 0}
    assert steps(elsewhere) == ["global_step_1"]  # global_step_2 of the old run would be taken as the newest
    assert (elsewhere / "notes.txt").read_text() == "the user's"  # only verl's own checkpoints are removed


def test_a_rerun_with_a_new_learning_rate_is_refused_and_volatile_changes_resume(tmp_path: Path, fake_verl) -> None:
    from caprl_kit.errors import ResumeRefused

    cfg = verl_cfg(tmp_path)
    ckpt = tmp_path / "run" / "checkpoints"
    run(cfg)
    changed = cfg.model_copy(update={"algorithm": cfg.algorithm.model_copy(update={"lr": 5e-6})})
    with pytest.raises(ResumeRefused, match=r"algorithm\.lr"):  # the old checkpoint would train on at the old rate
        run(changed)
    assert steps(ckpt) == ["global_step_1"], "nothing was launched"
    moved = cfg.model_copy(update={"verl": cfg.verl.model_copy(update={"nnodes": 2, "n_gpus_per_node": 4,
                                                                        "reward_urls": ["http://10.0.0.9:18889"]})})
    run(moved)  # where it runs is volatile: the rerun resumes
    assert launched(moved) == {"resume_mode": "auto", "start": 1}
    run(changed, overwrite=True)  # the cure the message names
    assert launched(changed) == {"resume_mode": "disable", "start": 0}
