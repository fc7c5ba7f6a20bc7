"""The verl adapter through verl's own reward manager (CPU, no Ray): load_reward_manager + run_single, with the
reward server answering over real HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import os

import numpy as np
import pytest

from caprl_kit.rewards import verl_reward
from caprl_kit.rewards.server import RewardServerConfig
from caprl_kit.rewards.server_app import create_app
from uvicorn_thread import serve

pytest.importorskip("verl")
pytestmark = pytest.mark.slow

GT = [{"question": "What color is the circle?", "choices": ["A) red", "B) blue", "C) green", "D) yellow"], "answer": "A"},
      {"question": "What color is the square?", "choices": ["A) red", "B) blue", "C) green", "D) yellow"], "answer": "B"}]


def verl_config(url: str, tokenizer_dir: str, manager: str = "naive"):
    import verl
    from hydra import compose, initialize_config_dir

    cfg_dir = os.path.join(os.path.dirname(verl.__file__), "trainer", "config")
    with initialize_config_dir(config_dir=cfg_dir, version_base=None):
        return compose(config_name="ppo_trainer", overrides=[
            f"reward.custom_reward_function.path={verl_reward.__file__}",
            "reward.custom_reward_function.name=compute_score",
            f"+reward.custom_reward_function.reward_kwargs.reward_urls={url}",
            f"+reward.custom_reward_function.reward_kwargs.length_tokenizer={tokenizer_dir}",
            "+reward.custom_reward_function.reward_kwargs.length_weight=0.2",
            "+reward.custom_reward_function.reward_kwargs.length_l1=4",
            "+reward.custom_reward_function.reward_kwargs.length_l2=1000",
            f"reward.reward_manager.name={manager}",
        ])


def data_item(tokenizer, caption: str, gt):
    import torch
    from verl import DataProto

    prompt = torch.tensor([tokenizer.encode("describe", add_special_tokens=False)])
    resp_ids = tokenizer.encode(caption, add_special_tokens=False)
    responses = torch.tensor([resp_ids])
    mask = torch.ones(1, prompt.shape[1] + responses.shape[1], dtype=torch.long)
    return DataProto.from_dict(
        tensors={"prompts": prompt, "responses": responses, "attention_mask": mask},
        non_tensors={"data_source": np.array(["image_caption_rl"], dtype=object),
                     "reward_model": np.array([{"ground_truth": gt, "style": "rule"}], dtype=object),
                     "extra_info": np.array([{"index": 0}], dtype=object)},
    )


def test_compute_score_through_verls_reward_manager(tiny_models) -> None:
    from transformers import AutoTokenizer
    from verl.trainer.ppo.reward import load_reward_manager

    tok_dir = str(tiny_models["captioner"])
    tokenizer = AutoTokenizer.from_pretrained(tok_dir)
    server_cfg = RewardServerConfig.model_validate({"qa": {"seed": 0, "answerer": {"name": "lexical"}}})
    app = create_app(server_cfg)
    full = "A red circle at the left and a blue square at the right."
    half = "A red circle at the left."
    loop = asyncio.new_event_loop()  # the reward manager binds the current loop when built, as in verl's worker
    asyncio.set_event_loop(loop)
    with serve(app) as url:
        mgr = load_reward_manager(verl_config(url, tok_dir), tokenizer)

        async def score_all():
            # verl calls run_single per sample, concurrently: the adapter coalesces them into one server request
            return await asyncio.gather(
                mgr.run_single(data_item(tokenizer, full, json.dumps(GT))),  # QA list stored as JSON text
                mgr.run_single(data_item(tokenizer, half, GT)),  # ... or as a list of dicts
            )

        out_full, out_half = loop.run_until_complete(score_all())
        # a dead server: score 0 with an error flag, never an exception that would fail the GRPO group
        dead = load_reward_manager(verl_config("http://127.0.0.1:9", tok_dir), tokenizer)
        out_dead = loop.run_until_complete(dead.run_single(data_item(tokenizer, full, GT)))
    loop.close()
    asyncio.set_event_loop(None)
    n_full = len(tokenizer.encode(full, add_special_tokens=False))
    length_full = 1 - (n_full - 4) / (1000 - 4)
    assert out_full["reward_extra_info"]["qa_reward"] == 1.0
    assert out_full["reward_score"] == pytest.approx(1.0 + 0.2 * length_full)
    assert out_full["reward_extra_info"]["cap_tokens"] == n_full
    assert 0.0 < out_half["reward_extra_info"]["qa_reward"] < 1.0  # only the circle is described
    assert set(out_full["reward_extra_info"]) == set(out_half["reward_extra_info"]) == set(verl_reward.KEYS)
    assert out_full["reward_extra_info"]["reward_error"] == 0.0
    assert out_full["reward_extra_info"]["monitor_repetitive"] == 0.0  # the caption monitors reach verl's logger
    assert out_dead["reward_extra_info"]["monitor_empty"] == 0.0
    assert list(app.state.scorer.scored) == [2]  # one batched request for both samples
    assert out_dead["reward_score"] == 0.0
    assert out_dead["reward_extra_info"]["reward_error"] == 1.0
