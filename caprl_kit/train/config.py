"""``caprl train`` config: GRPO with the CapRL reward, embedded (``trainer: trl``) or on a cluster (``trainer: verl``)."""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from caprl_kit.config import ConfigModel, FieldIssue, JobConfig
from caprl_kit.rewards.config import RewardConfig


class DataConfig(ConfigModel):
    train_files: list[str] = Field(description="Curated QA Parquet/JSONL files (caprl curate output)")
    val_files: list[str] = Field(default_factory=list, description="Validation files (verl requires them)")
    prompt_key: str = "prompt"
    image_key: str = "images"
    video_key: str = "videos"
    media_root: str | None = Field(None, description="Folder that relative image/video paths in the data files are "
                                   "resolved against (e.g. the LLaVA-Video-178K root for CapRL-Video-QA-20K)")
    max_prompt_length: int = Field(2048, ge=16, description="Prompt tokens incl. visual tokens")
    max_response_length: int = Field(1024, ge=1, description="Caption tokens generated per rollout")
    train_batch_size: int = Field(96, ge=1, description="Prompts (images) per RL step")
    filter_overlong_prompts: bool = Field(True, description="Drop prompts over max_prompt_length (verl: set for VL)")


class AlgorithmConfig(ConfigModel):
    estimator: Literal["grpo", "rloo"] = Field("grpo", description="Group baseline: GRPO (z-score) or RLOO")
    num_generations: int = Field(8, ge=2, description="Captions sampled per image (the group size)")
    kl_coef: float = Field(0.01, ge=0, description="KL loss coefficient; 0 drops the reference model. "
                           "UNKNOWN in sources for CapRL v1 (spec §7)")
    lr: float = Field(1e-6, gt=0, description="Learning rate")
    warmup_ratio: float = Field(0.0, ge=0, le=1)
    lr_scheduler: str = Field("constant", description="constant | cosine | linear")
    epochs: int = Field(1, ge=1)
    max_steps: int | None = Field(None, ge=1, description="Stop after this many RL steps")
    mini_batch_size: int = Field(24, ge=1, description="Prompts per policy update (verl ppo_mini_batch_size)")
    temperature: float = Field(1.0, gt=0, description="Rollout temperature")
    top_p: float = Field(1.0, gt=0, le=1)
    freeze_vision_tower: bool = Field(False, description="Train only the language side (official repo issue #11)")
    entropy_coeff: float = 0.0
    loss_agg_mode: str = Field("token-mean", description="verl actor.loss_agg_mode")
    save_steps: int = Field(100, ge=1, description="Checkpoint every N steps")
    eval_steps: int = Field(50, ge=1, description="Validate every N steps")
    seed: int = 0


class VerlOptions(ConfigModel):
    nnodes: int = Field(1, ge=1)
    n_gpus_per_node: int = Field(8, ge=1)
    tensor_parallel_size: int = Field(1, ge=1, description="Rollout vLLM TP")
    gpu_memory_utilization: float = Field(0.6, gt=0, le=1, description="Rollout vLLM memory share")
    strategy: Literal["fsdp", "fsdp2"] = "fsdp2"
    max_token_len_per_gpu: int = Field(16384, ge=256, description="Dynamic batch token budget per GPU")
    reward_urls: list[str] = Field(default_factory=list, description="caprl serve-reward replicas (round-robin)")
    reward_workers: int = Field(8, ge=1, description="verl reward.num_workers")
    ray_address: str | None = Field(None, description="Ray cluster to join (RAY_ADDRESS); None: verl starts one")
    project: str = "caprl"
    experiment: str = "run"
    checkpoint_dir: str | None = Field(None, description="trainer.default_local_dir (default OUTPUT/checkpoints)")
    logger: list[str] = Field(default_factory=lambda: ["console"])
    python: str = Field("python3", description="Interpreter of the verl[vllm] environment")
    extra_overrides: list[str] = Field(default_factory=list, description="Raw verl Hydra overrides, appended last")


class TRLOptions(ConfigModel):
    per_device_batch_size: int = Field(8, ge=1, description="Completions per device per step; times "
                                       "gradient_accumulation_steps, a multiple of algorithm.num_generations")
    gradient_accumulation_steps: int = Field(1, ge=1)
    logging_steps: int = Field(1, ge=1)
    loss_type: str = Field("grpo", description="TRL GRPOConfig.loss_type (grpo, dr_grpo, dapo, bnpo, ...)")
    scale_rewards: Literal["group", "batch", "none"] = Field(
        "group", description="Advantage scaling: group std (GRPO), batch std, or none (RLOO-like centering only)")
    report_to: list[str] = Field(default_factory=lambda: ["tensorboard"])
    resume: bool = Field(True, description="Resume from the newest checkpoint in the output directory")
    max_pixels: int = Field(200704, ge=784, description="Image area cap for the policy's processor")
    select_on_val: bool = Field(True, description="With data.val_files: every algorithm.eval_steps caption the "
                                "validation images greedily, score them, keep the best model in OUTPUT/best")
    val_max_items: int | None = Field(None, ge=1, description="Validate on at most this many items")


class DPOOptions(ConfigModel):
    beta: float = Field(0.1, gt=0, description="DPO temperature: how far the policy may move from the reference")
    loss_type: str = Field("sigmoid", description="TRL DPOConfig.loss_type (sigmoid, ipo, hinge, robust, ...)")
    per_device_batch_size: int = Field(8, ge=1, description="Pairs per device per step")
    gradient_accumulation_steps: int = Field(1, ge=1)
    max_length: int | None = Field(None, ge=16, description="Truncate prompt+caption (tokens); null: no truncation")
    sft_weight: float = Field(0.0, ge=0, description="Adds TRL's 'sft' loss on the chosen caption with this weight "
                              "(RPO-style); 0: plain DPO")


class SFTConfig(ConfigModel):
    data_files: list[str] = Field(description="Parquet/JSONL with an image (path) and a reference caption")
    caption_column: str = "caption"
    image_column: str = "image"
    epochs: int = Field(3, ge=1)
    lr: float = Field(1e-4, gt=0)
    batch_size: int = Field(8, ge=1)
    max_steps: int | None = Field(None, ge=1)
    freeze_vision_tower: bool = Field(False, description="Train only the language side; a random-init vision tower "
                                      "trained at the language side's lr loses the small-object evidence")
    log_steps: int = Field(10, ge=1, description="Write the loss to OUTPUT/sft_metrics.jsonl every N steps")


class TrainConfig(JobConfig):
    pipeline_module: ClassVar[str] = "caprl_kit.train.pipeline"

    kind: Literal["train"] = "train"
    trainer: Literal["trl", "verl"] = Field("trl", description="trl: one machine (CPU or one GPU); verl: clusters")
    method: Literal["grpo", "dpo"] = Field(
        "grpo", description="grpo: RL with the reward (algorithm.*); dpo: TRL's DPOTrainer on preference pairs "
        "(caprl train pairs) in data.train_files, the reward only selecting checkpoints on data.val_files")
    policy: str = Field(description="Captioner to train: hub id or local path")
    task: Literal["image", "video"] = Field("image", description="video data needs trainer: verl")
    data: DataConfig
    reward: RewardConfig = Field(default_factory=RewardConfig, description="Terms and the answerer (in-process)")
    algorithm: AlgorithmConfig = Field(default_factory=AlgorithmConfig)
    sft: SFTConfig | None = Field(None, description="Supervised warm start before RL")
    verl: VerlOptions = Field(default_factory=VerlOptions)
    trl: TRLOptions = Field(default_factory=TRLOptions)
    dpo: DPOOptions = Field(default_factory=DPOOptions, description="method: dpo only")
    stages: list[dict[str, Any]] = Field(
        default_factory=list, description="Curriculum: run these stages in order, each {name: ..., <keys to "
        "override>}; a stage without its own policy starts from the previous stage's exported model "
        "(CapRL++ S2D-Boot: an image stage, then a video stage)")

    def stage_configs(self) -> list[tuple[str, "TrainConfig", bool]]:
        """(name, validated config, policy inherited from the previous stage) per curriculum stage; every problem
        of every stage in one ConfigError, keys prefixed ``stages.<i>``."""
        from caprl_kit.config import deep_merge, validate
        from caprl_kit.errors import ConfigError, ConfigIssue

        base = self.model_dump(mode="json", exclude={"stages"})
        out, issues = [], []
        for i, stage in enumerate(self.stages):
            name = str(stage.get("name") or f"stage{i}")
            overrides = {k: v for k, v in stage.items() if k != "name"}
            data = deep_merge(base, overrides)
            data["output_dir"] = f"{self.output_dir}/{name}" if self.output_dir else None
            try:
                out.append((name, validate(TrainConfig, data), i > 0 and "policy" not in overrides))
            except ConfigError as exc:
                issues += [ConfigIssue(f"stages.{i}.{x.path}", x.message, x.hint) for x in exc.issues]
        if len({n for n, _, _ in out}) != len(out):
            issues.append(ConfigIssue("stages", "stage names must be unique"))
        if issues:
            raise ConfigError(issues)
        return out

    @model_validator(mode="after")
    def _check(self) -> "TrainConfig":
        if self.stages and any(not isinstance(s, dict) for s in self.stages):
            raise ValueError("stages: each stage is a mapping {name: ..., <keys to override>}")
        if self.stages:
            return self  # each stage is validated as a whole config (stage_configs)
        if self.method == "dpo" and (self.trainer != "trl" or self.task != "image"):
            raise FieldIssue("method", "dpo runs with trainer: trl on image data here (verl users: the pairs file is "
                             "TRL's DPO format, docs/train.md)", "set trainer: trl and task: image, or method: grpo")
        if self.trainer == "verl" and self.reward.qa.service is not None:
            raise FieldIssue("reward.qa.service", "is not used by verl: its reward function reaches the servers "
                             "listed in verl.reward_urls", "move the URLs to verl.reward_urls")
        if self.trainer == "trl" and self.task == "video":
            raise ValueError("task: video is not supported by TRL's GRPOTrainer here; set trainer: verl")
        if self.trainer == "verl" and not self.data.val_files:
            raise ValueError("verl requires data.val_files (its trainer always builds a validation set)")
        if self.trainer == "trl" and self.method == "grpo":
            # TRL's GRPOConfig: the generation batch (per device x accumulation steps x processes; one process
            # here) holds whole groups of num_generations completions
            t, n = self.trl, self.algorithm.num_generations
            batch = t.per_device_batch_size * t.gradient_accumulation_steps
            if batch % n:
                raise FieldIssue(
                    "trl.per_device_batch_size",
                    f"per_device_batch_size x gradient_accumulation_steps ({t.per_device_batch_size} x "
                    f"{t.gradient_accumulation_steps} = {batch}) must be a multiple of algorithm.num_generations "
                    f"({n}): TRL samples whole groups of completions",
                    f"set trl.per_device_batch_size to a multiple of {n // math.gcd(n, t.gradient_accumulation_steps)}"
                    ", or change algorithm.num_generations")
        return self
