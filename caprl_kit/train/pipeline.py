"""caprl train: ``trainer: trl`` runs GRPO in-process (optionally after a supervised warm start);
``trainer: verl`` generates and launches ``python -m verl.trainer.main_ppo`` (dry run: validated by verl's code)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any

from caprl_kit.commands import NullProgress, Progress, RunReport
from caprl_kit.errors import CaprlError, ConfigError, ConfigIssue
from caprl_kit.log import get_logger
from caprl_kit.train.config import TrainConfig

log = get_logger(__name__)


def plan(cfg: TrainConfig) -> list[str]:
    a = cfg.algorithm
    lines = [f"{a.estimator.upper()} on {cfg.policy} with {cfg.trainer}: {a.num_generations} captions per image, "
             f"lr {a.lr}, KL {a.kl_coef}, {a.epochs} epoch(s)" + (f", at most {a.max_steps} steps" if a.max_steps else ""),
             "reward: " + " + ".join(f"{c.weight} x {c.name}" for c in cfg.reward.components if c.weight)]
    if cfg.sft:
        lines.insert(0, f"supervised warm start on {', '.join(cfg.sft.data_files)} ({cfg.sft.epochs} epochs)")
    if cfg.trainer == "verl":
        from caprl_kit.train.verl import dry_run

        lines += dry_run(cfg)
    return lines


def run(cfg: TrainConfig, *, overwrite: bool = False, progress: Progress | None = None) -> RunReport:
    progress = progress or NullProgress()
    if not cfg.output_dir:
        raise ConfigError([ConfigIssue("output_dir", "no output directory", "pass --output DIR or set output_dir")])
    if cfg.trainer == "verl":
        return launch_verl(cfg)
    from caprl_kit.train.trl_grpo import train_grpo

    policy = None
    if cfg.sft is not None:
        from caprl_kit.train.sft import train_sft

        policy = train_sft(cfg, progress=progress)
    return train_grpo(cfg, overwrite=overwrite, progress=progress, policy=policy)


def launch_verl(cfg: TrainConfig) -> RunReport:
    """Validate (as --dry-run does), then run verl as a subprocess, streaming its log to OUTPUT/verl.log."""
    from caprl_kit.train.verl import command, dry_run

    for line in dry_run(cfg):
        log.info(line)
    out = Path(str(cfg.output_dir))
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    if cfg.verl.ray_address:
        env["RAY_ADDRESS"] = cfg.verl.ray_address
    t0 = time.perf_counter()
    with (out / "verl.log").open("w") as logf:
        proc = subprocess.Popen(command(cfg), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        assert proc.stdout is not None
        for line in proc.stdout:
            logf.write(line)
            log.info("verl| %s", line.rstrip())
        code = proc.wait()
    if code != 0:
        raise CaprlError(f"verl exited with {code}; see {out / 'verl.log'}")
    report = RunReport(command="train", output_dir=str(out), duration_s=time.perf_counter() - t0)
    report.outputs["log"] = str(out / "verl.log")
    return report


def export_checkpoint(checkpoint: str, target: str, python: str = "python3") -> list[str]:
    """verl FSDP checkpoint (``.../global_step_N/actor``) -> a Hugging Face directory, via verl's model merger."""
    actor = Path(checkpoint)
    if (actor / "actor").is_dir():
        actor = actor / "actor"
    if not actor.is_dir():
        raise CaprlError(f"{checkpoint} is not a verl checkpoint directory (expected .../global_step_N/actor)")
    cmd = [python, "-m", "verl.model_merger", "merge", "--backend", "fsdp", "--local_dir", str(actor),
           "--target_dir", target]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise CaprlError(f"verl's model merger failed: {result.stderr[-2000:]}")
    return cmd
