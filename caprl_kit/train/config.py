"""``caprl train`` config: GRPO with the CapRL reward, embedded (``trainer: trl``) or on a cluster (``trainer: verl``)."""

from __future__ import annotations

import math
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, Field, model_validator

from caprl_kit.config import ConfigModel, FieldIssue, JobConfig, prompt_field, raise_issues, registry_name, volatile
from caprl_kit.hacking import HackingAlarmConfig
from caprl_kit.prompts import PROMPTS
from caprl_kit.rewards.config import (
    FaithfulnessConfig,
    JudgeRewardConfig,
    QARewardConfig,
    RewardConfig,
    TimestampFormatConfig,
)


class DataConfig(ConfigModel):
    train_files: list[str] = Field(description="Curated QA Parquet/JSONL files (caprl curate output)")
    val_files: list[str] = Field(default_factory=list, description="Validation files (verl requires them)")
    prompt_key: str = "prompt"
    image_key: str = "images"
    video_key: str = "videos"
    media_root: str | None = Field(
        None,
        description="Folder that relative image/video paths in the data files are "
        "resolved against (e.g. the LLaVA-Video-178K root for CapRL-Video-QA-20K)",
    )
    max_prompt_length: int = Field(2048, ge=16, description="Prompt tokens incl. visual tokens")
    max_response_length: int = Field(1024, ge=1, description="Caption tokens generated per rollout")
    train_batch_size: int = Field(96, ge=1, description="Prompts (images) per RL step (verl; trl: trl.* sizes)")
    filter_overlong_prompts: bool = Field(True, description="Drop prompts over max_prompt_length (verl: set for VL)")


class AlgorithmConfig(ConfigModel):
    estimator: Literal["grpo", "rloo"] = Field(
        "grpo", description="Group baseline: GRPO (z-score) or RLOO (verl only; trl: trl.scale_rewards)"
    )
    num_generations: int = Field(8, ge=2, description="Captions sampled per image (the group size)")
    kl_coef: float = Field(
        0.01,
        ge=0,
        description="KL loss coefficient; 0 drops the reference model. UNKNOWN in sources for CapRL v1 (spec §7)",
    )
    lr: float = Field(1e-6, gt=0, description="Learning rate")
    warmup_ratio: float = Field(0.0, ge=0, le=1)
    lr_scheduler: str = Field("constant", description="constant | cosine | linear")
    epochs: int = Field(1, ge=1)
    max_steps: int | None = volatile(
        None, ge=1, description="Stop after this many RL steps (a resume may raise it to train on)"
    )
    mini_batch_size: int = Field(
        24,
        ge=1,
        description="Prompts per policy update (verl ppo_mini_batch_size; trl: "
        "trl.per_device_batch_size x trl.gradient_accumulation_steps)",
    )
    temperature: float = Field(1.0, gt=0, description="Rollout temperature")
    top_p: float = Field(1.0, gt=0, le=1)
    freeze_vision_tower: bool = Field(False, description="Train only the language side (official repo issue #11)")
    entropy_coeff: float = Field(
        0.0, description="Entropy bonus (verl actor.entropy_coeff, TRL GRPOConfig.entropy_coef)"
    )
    loss_agg_mode: str = Field("token-mean", description="verl actor.loss_agg_mode (trl: trl.loss_type)")
    reward_normalization: Literal["sum", "per_term"] = Field(
        "sum",
        description="sum: the weighted sum of the reward terms is normalised within each group (GRPO); per_term: "
        "each term is normalised within its group, then weighted and summed (GDPO; trl: multi_objective_aggregation="
        "normalize_then_sum, verl: adv_estimator=gdpo), so a term with a small range is not drowned by a large one",
    )
    save_steps: int = volatile(100, ge=1, description="Checkpoint every N steps")
    eval_steps: int = Field(50, ge=1, description="Validate every N steps")
    seed: int = 0


class VerlOptions(ConfigModel):
    nnodes: int = volatile(1, ge=1)
    n_gpus_per_node: int = volatile(8, ge=1)
    tensor_parallel_size: int = volatile(1, ge=1, description="Rollout vLLM TP")
    gpu_memory_utilization: float = volatile(0.6, gt=0, le=1, description="Rollout vLLM memory share")
    strategy: Literal["fsdp", "fsdp2"] = "fsdp2"
    max_token_len_per_gpu: int = volatile(16384, ge=256, description="Dynamic batch token budget per GPU")
    reward_urls: list[str] = volatile(default_factory=list, description="caprl serve-reward replicas (round-robin)")
    reward_workers: int = volatile(8, ge=1, description="verl reward.num_workers")
    ray_address: str | None = volatile(None, description="Ray cluster to join (RAY_ADDRESS); None: verl starts one")
    project: str = volatile("caprl")
    experiment: str = volatile("run")
    checkpoint_dir: str | None = Field(None, description="trainer.default_local_dir (default OUTPUT/checkpoints)")
    logger: list[str] = volatile(default_factory=lambda: ["console"])
    python: str = volatile("python3", description="Interpreter of the verl[vllm] environment")
    extra_overrides: list[str] = Field(default_factory=list, description="Raw verl Hydra overrides, appended last")


class TRLOptions(ConfigModel):
    per_device_batch_size: int = Field(
        8,
        ge=1,
        description="Completions per device per step; times "
        "gradient_accumulation_steps, a multiple of algorithm.num_generations",
    )
    gradient_accumulation_steps: int = Field(1, ge=1)
    logging_steps: int = volatile(1, ge=1)
    loss_type: str = Field("grpo", description="TRL GRPOConfig.loss_type (grpo, dr_grpo, dapo, bnpo, ...)")
    scale_rewards: Literal["group", "batch", "none"] = Field(
        "group", description="Advantage scaling: group std (GRPO), batch std, or none (RLOO-like centering only)"
    )
    report_to: list[str] = volatile(default_factory=lambda: ["tensorboard"])
    resume: bool = volatile(True, description="Resume from the newest checkpoint in the output directory")
    max_pixels: int = Field(200704, ge=784, description="Image area cap for the policy's processor")
    select_on_val: bool = Field(
        True,
        description="With data.val_files: every algorithm.eval_steps caption the "
        "validation images greedily, score them, keep the best model in OUTPUT/best",
    )
    select_on: Literal["qa_accuracy", "qa_and_faithfulness"] = Field(
        "qa_accuracy",
        description="What picks OUTPUT/best: the validation QA accuracy, or (qa_and_faithfulness) the reward's own "
        "weighting of it and the validation claim precision (weights of reward.components qa_accuracy and "
        "faithfulness; needs trl.val_faithfulness)",
    )
    val_max_items: int | None = Field(None, ge=1, description="Validate on at most this many items")
    val_faithfulness: bool = Field(
        False,
        description="With validation: also the validation captions' claim precision (val/claim_precision), checked "
        "as reward.faithfulness says (evidence: reference reads the val rows' verifier.reference_column)",
    )
    hacking_alarm: HackingAlarmConfig | None = Field(
        default_factory=HackingAlarmConfig,
        description="With validation (method: grpo): monitor/hacking_alarm when the training reward rises over the "
        "last window validations while val/utility@256 or val/claim_precision falls (docs/train.md); null: off",
    )


class DPOOptions(ConfigModel):
    beta: float = Field(0.1, gt=0, description="DPO temperature: how far the policy may move from the reference")
    loss_type: str = Field("sigmoid", description="TRL DPOConfig.loss_type (sigmoid, ipo, hinge, robust, ...)")
    per_device_batch_size: int = Field(8, ge=1, description="Pairs per device per step")
    gradient_accumulation_steps: int = Field(1, ge=1)
    max_length: int | None = Field(None, ge=16, description="Truncate prompt+caption (tokens); null: no truncation")
    sft_weight: float = Field(
        0.0, ge=0, description="Adds TRL's 'sft' loss on the chosen caption with this weight (RPO-style); 0: plain DPO"
    )


def _prompt_name(name: str | None) -> str | None:
    return None if name is None else registry_name(PROMPTS)(name)


class TrainMediaConfig(ConfigModel):
    """How ``trainer: trl`` samples a video row's frames (``caprl_kit.io.media.load_video``), named as the other
    commands' ``media.*`` keys; the policy sees them as timestamped images (train/video_frames.py)."""

    video_fps: float = Field(2.0, gt=0, description="Frames sampled per second of video")
    video_min_frames: int = Field(4, ge=1, description="Fewest frames sampled (short clips)")
    video_max_frames: int = Field(32, ge=1, description="Most frames sampled from one video")
    video_max_pixels: int = Field(200704, ge=784, description="Upper bound on area per frame")

    @model_validator(mode="after")
    def _range(self) -> TrainMediaConfig:
        if self.video_min_frames > self.video_max_frames:
            raise FieldIssue(
                "video_min_frames",
                f"video_min_frames ({self.video_min_frames}) must be <= video_max_frames ({self.video_max_frames})",
                "lower one or raise the other",
            )
        return self


class SFTConfig(ConfigModel):
    data_files: list[str] = Field(description="Parquet/JSONL with an image or video (path) and a reference caption")
    caption_column: str = "caption"
    image_column: str = Field("image", description="task: image: the column holding the image")
    video_column: str = Field("video", description="task: video: the column holding the video")
    prompt: Annotated[str | None, AfterValidator(_prompt_name)] = prompt_field(
        None,
        description="The prompt the warm start captions under (a registered prompt), the one the RL rows hold; null: "
        "caprl_image for task: image, caprl_video_timestamped for video (caprl curate's export defaults)",
    )
    epochs: int = Field(3, ge=1)
    lr: float = Field(1e-4, gt=0)
    batch_size: int = Field(8, ge=1)
    max_steps: int | None = Field(None, ge=1)
    freeze_vision_tower: bool = Field(
        False,
        description="Train only the language side; a random-init vision tower "
        "trained at the language side's lr loses the small-object evidence",
    )
    log_steps: int = Field(10, ge=1, description="Write the loss to OUTPUT/sft_metrics.jsonl every N steps")


class TrainConfig(JobConfig):
    pipeline_module: ClassVar[str] = "caprl_kit.train.pipeline"

    kind: Literal["train"] = "train"
    trainer: Literal["trl", "verl"] = Field("trl", description="trl: one machine (CPU or one GPU); verl: clusters")
    method: Literal["grpo", "dpo"] = Field(
        "grpo",
        description="grpo: RL with the reward (algorithm.*); dpo: TRL's DPOTrainer on preference pairs "
        "(caprl train pairs) in data.train_files, the reward only selecting checkpoints on data.val_files",
    )
    policy: str = Field(description="Captioner to train: hub id or local path")
    task: Literal["image", "video"] = Field(
        "image", description="video: rows with videos (trl: the policy sees media.* frames as timestamped images)"
    )
    data: DataConfig
    media: TrainMediaConfig = Field(
        default_factory=TrainMediaConfig, description="trainer: trl, task: video: frame sampling of the videos"
    )
    reward: RewardConfig = Field(default_factory=RewardConfig, description="Terms and the answerer (in-process)")
    algorithm: AlgorithmConfig = Field(default_factory=AlgorithmConfig)
    sft: SFTConfig | None = Field(None, description="Supervised warm start before RL (trainer: trl)")
    verl: VerlOptions = Field(default_factory=VerlOptions)
    trl: TRLOptions = Field(default_factory=TRLOptions)
    dpo: DPOOptions = Field(default_factory=DPOOptions, description="method: dpo only")
    stages: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Curriculum: run these stages in order, each {name: ..., <keys to "
        "override>}; a stage without its own policy starts from the previous stage's exported model "
        "(CapRL++ S2D-Boot: an image stage, then a video stage)",
    )

    def stage_configs(self) -> list[tuple[str, TrainConfig, bool]]:
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
    def _check(self) -> TrainConfig:
        if self.stages and any(not isinstance(s, dict) for s in self.stages):
            raise ValueError("stages: each stage is a mapping {name: ..., <keys to override>}")
        if self.stages:
            return self  # each stage is validated as a whole config (stage_configs)
        issues: list[FieldIssue] = []
        if self.method == "dpo" and (self.trainer != "trl" or self.task != "image"):
            issues.append(
                FieldIssue(
                    "method",
                    "dpo runs with trainer: trl on image data here (verl users: the pairs "
                    "file is TRL's DPO format, docs/train.md)",
                    "set trainer: trl and task: image, or method: grpo",
                )
            )
        issues += self._media_ignores()
        if self.trainer == "verl" and not self.data.val_files:
            issues.append(
                FieldIssue(
                    "data.val_files",
                    "is empty, but verl requires it (its trainer always builds a validation set)",
                    "list the validation files",
                )
            )
        if self.trainer == "trl" and self.method == "grpo":
            # TRL's GRPOConfig: the generation batch (per device x accumulation steps x processes; one process
            # here) holds whole groups of num_generations completions
            t, n = self.trl, self.algorithm.num_generations
            batch = t.per_device_batch_size * t.gradient_accumulation_steps
            if batch % n:
                issues.append(
                    FieldIssue(
                        "trl.per_device_batch_size",
                        f"per_device_batch_size x gradient_accumulation_steps ({t.per_device_batch_size} x "
                        f"{t.gradient_accumulation_steps} = {batch}) must be a multiple of algorithm.num_generations "
                        f"({n}): TRL samples whole groups of completions",
                        f"set trl.per_device_batch_size to a multiple of {n // math.gcd(n, t.gradient_accumulation_steps)}"
                        ", or change algorithm.num_generations",
                    )
                )
        if self.reward.length.tokenizer is not None:
            issues.append(
                FieldIssue(
                    "reward.length.tokenizer",
                    "is ignored by caprl train: the length term counts "
                    "caption tokens with the policy's own tokenizer (spec §2.3)",
                    "remove it (caprl train pairs reads it)",
                )
            )
        issues += self._verl_ignores() if self.trainer == "verl" else self._trl_ignores()
        issues += self._audit_ignores()
        raise_issues(issues)
        return self

    def _media_ignores(self) -> list[FieldIssue]:
        """``media.*`` and the SFT media columns where they are not read: ``media.*`` only samples the frames of
        video rows for ``trainer: trl`` (verl reads videos with its own reader); a video run reads no image column
        and the reverse. A trl video run's answerer reads the video answer prompt (``reward.qa.task``)."""
        out = []
        media, default = self.media, TrainMediaConfig()
        changed = [k for k in TrainMediaConfig.model_fields if getattr(media, k) != getattr(default, k)]
        if self.task == "image":
            why, hint = "is used for video rows only (task: video)", "remove it, or set task: video"
        else:
            why = (
                "is ignored with trainer: verl: verl samples a video's frames with its own reader (qwen_vl_utils: "
                "2 fps by default, or fps / nframes in a row's {video: path, ...} entry)"
            )
            hint = "remove it, or set the sampling in the rows' video entries"
        if self.task == "image" or self.trainer == "verl":
            out += [FieldIssue(f"media.{k}", why, hint) for k in changed]
        if self.sft is not None:
            unused = "video_column" if self.task == "image" else "image_column"
            if getattr(self.sft, unused) != SFTConfig.model_fields[unused].default:
                used = "image_column" if self.task == "image" else "video_column"
                out.append(
                    FieldIssue(
                        f"sft.{unused}",
                        f"is not read with task: {self.task}: the warm start reads sft.{used}",
                        f"remove it and set sft.{used}",
                    )
                )
        q = self.reward.qa
        if self.trainer == "trl" and self.task == "video" and q.service is None and q.task != "video":
            out.append(
                FieldIssue(
                    "reward.qa.task",
                    f"is {q.task}, but task is video: the answerer would read the image answer prompt, "
                    "without the video prompt's attention to timestamps and order (spec §2.2)",
                    "set reward.qa.task: video",
                )
            )
        return out

    def _verl_ignores(self) -> list[FieldIssue]:
        """What ``trainer: verl`` would silently skip. Its reward is ``compute_score`` (rewards/verl_reward.py): the
        QA accuracy (+ the timestamp-format term for video) as the reward servers in verl.reward_urls score it with
        their own serve-reward config, plus the length term computed here (reward.length.l1/l2 and its weight)."""
        out = []
        if self.algorithm.reward_normalization == "per_term" and self.algorithm.estimator != "grpo":
            out.append(
                FieldIssue(
                    "algorithm.reward_normalization",
                    f"per_term (verl's gdpo estimator) replaces algorithm.estimator: {self.algorithm.estimator}: "
                    "GDPO normalises each term by its group mean and std, as GRPO does the sum",
                    "use algorithm.estimator: grpo with per_term, or reward_normalization: sum",
                )
            )
        if self.sft is not None:
            out.append(
                FieldIssue(
                    "sft",
                    "is ignored with trainer: verl: only the embedded trainer (trainer: trl) runs "
                    "the supervised warm start before RL",
                    "run the warm start with trainer: trl, in a "
                    "separate run or as a first trainer: trl stage in stages:, and set policy to the "
                    "model it exports: OUTPUT/sft, or final/",
                )
            )
        q, default_q = self.reward.qa, QARewardConfig()
        servers = "the reward servers (verl.reward_urls) score QA with their own caprl serve-reward qa config"
        for key in ("mode", "qa_num", "task", "compat", "seed", "answerer", "sampling"):
            if getattr(q, key) != getattr(default_q, key):
                out.append(
                    FieldIssue(
                        f"reward.qa.{key}",
                        f"is ignored with trainer: verl: {servers}",
                        f"set qa.{key} in the servers' serve-reward config, and remove it here",
                    )
                )
        if q.service is not None:
            out.append(
                FieldIssue(
                    "reward.qa.service",
                    "is not used by verl: its reward function reaches the servers listed in verl.reward_urls",
                    "move the URLs to verl.reward_urls",
                )
            )
        ts, default_ts = self.reward.timestamp_format, TimestampFormatConfig()
        for key in TimestampFormatConfig.model_fields:
            if getattr(ts, key) != getattr(default_ts, key):
                out.append(
                    FieldIssue(
                        f"reward.timestamp_format.{key}",
                        "is ignored with trainer: verl: the video "
                        "reward servers compute the timestamp-format term with their own "
                        "timestamp_format config",
                        f"set timestamp_format.{key} in the servers' serve-reward config, and remove it here",
                    )
                )
        judge, default_judge = self.reward.vl_judge, JudgeRewardConfig()
        for key in JudgeRewardConfig.model_fields:
            if getattr(judge, key) != getattr(default_judge, key):
                out.append(
                    FieldIssue(
                        f"reward.vl_judge.{key}",
                        "is ignored with trainer: verl: its reward function has no VL-judge term",
                        "use trainer: trl for a vl_judge reward, or remove it",
                    )
                )
        faith, default_faith = self.reward.faithfulness, FaithfulnessConfig()
        for key in FaithfulnessConfig.model_fields:
            if getattr(faith, key) != getattr(default_faith, key):
                out.append(
                    FieldIssue(
                        f"reward.faithfulness.{key}",
                        "is ignored with trainer: verl: its reward function has no faithfulness term",
                        "use trainer: trl for a faithfulness reward, or remove it",
                    )
                )
        names = [c.name for c in self.reward.components]
        for i, c in enumerate(self.reward.components):
            if c.name == "qa_accuracy" and c.weight != 1.0:
                out.append(
                    FieldIssue(
                        f"reward.components.{i}.weight",
                        f"is {c.weight}, but with trainer: verl the "
                        "reward servers' QA accuracy always enters the reward with weight 1",
                        "set it to 1.0 and scale the other terms instead, or use trainer: trl",
                    )
                )
            elif c.name == "timestamp_format" and c.weight:
                out.append(
                    FieldIssue(
                        f"reward.components.{i}",
                        "is ignored with trainer: verl: the video reward "
                        "servers add the timestamp-format term with their own weight: serve-reward's "
                        "format_weight, 0.2 for video by default",
                        "remove it here and set format_weight in the servers' serve-reward config",
                    )
                )
            elif c.name not in ("qa_accuracy", "length", "timestamp_format") and c.weight:
                out.append(
                    FieldIssue(
                        f"reward.components.{i}",
                        f"is {c.name}, a term trainer: verl ignores: its "
                        "reward function adds only the servers' QA accuracy, their timestamp-format "
                        "term for video and the length term",
                        "use trainer: trl for this term, or remove it",
                    )
                )
        if "qa_accuracy" not in names:
            out.append(
                FieldIssue(
                    "reward.components",
                    "has no qa_accuracy term, but with trainer: verl the reward "
                    "servers' QA accuracy always enters the reward (weight 1)",
                    "add {name: qa_accuracy, weight: 1.0}, or use trainer: trl",
                )
            )
        return out

    def _trl_ignores(self) -> list[FieldIssue]:
        """What ``trainer: trl`` would silently skip: verl-only keys without a TRL equivalent. (Mapped onto TRL's
        GRPOConfig: kl_coef -> beta, entropy_coeff -> entropy_coef; see train/trl_grpo.py grpo_args.)"""
        a, default = self.algorithm, AlgorithmConfig()
        dpo = self.method == "dpo"
        why = "is ignored with method: dpo" if dpo else "is ignored with trainer: trl"
        step = (
            "one DPO step takes dpo.per_device_batch_size x dpo.gradient_accumulation_steps pairs"
            if dpo
            else "one TRL step generates and learns from trl.per_device_batch_size x trl.gradient_accumulation_steps "
            "completions, algorithm.num_generations per prompt"
        )
        sizes = (
            "dpo.per_device_batch_size / dpo.gradient_accumulation_steps"
            if dpo
            else "trl.per_device_batch_size / trl.gradient_accumulation_steps"
        )
        out = []
        if a.estimator != default.estimator:
            out.append(
                FieldIssue(
                    "algorithm.estimator",
                    f"{why} (an RL advantage estimator)"
                    if dpo
                    else f"is {a.estimator}, but TRL's GRPOTrainer has no leave-one-out baseline: with "
                    "trainer: trl the advantage is always the group-relative one",
                    "remove it"
                    if dpo
                    else "use trainer: verl for RLOO, or trl.scale_rewards: none "
                    "for a group-mean baseline without std scaling, RLOO's advantage up to a factor "
                    "n/(n-1)",
                )
            )
        if a.mini_batch_size != default.mini_batch_size:
            out.append(FieldIssue("algorithm.mini_batch_size", f"{why}: {step}", f"set {sizes} instead, and remove it"))
        if self.data.train_batch_size != DataConfig.model_fields["train_batch_size"].default:
            out.append(FieldIssue("data.train_batch_size", f"{why}: {step}", f"set {sizes} instead, and remove it"))
        if a.loss_agg_mode != default.loss_agg_mode:
            twin = LOSS_TYPE_OF.get(a.loss_agg_mode)
            if dpo:
                hint = "set dpo.loss_type, and remove it"
            elif twin:
                hint = f"set trl.loss_type: {twin}, TRL's equivalent of {a.loss_agg_mode}, and remove it"
            else:
                hint = f"set trl.loss_type instead, and remove it: TRL has no equivalent of {a.loss_agg_mode}"
            out.append(
                FieldIssue(
                    "algorithm.loss_agg_mode",
                    f"{why}: TRL aggregates the loss as {'dpo' if dpo else 'trl'}.loss_type says",
                    hint,
                )
            )
        if dpo and a.reward_normalization != default.reward_normalization:
            out.append(FieldIssue("algorithm.reward_normalization", f"{why} (DPO has no reward terms)", "remove it"))
        if not dpo and a.reward_normalization == "per_term" and self.trl.scale_rewards != "group":
            out.append(
                FieldIssue(
                    "trl.scale_rewards",
                    f"is {self.trl.scale_rewards}, but with algorithm.reward_normalization: per_term TRL scales each "
                    "term by its group std and the weighted sum by the batch std, whatever scale_rewards says",
                    "remove trl.scale_rewards, or use reward_normalization: sum",
                )
            )
        if dpo and a.entropy_coeff != default.entropy_coeff:
            out.append(FieldIssue("algorithm.entropy_coeff", f"{why} (an RL entropy bonus)", "remove it"))
        return out

    def _audit_ignores(self) -> list[FieldIssue]:
        """The validation audit's keys (``trl.val_faithfulness``, a configured ``trl.hacking_alarm``) where nothing
        reads them: they watch the TRL trainer's validation captions, so they are refused with trainer: verl and
        without validation (no data.val_files, or trl.select_on_val: false); the alarm also with method: dpo, which
        logs no training reward for it to watch."""
        t = self.trl
        keys = ["trl.val_faithfulness"] if t.val_faithfulness else []
        if t.hacking_alarm is not None and t.hacking_alarm != HackingAlarmConfig():
            keys.append("trl.hacking_alarm")
        if t.select_on != "qa_accuracy":
            keys.append("trl.select_on")
        if self.trainer == "verl":
            why, hint = "is ignored with trainer: verl: it watches the TRL trainer's validation", "remove it"
        elif not self.data.val_files or not t.select_on_val:
            off = "data.val_files is empty" if not self.data.val_files else "trl.select_on_val is false"
            why, hint = f"is not used: no validation runs ({off})", "list data.val_files, or remove it"
        else:  # validation runs: only the alarm with DPO, and select_on's own needs
            keys = [k for k in keys if k == "trl.hacking_alarm"] if self.method == "dpo" else []
            why, hint = "is ignored with method: dpo: DPO logs no training reward to watch", "remove it"
            return [FieldIssue(k, why, hint) for k in keys] + self._selection_issues()
        return [FieldIssue(k, why, hint) for k in keys]

    def _selection_issues(self) -> list[FieldIssue]:
        """``trl.select_on: qa_and_faithfulness`` weighs two validation scores as the reward weighs its terms: both
        terms must be weighted in reward.components and the claim precision measured (trl.val_faithfulness)."""
        if self.trl.select_on == "qa_accuracy":
            return []
        weights = selection_weights(self)
        missing = [name for name, w in zip(("qa_accuracy", "faithfulness"), weights) if not w]
        if missing:
            return [
                FieldIssue(
                    "trl.select_on",
                    f"qa_and_faithfulness weighs validation scores as reward.components weighs its terms, and "
                    f"{' and '.join(missing)} has no weight there",
                    "add the term to reward.components, or use select_on: qa_accuracy",
                )
            ]
        if not self.trl.val_faithfulness:
            return [
                FieldIssue(
                    "trl.select_on",
                    "qa_and_faithfulness reads the validation claim precision, which trl.val_faithfulness measures",
                    "set trl.val_faithfulness: true",
                )
            ]
        return []


def selection_weights(cfg: TrainConfig) -> tuple[float, float]:
    """The weights of reward.components' qa_accuracy and faithfulness terms (0 for one not there): how
    ``trl.select_on: qa_and_faithfulness`` weighs the validation QA accuracy and claim precision."""
    weights = {c.name: c.weight for c in cfg.reward.components}
    return weights.get("qa_accuracy", 0.0), weights.get("faithfulness", 0.0)


#: verl actor.loss_agg_mode -> the TRL GRPOConfig.loss_type that aggregates the same way: token-mean / dapo divide by
#: the active tokens of the whole (accumulated) batch, seq-mean-token-mean / grpo average each caption's tokens then
#: the captions, seq-mean-token-sum-norm / dr_grpo average the captions' token sums over the max response length
LOSS_TYPE_OF = {"token-mean": "dapo", "seq-mean-token-mean": "grpo", "seq-mean-token-sum-norm": "dr_grpo"}
