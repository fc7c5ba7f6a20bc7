"""The verl launcher: our config -> ``python -m verl.trainer.main_ppo`` overrides; a CPU dry run that composes
verl's own Hydra config, runs its ``validate_config`` and loads our data through its ``create_rl_dataset``."""

from __future__ import annotations

import importlib.util
import os
import shlex
from pathlib import Path
from typing import Any

from caprl_kit.errors import ConfigError, ConfigIssue
from caprl_kit.train.config import TrainConfig

#: verl's record of the newest checkpoint in ``trainer.default_local_dir`` (what ``resume_mode=auto`` reads)
CHECKPOINT_TRACKER = "latest_checkpointed_iteration.txt"


def dataset_file() -> str:
    """verl imports the dataset class by file path (``data.custom_cls.path``); importing the module here would
    import verl."""
    import caprl_kit.train as pkg

    return str(Path(pkg.__file__).with_name("verl_dataset.py"))


def reward_file() -> str:
    import caprl_kit.rewards.verl_reward as m

    return m.__file__


def build_overrides(cfg: TrainConfig, *, overwrite: bool = False) -> list[str]:
    """verl's Hydra overrides for ``cfg``. verl resumes from the newest checkpoint in ``trainer.default_local_dir``
    (``resume_mode=auto``) unless ``overwrite`` (``--overwrite``: the previous run is discarded, ``disable``)."""
    a, v, d = cfg.algorithm, cfg.verl, cfg.data
    ckpt = v.checkpoint_dir or (f"{cfg.output_dir}/checkpoints" if cfg.output_dir else "checkpoints")
    length = next((c for c in cfg.reward.components if c.name == "length"), None)
    o = [
        f"algorithm.adv_estimator={a.estimator}",
        "algorithm.use_kl_in_reward=False",
        f"data.train_files={_list(d.train_files)}",
        f"data.val_files={_list(d.val_files)}",
        f"data.prompt_key={d.prompt_key}",
        f"data.image_key={d.image_key}",
        f"data.video_key={d.video_key}",
        f"data.train_batch_size={d.train_batch_size}",
        f"data.max_prompt_length={d.max_prompt_length}",
        f"data.max_response_length={d.max_response_length}",
        f"data.filter_overlong_prompts={d.filter_overlong_prompts}",
        f"data.seed={a.seed}",
        f"data.custom_cls.path={dataset_file()}",
        "data.custom_cls.name=CaprlRLDataset",
        f"actor_rollout_ref.model.path={cfg.policy}",
        "actor_rollout_ref.model.use_remove_padding=True",
        "actor_rollout_ref.model.enable_gradient_checkpointing=True",
        f"actor_rollout_ref.actor.strategy={v.strategy}",
        f"actor_rollout_ref.actor.optim.lr={a.lr}",
        f"actor_rollout_ref.actor.optim.lr_warmup_steps_ratio={a.warmup_ratio}",
        f"actor_rollout_ref.actor.ppo_mini_batch_size={a.mini_batch_size}",
        "actor_rollout_ref.actor.use_dynamic_bsz=True",
        f"actor_rollout_ref.actor.ppo_max_token_len_per_gpu={v.max_token_len_per_gpu}",
        f"actor_rollout_ref.actor.use_kl_loss={a.kl_coef > 0}",
        f"actor_rollout_ref.actor.kl_loss_coef={a.kl_coef}",
        "actor_rollout_ref.actor.kl_loss_type=low_var_kl",
        f"actor_rollout_ref.actor.entropy_coeff={a.entropy_coeff}",
        f"actor_rollout_ref.actor.loss_agg_mode={a.loss_agg_mode}",
        f"actor_rollout_ref.actor.freeze_vision_tower={a.freeze_vision_tower}",
        "actor_rollout_ref.actor.checkpoint.save_contents=[model,optimizer,extra,hf_model]",
        "actor_rollout_ref.rollout.name=vllm",
        f"actor_rollout_ref.rollout.n={a.num_generations}",
        f"actor_rollout_ref.rollout.temperature={a.temperature}",
        f"actor_rollout_ref.rollout.top_p={a.top_p}",
        f"actor_rollout_ref.rollout.tensor_model_parallel_size={v.tensor_parallel_size}",
        f"actor_rollout_ref.rollout.gpu_memory_utilization={v.gpu_memory_utilization}",
        f"actor_rollout_ref.rollout.max_model_len={d.max_prompt_length + d.max_response_length}",
        "actor_rollout_ref.rollout.log_prob_use_dynamic_bsz=True",
        f"actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu={v.max_token_len_per_gpu}",
        "actor_rollout_ref.ref.log_prob_use_dynamic_bsz=True",
        f"actor_rollout_ref.ref.log_prob_max_token_len_per_gpu={v.max_token_len_per_gpu}",
        f"reward.custom_reward_function.path={reward_file()}",
        "reward.custom_reward_function.name=compute_score",
        f"+reward.custom_reward_function.reward_kwargs.reward_urls='{','.join(v.reward_urls)}'",
        "reward.reward_manager.name=naive",
        f"reward.num_workers={v.reward_workers}",
        f"trainer.nnodes={v.nnodes}",
        f"trainer.n_gpus_per_node={v.n_gpus_per_node}",
        f"trainer.project_name={v.project}",
        f"trainer.experiment_name={v.experiment}",
        f"trainer.default_local_dir={ckpt}",
        f"trainer.logger={_list(v.logger)}",
        f"trainer.total_epochs={a.epochs}",
        f"trainer.save_freq={a.save_steps}",
        f"trainer.test_freq={a.eval_steps}",
        f"trainer.resume_mode={'disable' if overwrite else 'auto'}",
    ]
    if a.max_steps:
        o.append(f"trainer.total_training_steps={a.max_steps}")
    if length is not None and length.weight:
        o += [
            f"+reward.custom_reward_function.reward_kwargs.length_tokenizer={cfg.policy}",
            f"+reward.custom_reward_function.reward_kwargs.length_weight={length.weight}",
            f"+reward.custom_reward_function.reward_kwargs.length_l1={cfg.reward.length.l1}",
            f"+reward.custom_reward_function.reward_kwargs.length_l2={cfg.reward.length.l2}",
        ]
    if a.reward_normalization == "per_term":  # GDPO: verl's gdpo estimator over the terms compute_score returns
        keys, weights = ["served_reward"], [1.0]
        if length is not None and length.weight:
            keys, weights = [*keys, "length_reward"], [*weights, length.weight]
        o[0] = "algorithm.adv_estimator=gdpo"
        o += [
            f"+algorithm.gdpo_reward_keys={_list(keys)}",
            f"+algorithm.gdpo_reward_weights={_list([str(w) for w in weights])}",
        ]
    if d.media_root:
        o.append(f"+data.media_root={d.media_root}")
    if cfg.task == "video":
        o.append("+actor_rollout_ref.rollout.limit_images=0")
    if "qwen3" in cfg.policy.lower() and "vl" in cfg.policy.lower():
        o.append("data.image_patch_size=16")  # verl's yaml says 14; Qwen3-VL patches are 16 (verl notes §1.4)
    return o + list(v.extra_overrides)


def _list(items: list[str]) -> str:
    return "[" + ",".join(items) + "]"


def command(cfg: TrainConfig, *, overwrite: bool = False) -> list[str]:
    return [cfg.verl.python, "-m", "verl.trainer.main_ppo", *build_overrides(cfg, overwrite=overwrite)]


def discard_checkpoints(folder: str) -> list[str]:
    """Remove verl's checkpoints from ``folder`` (``verl.checkpoint_dir`` outside OUTPUT, on ``--overwrite``): its
    ``global_step_N/`` folders and ``latest_checkpointed_iteration.txt``, nothing else. Returns what was removed."""
    import shutil

    root = Path(folder)
    gone = [p for p in sorted(root.glob("global_step_*")) if p.is_dir() and p.name.rpartition("_")[2].isdigit()]
    gone += [p for p in (root / CHECKPOINT_TRACKER,) if p.is_file()]
    for p in gone:
        if p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink()
    return [str(p) for p in gone]


def compose(cfg: TrainConfig) -> Any:
    """verl's own ppo_trainer config with our overrides (Hydra compose API, offline)."""
    import verl
    from hydra import compose as hydra_compose, initialize_config_dir
    from hydra.errors import ConfigCompositionException

    cfg_dir = os.path.join(os.path.dirname(verl.__file__), "trainer", "config")
    overrides = build_overrides(cfg)
    try:
        with initialize_config_dir(config_dir=cfg_dir, version_base=None):
            return hydra_compose(config_name="ppo_trainer", overrides=overrides)
    except ConfigCompositionException as exc:
        cause = str(exc.__cause__ or exc)
        bad = next((o for o in cfg.verl.extra_overrides if o.split("=")[0].lstrip("+~") in str(exc)), None)
        path = "verl.extra_overrides" if bad else "verl"
        raise ConfigError(
            [
                ConfigIssue(
                    path, f"verl rejects the generated config: {exc}", f"{cause[:200]}" if cause != str(exc) else None
                )
            ]
        ) from None


def dry_run(cfg: TrainConfig) -> list[str]:
    """Compose + validate with verl's code; load the data through verl's create_rl_dataset when the policy is a
    local directory. Returns report lines; raises ConfigError on any failure."""
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config

    vcfg = compose(cfg)
    lines = ["verl: composed ppo_trainer with our overrides"]
    try:
        validate_config(vcfg, use_reference_policy=need_reference_policy(vcfg), use_critic=need_critic(vcfg))
    except (AssertionError, ValueError) as exc:
        raise ConfigError([ConfigIssue("verl", f"verl's validate_config failed: {exc}")]) from None
    lines.append("verl: validate_config passed")
    served = [f"{c.weight} x {c.name}" for c in cfg.reward.components if c.name != "length" and c.weight]
    urls = ", ".join(cfg.verl.reward_urls) or "$CAPRL_REWARD_URLS"
    lines.append(
        f"reward: {' + '.join(served) or 'nothing'} computed by the reward servers at {urls} (their "
        "serve-reward config must hold these terms and weights); length computed in the reward function"
        + (
            "; per_term: verl's gdpo estimator normalises the served reward and the length term each within its "
            "group (for video the server's QA + format sum is one term)"
            if cfg.algorithm.reward_normalization == "per_term"
            else ""
        )
    )
    decoder = any(importlib.util.find_spec(m) for m in ("torchcodec", "decord"))
    if Path(cfg.policy).is_dir() and cfg.task == "video" and not decoder:
        lines.append(
            "verl: SKIPPED the dataset check: verl decodes video files through qwen_vl_utils, which needs "
            "torchcodec or decord (neither is installed here; verl[verl-core] brings torchcodec)"
        )
    elif Path(cfg.policy).is_dir():
        lines += check_dataset(cfg, vcfg)
    else:
        lines.append(
            f"verl: SKIPPED the dataset check: the policy {cfg.policy} is not a local directory "
            "(its processor is needed to load the data the way verl does)"
        )
    lines.append("command: " + " ".join(shlex.quote(x) for x in command(cfg)))
    return lines


def check_dataset(cfg: TrainConfig, vcfg: Any) -> list[str]:
    import datasets
    from omegaconf import open_dict
    from verl.trainer.ppo.utils import create_rl_dataset
    from verl.utils.config import omega_conf_to_dataclass

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    model = omega_conf_to_dataclass(vcfg.actor_rollout_ref.model)
    data_cfg = vcfg.data.copy()
    with open_dict(data_cfg):
        # filter in-process: a worker pool forked from this (threaded) process can deadlock
        data_cfg.filter_overlong_prompts_workers = None
    out = []
    for files in (list(vcfg.data.train_files), list(vcfg.data.val_files)):
        n_rows = sum(
            len(datasets.load_dataset("parquet" if f.endswith(".parquet") else "json", data_files=f, split="train"))
            for f in files
        )
        ds = create_rl_dataset(files, data_cfg, model.tokenizer, model.processor)
        if len(ds) != n_rows:
            raise ConfigError(
                [
                    ConfigIssue(
                        "data",
                        f"verl kept {len(ds)} of {n_rows} rows of {files}: rows were "
                        "dropped (too long for data.max_prompt_length, or broken media)",
                    )
                ]
            )
        if len(ds):
            _check_media_reached(ds[0], files, data_cfg)
        out.append(f"verl: create_rl_dataset loaded all {n_rows} rows of {', '.join(files)}")
    return out


def _check_media_reached(row: dict[str, Any], files: list[str], data_cfg: Any) -> None:
    """A row whose prompt has an ``<image>`` / ``<video>`` placeholder must reach the model with that media: verl
    silently leaves the placeholder as text when the media column is not where ``data.image_key`` / ``video_key``
    say."""
    messages = row.get("raw_prompt") or []
    parts = [p for m in messages if isinstance(m.get("content"), list) for p in m["content"]]
    text = " ".join(str(m.get("content")) for m in messages if isinstance(m.get("content"), str))
    text += " ".join(str(p.get("text", "")) for p in parts if p.get("type") == "text")
    for kind, key in (("image", data_cfg.image_key), ("video", data_cfg.video_key)):
        if f"<{kind}>" in text and not any(p.get("type") == kind for p in parts):
            raise ConfigError(
                [
                    ConfigIssue(
                        f"data.{kind}_key",
                        f"verl read the first row of {files[0]} without its "
                        f"{kind}: the prompt says <{kind}> but column '{key}' holds none",
                        f"set data.{kind}_key to the column with the {kind}s",
                    )
                ]
            )
