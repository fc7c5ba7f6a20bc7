"""Every config key is used or refused: a key that validates and then does nothing on a path (a trainer, a command,
a back end) is refused when the config is loaded, one ConfigIssue naming the key, why it is ignored there and what to
use instead; all of them at once, before anything is written. The cases load built-in recipes through the real loader
(``load_config`` with CLI-style overrides)."""

from __future__ import annotations

import pytest

from caprl_kit.config import dump_config, load_config
from caprl_kit.errors import ConfigError

VERL = "train/grpo_qwen25vl3b_verl"
TRL = "train/grpo_tiny_trl"
DPO = "train/dpo_qwen25vl3b_trl"
ANNOTATE = "annotate/caption_images_qwen25vl3b"  # backend: vllm
EVAL = "eval/prism_image"  # captioner and answerer: vllm
PAIRS = "pairs/caprl_image_qwen25vl3b"
CURATE = "curate/mcq_qwen25vl72b"  # generate: openai, answer: vllm
SERVE = "serve_reward/qa_image_qwen25_3b"

# (recipe, overrides, the refused key, what the message must point to instead)
CASES = [
    # trainer: verl -- its reward is the servers' QA (+ format for video) and the length term computed locally
    (VERL, ["sft.data_files=[warm.jsonl]"], "sft", "trainer: trl"),
    (VERL, ["reward.qa.mode=all_qa"], "reward.qa.mode", "serve-reward config"),
    (VERL, ["reward.qa.qa_num=4"], "reward.qa.qa_num", "serve-reward config"),
    (VERL, ["reward.qa.task=video"], "reward.qa.task", "serve-reward config"),
    (VERL, ["reward.qa.answerer.name=vllm", "reward.qa.answerer.model=m"], "reward.qa.answerer",
     "serve-reward config"),
    (VERL, ["reward.qa.sampling.temperature=0.2"], "reward.qa.sampling", "serve-reward config"),
    (VERL, ["reward.timestamp_format.max_minute=100"], "reward.timestamp_format.max_minute", "serve-reward config"),
    (VERL, ["reward.vl_judge.judge.model=judge"], "reward.vl_judge.judge", "trainer: trl"),
    (VERL, ["reward.components.0.weight=0.5"], "reward.components.0.weight", "trainer: trl"),
    (VERL, ["reward.components=[{name: qa_accuracy}, {name: timestamp_format, weight: 0.2}]"],
     "reward.components.1", "format_weight"),
    (VERL, ["reward.components=[{name: qa_accuracy}, {name: vl_judge, weight: 0.5}]"], "reward.components.1",
     "trainer: trl"),
    (VERL, ["reward.components=[{name: length, weight: 0.2}]"], "reward.components", "qa_accuracy"),
    (VERL, ["reward.components=[{name: qa_accuracy}, {name: faithfulness, weight: 0.5}]"], "reward.components.1",
     "trainer: trl"),
    (VERL, ["reward.faithfulness.verifier.reference_column=reference"], "reward.faithfulness.verifier",
     "trainer: trl"),
    (PAIRS, ["reward.components=[{name: qa_accuracy}, {name: faithfulness, weight: 0.5}]"],
     "reward.faithfulness.verifier.evidence", "evidence: media"),
    # trainer: trl -- verl-only algorithm keys without a TRL GRPOConfig equivalent
    (TRL, ["algorithm.estimator=rloo"], "algorithm.estimator", "trainer: verl"),
    (TRL, ["algorithm.mini_batch_size=16"], "algorithm.mini_batch_size", "trl.gradient_accumulation_steps"),
    (TRL, ["data.train_batch_size=32"], "data.train_batch_size", "trl.per_device_batch_size"),
    (TRL, ["algorithm.loss_agg_mode=seq-mean-token-mean"], "algorithm.loss_agg_mode", "trl.loss_type: grpo"),
    (TRL, ["algorithm.loss_agg_mode=seq-mean-token-sum"], "algorithm.loss_agg_mode", "trl.loss_type"),
    (DPO, ["algorithm.entropy_coeff=0.01"], "algorithm.entropy_coeff", "remove it"),
    (DPO, ["algorithm.mini_batch_size=16"], "algorithm.mini_batch_size", "dpo.gradient_accumulation_steps"),
    (TRL, ["reward.length.tokenizer=Qwen/Qwen2.5-VL-3B-Instruct"], "reward.length.tokenizer", "remove it"),
    # the decoding keys of old, now one decode block for every command that decodes media
    (ANNOTATE, ["runner.decode_workers=8"], "runner.decode_workers", "decode.workers"),
    (ANNOTATE, ["batching.decode_processes=true"], "batching.decode_processes", "decode.processes"),
    (CURATE, ["runner.decode_ahead=8"], "runner.decode_ahead", "decode.ahead"),
    (EVAL, ["runner.decode_workers=8"], "runner.decode_workers", "decode.workers"),
    (PAIRS, ["batching.decode_workers=2"], "batching.decode_workers", "decode.workers"),
    # sampling.n > 1 where only the first completion is read
    (TRL, ["reward.qa.sampling.n=4"], "reward.qa.sampling.n", "qa_num"),
    (TRL, ["reward.vl_judge.sampling.n=2"], "reward.vl_judge.sampling.n", "set it to 1"),
    (SERVE, ["qa.sampling.n=2"], "qa.sampling.n", "qa_num"),
    (EVAL, ["answerer.sampling.n=4"], "answerer.sampling.n", "captioner.sampling.n"),
    (CURATE, ["answer.backend.sampling.n=4"], "answer.backend.sampling.n", "answer.rotations"),
    (CURATE, ["generate.backend.sampling.n=2"], "generate.backend.sampling.n", "set it to 1"),
    # batch_size / max_batch_tokens on the streaming back ends
    (ANNOTATE, ["backend.batch_size=64"], "backend.batch_size", "vllm.max_num_seqs"),
    (CURATE, ["generate.backend.batch_size=32"], "generate.backend.batch_size", "openai.max_concurrency"),
    (EVAL, ["answerer.batch_size=256"], "answerer.batch_size", "vllm.max_num_seqs"),
    (ANNOTATE, ["batching.max_batch_tokens=1000"], "batching.max_batch_tokens", "backend.vllm.max_num_seqs"),
    # per-term reward normalisation (GDPO) where the trainer cannot honour it as asked
    (VERL, ["algorithm.reward_normalization=per_term", "algorithm.estimator=rloo"], "algorithm.reward_normalization",
     "algorithm.estimator: grpo"),
    (TRL, ["algorithm.reward_normalization=per_term", "trl.scale_rewards=batch"], "trl.scale_rewards",
     "reward_normalization: sum"),
    (DPO, ["algorithm.reward_normalization=per_term"], "algorithm.reward_normalization", "remove it"),
    # a carried input column named like a column caprl writes would clash in every shard
    (ANNOTATE, ["input.carry_columns=[license, caption]"], "input.carry_columns", "rename those input columns"),
    (CURATE, ["input.carry_columns=[license, prompt]"], "input.carry_columns", "rename those input columns"),
]


def _issues(recipe: str, overrides: list[str]) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(recipe, overrides)
    return info.value


@pytest.mark.parametrize("recipe, overrides, key, instead", CASES,
                         ids=[f"{r.split('/')[0]}:{k}" for r, _, k, _ in CASES])
def test_an_ignored_key_is_refused_naming_it_and_what_to_use(recipe: str, overrides: list[str], key: str,
                                                             instead: str) -> None:
    err = _issues(recipe, overrides)
    named = [i for i in err.issues if i.path == key]
    assert named, f"no issue names {key}: {err}"
    assert instead in named[0].render(), named[0].render()
    assert f"  - {key}: " in str(err)  # the CLI's message names the key first


def test_every_refusal_is_reported_at_once() -> None:
    err = _issues(VERL, ["sft.data_files=[warm.jsonl]", "reward.qa.mode=all_qa",
                         "reward.timestamp_format.version=legacy", "reward.length.tokenizer=tok"])
    assert {i.path for i in err.issues} == {"sft", "reward.qa.mode", "reward.timestamp_format.version",
                                            "reward.length.tokenizer"}
    err = _issues(ANNOTATE, ["runner.decode_workers=8", "runner.decode_ahead=8", "batching.decode_processes=true"])
    assert {i.path for i in err.issues} == {"runner.decode_workers", "runner.decode_ahead", "batching.decode_processes"}


@pytest.mark.parametrize("recipe, overrides", [
    (VERL, ["reward.length.l1=1024", "algorithm.loss_agg_mode=seq-mean-token-mean", "algorithm.estimator=rloo",
            "algorithm.entropy_coeff=0.01", "algorithm.mini_batch_size=64"]),  # what verl does read
    (TRL, ["algorithm.entropy_coeff=0.01", "algorithm.kl_coef=0.02", "trl.loss_type=dapo"]),  # mapped onto GRPOConfig
    (TRL, ["reward.components=[{name: qa_accuracy}, {name: faithfulness, weight: 0.5}]",
           "reward.faithfulness.verifier.reference_column=reference"]),  # TRL computes the faithfulness term
    (CURATE, ["decode.workers=8", "decode.ahead=8", "decode.processes=true"]),  # every command that decodes
    (ANNOTATE, ["decode.workers=8", "decode.ahead=16", "batching.window=32", "backend.vllm.max_num_seqs=64"]),
    (EVAL, ["decode.workers=8", "decode.processes=true"]),
    (PAIRS, ["decode.workers=4", "decode.ahead=32"]),
    (ANNOTATE, ["backend.name=transformers", "backend.batch_size=32", "batching.max_batch_tokens=1000"]),
    (EVAL, ["captioner.sampling.n=8"]),  # the captions per item are all answered
    (PAIRS, ["captioner.sampling.n=8"]),  # all of them are scored and paired
    (PAIRS, ["reward.components=[{name: qa_accuracy}, {name: faithfulness, weight: 0.5}]",
             "reward.faithfulness.verifier.evidence=media", "reward.faithfulness.verifier.backend.name=openai"]),
])
def test_keys_that_are_read_on_the_path_stay_accepted(recipe: str, overrides: list[str]) -> None:
    load_config(recipe, overrides)


@pytest.mark.parametrize("recipe", [VERL, TRL, DPO, ANNOTATE, EVAL, PAIRS, CURATE, SERVE,
                                    "train/s2d_boot_qwen3vl4b_verl", "train/sanity_tiny_trl"])
def test_a_resolved_config_loads_again(recipe: str, tmp_path) -> None:
    """config.resolved.yaml holds every default: none of them may count as a refused setting."""
    path = tmp_path / "resolved.yaml"
    path.write_text(dump_config(load_config(recipe)))
    load_config(path)


def test_the_trl_grpo_config_carries_the_mapped_algorithm_keys(tmp_path) -> None:
    """algorithm.entropy_coeff -> GRPOConfig.entropy_coef (TRL's mean per-token entropy bonus, verl's with its
    default token-mean aggregation), algorithm.kl_coef -> beta; trl.* as they are."""
    pytest.importorskip("trl")
    from caprl_kit.train.trl_grpo import grpo_args

    cfg = load_config(TRL, ["algorithm.entropy_coeff=0.01", "algorithm.kl_coef=0.02", "trl.loss_type=dapo",
                            "trl.scale_rewards=none"], values={"output_dir": str(tmp_path)})
    args = grpo_args(cfg, [7])
    assert (args.entropy_coef, args.beta, args.loss_type, args.scale_rewards) == (0.01, 0.02, "dapo", "none")
    assert args.num_generations == cfg.algorithm.num_generations
    assert args.generation_kwargs == {"suppress_tokens": [7]}
    assert grpo_args(load_config(TRL, values={"output_dir": str(tmp_path)})).entropy_coef == 0.0


def test_the_plan_names_what_each_trainer_runs() -> None:
    from caprl_kit.train.pipeline import plan

    trl = plan(load_config(TRL, ["trl.scale_rewards=none"]))
    assert trl[0].startswith("GRPO (TRL GRPOTrainer: no std scaling, loss_type grpo) on "), trl[0]
    assert not any("RLOO" in line for line in trl)
    warm = plan(load_config(TRL, ["sft.data_files=[warm.jsonl]"]))
    assert warm[0].startswith("supervised warm start on warm.jsonl") and "GRPO" in warm[1]
