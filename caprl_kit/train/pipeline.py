"""caprl train: ``trainer: trl`` runs GRPO in-process (optionally after a supervised warm start);
``trainer: verl`` generates and launches ``python -m verl.trainer.main_ppo`` (dry run: validated by verl's code)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from caprl_kit.errors import CaprlError, ConfigError, ConfigIssue
from caprl_kit.io.rundir import prepare_output
from caprl_kit.log import get_logger
from caprl_kit.progress import NullProgress, Progress, RunReport
from caprl_kit.registry import Registry
from caprl_kit.runners.driver import command
from caprl_kit.train.config import TrainConfig

log = get_logger(__name__)
#: ``method`` -> the embedded trainer (lazy)
TRL_METHODS = Registry("method")
TRL_METHODS.register("grpo", target="caprl_kit.train.trl_grpo:train_grpo")
TRL_METHODS.register("dpo", target="caprl_kit.train.trl_dpo:train_dpo")


def plan(cfg: TrainConfig) -> list[str]:
    if cfg.stages:
        lines = []
        stages = cfg.stage_configs()
        for i, (name, stage, inherited) in enumerate(stages):
            lines.append(
                f"stage {i + 1}/{len(stages)} '{name}' ({stage.task}, {stage.trainer})"
                + (f": starts from stage '{stages[i - 1][0]}''s exported model" if inherited else "")
            )
            lines += ["  " + x for x in plan(stage)]
        return lines
    a = cfg.algorithm
    steps = f", at most {a.max_steps} steps" if a.max_steps else ""
    if cfg.method == "dpo":
        lines = [
            f"DPO ({cfg.dpo.loss_type}, beta {cfg.dpo.beta}) on {cfg.policy} with trl: preference pairs from "
            f"{', '.join(cfg.data.train_files)}, lr {a.lr}, {a.epochs} epoch(s){steps}",
            "checkpoint selection: held-out QA accuracy on "
            + (", ".join(cfg.data.val_files) or "nothing (no data.val_files: final/ only)"),
        ]
    else:
        lines = [
            f"{estimator(cfg)} on {cfg.policy} with {cfg.trainer}: {a.num_generations} captions per image, "
            f"lr {a.lr}, KL {a.kl_coef}, {a.epochs} epoch(s){steps}",
            "reward: "
            + " + ".join(f"{c.weight} x {c.name}" for c in cfg.reward.components if c.weight)
            + (
                f" (QA through the reward service {', '.join(cfg.reward.qa.service.urls)})"
                if cfg.reward.qa.service
                else ""
            ),
        ]
    if cfg.sft and cfg.trainer == "trl":  # verl refuses sft: (TrainConfig._verl_ignores)
        lines.insert(
            0,
            f"supervised warm start on {', '.join(cfg.sft.data_files)} ({cfg.sft.epochs} epochs) in "
            "OUTPUT/sft, then RL from it",
        )
    if cfg.trainer == "verl":
        from caprl_kit.train.verl import dry_run

        lines += dry_run(cfg)
    elif cfg.method == "dpo":
        from caprl_kit.train.trl_dpo import check_pairs

        lines += check_pairs(cfg)
    else:
        from caprl_kit.train.trl_grpo import check_dataset

        lines += check_dataset(cfg)
    return lines


def estimator(cfg: TrainConfig) -> str:
    """The advantage estimator the trainer really runs: verl's ``algorithm.adv_estimator``; TRL's GRPOTrainer (always
    group-relative: RLOO is refused with trl) with its reward scaling and loss aggregation."""
    if cfg.trainer == "verl":
        return f"{cfg.algorithm.estimator.upper()} (loss {cfg.algorithm.loss_agg_mode})"
    scale = {"group": "group std", "batch": "batch std", "none": "no std scaling"}[cfg.trl.scale_rewards]
    return f"GRPO (TRL GRPOTrainer: {scale}, loss_type {cfg.trl.loss_type})"


@command
def run(cfg: TrainConfig, *, overwrite: bool = False, progress: Progress | None = None) -> RunReport:
    progress = progress or NullProgress()
    if not cfg.output_dir:
        raise ConfigError([ConfigIssue("output_dir", "no output directory", "pass --output DIR or set output_dir")])
    if cfg.stages:
        return run_curriculum(cfg, overwrite=overwrite, progress=progress)
    from caprl_kit.train.checks import preflight

    preflight(cfg)  # before anything is loaded, launched or overwritten
    if cfg.trainer == "verl":
        return launch_verl(cfg, overwrite=overwrite)
    # discard a previous run (warm start, checkpoints, best-on-validation) only if it is one
    prepare_output(str(cfg.output_dir), "train", overwrite=overwrite, config=cfg, refuse_changed=True)
    policy = None
    if cfg.sft is not None:
        from caprl_kit.train.sft import train_sft

        policy = train_sft(cfg, progress=progress)
    return TRL_METHODS.get(cfg.method)(cfg, progress=progress, policy=policy)


def stage_model(cfg: TrainConfig) -> str:
    """The Hugging Face model a finished stage hands to the next: TRL's best-on-validation (else final) directory;
    verl's newest checkpoint, exported once to OUTPUT/hf with verl's model merger."""
    out = Path(str(cfg.output_dir))
    if cfg.trainer == "trl":
        for name in ("best", "final"):
            if (out / name / "config.json").is_file():
                return str(out / name)
        raise CaprlError(f"stage output {out} has no final model")
    hf = out / "hf"
    if (hf / "config.json").is_file():
        return str(hf)
    root = Path(cfg.verl.checkpoint_dir or out / "checkpoints")
    steps = sorted(root.glob("global_step_*"), key=lambda p: int(p.name.rsplit("_", 1)[1]))
    if not steps:
        raise CaprlError(f"no verl checkpoint under {root} to start the next stage from")
    from caprl_kit.io.fs import staged_dir

    with staged_dir(hf) as tmp:  # a kill mid-export leaves no hf/ that the next stage would take as complete
        export_checkpoint(str(steps[-1]), str(tmp), python=cfg.verl.python)
    return str(hf)


def run_curriculum(cfg: TrainConfig, *, overwrite: bool, progress: Progress) -> RunReport:
    """Run the stages in order (each resumable in its own OUTPUT/<name>); a stage without its own policy starts
    from the previous stage's exported model."""
    t0 = time.perf_counter()
    prepare_output(str(cfg.output_dir), "train", overwrite=overwrite, config=cfg, refuse_changed=True)
    report = RunReport(command="train", output_dir=str(cfg.output_dir))
    previous: TrainConfig | None = None
    for name, own, inherited in cfg.stage_configs():
        stage = own.model_copy(update={"policy": stage_model(previous)}) if inherited and previous is not None else own
        log.info("curriculum stage '%s': %s on %s", name, stage.task, stage.policy)
        sub = run(stage, overwrite=overwrite, progress=progress)
        report.metrics.update({f"{name}/{k}": v for k, v in sub.metrics.items()})
        report.outputs.update({f"{name}/{k}": v for k, v in sub.outputs.items()})
        previous = stage
    assert previous is not None
    report.outputs["model"] = stage_model(previous)
    report.duration_s = time.perf_counter() - t0
    return report


def launch_verl(cfg: TrainConfig, *, overwrite: bool = False) -> RunReport:
    """Validate (as --dry-run does), then run verl as a subprocess, streaming its log to OUTPUT/verl.log. A rerun
    resumes verl's newest checkpoint; ``overwrite`` discards the previous run (OUTPUT with its checkpoints/, verl's
    checkpoints in a ``verl.checkpoint_dir`` elsewhere) and tells verl not to resume."""
    from caprl_kit.train.verl import command, discard_checkpoints, dry_run

    for line in dry_run(cfg):
        log.info(line)
    prepare_output(str(cfg.output_dir), "train", overwrite=overwrite, config=cfg, refuse_changed=True)
    if overwrite and cfg.verl.checkpoint_dir:
        for gone in discard_checkpoints(cfg.verl.checkpoint_dir):
            log.info("overwrite: removed the previous run's verl checkpoint %s", gone)
    out = Path(str(cfg.output_dir))
    env = dict(os.environ)
    if cfg.verl.ray_address:
        env["RAY_ADDRESS"] = cfg.verl.ray_address
    t0 = time.perf_counter()
    with (out / "verl.log").open("w") as logf:
        proc = subprocess.Popen(
            command(cfg, overwrite=overwrite), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
        )
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


#: what verl's FSDP model merger reads from a checkpoint's actor folder (besides the rank shards)
MERGER_NEEDS = ("fsdp_config.json", "huggingface/config.json")
EXPORT_LOG = "export.log"


def checkpoint_actor(checkpoint: str) -> Path:
    """The actor folder of a verl FSDP checkpoint (``.../global_step_N`` or its ``actor/``), checked complete as
    verl's model merger reads it: ``fsdp_config.json`` with the world size, one ``model_world_size_W_rank_R.pt``
    per rank and the ``huggingface/`` config. One message names the checkpoint and everything missing."""
    actor = Path(checkpoint)
    if (actor / "actor").is_dir():
        actor = actor / "actor"
    if not actor.is_dir():
        raise CaprlError(f"{checkpoint} is not a verl checkpoint directory (expected .../global_step_N/actor)")
    missing = [name for name in MERGER_NEEDS if not (actor / name).is_file()]
    world_size = None
    if "fsdp_config.json" not in missing:
        try:
            world_size = json.loads((actor / "fsdp_config.json").read_text()).get("world_size")
        except (ValueError, AttributeError, UnicodeDecodeError):
            world_size = None
        if not isinstance(world_size, int) or isinstance(world_size, bool) or world_size < 1:
            missing.append("the world_size in fsdp_config.json")
            world_size = None
    if world_size is not None:
        missing += [
            f"model_world_size_{world_size}_rank_{r}.pt"
            for r in range(world_size)
            if not (actor / f"model_world_size_{world_size}_rank_{r}.pt").is_file()
        ]
    if missing:
        shown = ", ".join(missing[:6]) + (f" and {len(missing) - 6} more" if len(missing) > 6 else "")
        raise CaprlError(
            f"{checkpoint} is not a complete verl checkpoint: {actor} is missing {shown}. Export a "
            "checkpoint verl finished saving (the newest global_step_N may be one it was still writing "
            "when it stopped), or an earlier one"
        )
    return actor


def merger_failure(checkpoint: str, python: str, output: str, log_file: str | None) -> CaprlError:
    """verl's model merger failed: one message naming the checkpoint and the cause (its last error line); its full
    output goes to ``log_file`` (and to the debug log, ``-vv``)."""
    log.debug("verl's model merger output:\n%s", output)
    where = "rerun with -vv for its full output"
    if log_file:
        try:
            Path(log_file).write_text(output)
            where = f"its full output is in {log_file}"
        except OSError:
            pass
    if re.search(r"No module named '?verl", output):
        cause = (
            f"verl is not installed for {python}: pass --python the interpreter of the environment that has "
            "verl (a curriculum uses verl.python)"
        )
    else:
        errors = [
            line.strip()
            for line in output.splitlines()
            if re.match(r"^\s*([A-Za-z_][\w.]*)?(Error|Exception|Interrupt|Exit)\b.*", line)
        ]
        last = (
            errors[-1] if errors else next((x.strip() for x in reversed(output.splitlines()) if x.strip()), "no output")
        )
        cause = f"verl's model merger stopped with {last[:300]}"
    return CaprlError(f"exporting {checkpoint} failed: {cause}; {where}")


def export_checkpoint(
    checkpoint: str, target: str, python: str | None = None, log_file: str | None = None
) -> list[str]:
    """verl FSDP checkpoint (``.../global_step_N/actor``) -> a Hugging Face directory, via verl's model merger run
    by ``python``: the interpreter of the environment with verl (a curriculum passes ``verl.python``); by default
    the one caprl runs under (``sys.executable``), never whatever ``python3`` comes first on PATH. A failure is one
    message naming the checkpoint and the cause; the merger's full output goes to ``log_file``."""
    actor = checkpoint_actor(checkpoint)
    python = python or sys.executable
    if shutil.which(python) is None:
        raise CaprlError(
            f"cannot export {checkpoint}: the interpreter {python} is not an executable; pass --python "
            "the interpreter of the environment that has verl (a curriculum uses verl.python)"
        )
    cmd = [
        python,
        "-m",
        "verl.model_merger",
        "merge",
        "--backend",
        "fsdp",
        "--local_dir",
        str(actor),
        "--target_dir",
        target,
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)  # its stderr is reported below
    if result.returncode != 0:
        raise merger_failure(checkpoint, python, f"$ {' '.join(cmd)}\n{result.stdout}{result.stderr}", log_file)
    return cmd


def export_model(checkpoint: str, output: str, *, python: str | None = None) -> str:
    """``caprl train export``: the checkpoint checked, then ``output`` claimed as the verbs claim theirs (a new or
    empty folder, or a previous export: anything else is refused naming it, nothing of the user's is touched),
    then verl's merger writes the Hugging Face model into it; a failed merge leaves its log in OUTPUT/export.log."""
    from caprl_kit.io.lock import output_lock_scope

    checkpoint_actor(checkpoint)
    with output_lock_scope():
        prepare_output(output, "train export", same_command=True)
        log_file = Path(output) / EXPORT_LOG
        export_checkpoint(checkpoint, output, python=python, log_file=str(log_file))
        log_file.unlink(missing_ok=True)  # a previous failure's log: this export worked
    return output
