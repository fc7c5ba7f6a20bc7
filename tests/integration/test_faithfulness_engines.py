"""The faithfulness score through real back ends: an OpenAI-compatible server on 127.0.0.1 (splitter and verifier
replies scripted, so the parsing is checked exactly) and the tiny transformers models (a VLM verifying claims
against synthetic scene images, an LLM splitting captions). Each phase's requests go through one engine stream."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from caprl_kit.backends import build_backend
from caprl_kit.backends.config import BackendConfig
from caprl_kit.rewards.config import FaithfulnessConfig
from caprl_kit.rewards.faithfulness import Evidence, FaithfulnessScorer
from caprl_kit.synthetic import write_scenes
from chat_server import ChatServer


def count_streams(engine) -> list[int]:
    """Record the number of requests of every ``engine.stream`` call (the engine itself answers them)."""
    calls: list[int] = []
    stream = engine.stream

    def counted(requests, **kw):
        requests = list(requests)
        calls.append(len(requests))
        return stream(requests, **kw)

    engine.stream = counted
    return calls


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> tuple[Path, list]:
    out = tmp_path_factory.mktemp("scenes")
    return out, write_scenes(out, 4, seed=5, size=84, max_shapes=2)


def _openai(server: ChatServer) -> dict:
    return {"name": "openai", "model": "tiny", "openai": {"base_url": server.base_url, "backoff_base_s": 0.01}}


def test_llm_splitter_and_vlm_verifier_over_http_are_batched_and_parsed_strictly(scenes) -> None:
    folder, sc = scenes
    split_reply = "1. A red circle at the left.\n- a blue square at the top\n\nClaim 3: a green star"
    verdicts = [("Yes.", "stop"), ("No, it is not.", "stop"), ("I am not sure.", "stop")]
    with ChatServer([(split_reply, "stop")]) as splitter, ChatServer(verdicts) as verifier:
        cfg = FaithfulnessConfig(splitter={"name": "llm", "backend": _openai(splitter)},
                                 verifier={"evidence": "media", "backend": _openai(verifier)})
        scorer = FaithfulnessScorer(cfg)
        split_calls, verify_calls = count_streams(scorer.splitter.engine), count_streams(scorer.engine)
        captions = ["Two shapes.", "", "Shapes again."]  # the empty one is asked nothing
        evidence = [Evidence(image=folder / f"{s.key}.png") for s in sc[:3]]
        out = scorer.score(captions, evidence)
    assert split_calls == [2] and verify_calls == [6]  # one stream per phase, every claim of every caption
    assert len(splitter.bodies) == 2 and len(verifier.bodies) == 6
    claims = ["A red circle at the left", "a blue square at the top", "a green star"]
    for body in verifier.bodies:  # each claim asked on its own, after its image
        (turn,) = [m for m in body["messages"] if m["role"] == "user"]
        kinds = [p["type"] for p in turn["content"]]
        assert kinds == ["image_url", "text"]
        text = turn["content"][1]["text"]
        assert text.startswith("Is this statement true of the image? Answer yes or no.")
        assert re.search(r"Statement: (.*)$", text).group(1) in claims
    asked, empty = [out.details[0], out.details[2]], out.details[1]
    assert [d["claims"] for d in asked] == [claims, claims] and empty["claims"] == []
    totals = [sum(d[k] for d in asked) for k in ("n_supported", "n_unsupported", "n_unknown")]
    assert totals == [2, 2, 2]  # the replies, handed out in arrival order: yes, no and "I am not sure" (unknown)
    for d in asked:
        assert d["n_supported"] + d["n_unsupported"] + d["n_unknown"] == 3
        assert d["unsupported_claims"] == [c for c, v in zip(d["claims"], d["verdicts"]) if v == "no"]
        assert d["faithfulness_requests"] == 4 and d["faithfulness_tokens"] == 4 * (5 + 3)  # the server's usage
    assert (empty["faithfulness_requests"], empty["faithfulness_reward"]) == (0, 0.0)


def test_a_failed_verifier_request_is_an_error_not_a_verdict(scenes) -> None:
    folder, sc = scenes
    with ChatServer(fail_arrivals={2}) as verifier:
        opts = {**_openai(verifier), "openai": {**_openai(verifier)["openai"], "max_retries": 0}}
        scorer = FaithfulnessScorer(FaithfulnessConfig(verifier={"evidence": "media", "backend": opts}))
        from caprl_kit.rewards.base import RewardError

        with pytest.raises(RewardError, match=r"verifier failed on 1 of 2 claims"):
            scorer.score(["A red circle. A blue square."], [Evidence(image=folder / f"{sc[0].key}.png")])


def test_tiny_vlm_verifies_each_claim_against_the_scene_image(tiny_models, scenes) -> None:
    folder, sc = scenes
    vlm = {"name": "transformers", "model": str(tiny_models["captioner"]), "batch_size": 8}
    scorer = FaithfulnessScorer(FaithfulnessConfig(verifier={"evidence": "media", "backend": vlm}))
    calls = count_streams(scorer.engine)
    captions = [s.caption() for s in sc]
    out = scorer.score(captions, [Evidence(image=folder / f"{s.key}.png") for s in sc])
    n_claims = [len(s.facts) for s in sc]  # one claim per shape: the reference captions' sentences
    assert calls == [sum(n_claims)]
    for d, n in zip(out.details, n_claims):
        assert d["n_claims"] == n == len(d["verdicts"]) == d["faithfulness_requests"]
        assert set(d["verdicts"]) <= {"yes", "no", "unknown"}
        assert d["n_supported"] + d["n_unsupported"] + d["n_unknown"] == n
        assert d["faithfulness_tokens"] > 20 * n  # image tokens + the question, per claim
        assert d["faithfulness_seconds"] > 0
        expected = d["n_supported"] / (d["n_supported"] + d["n_unsupported"]) if d["n_supported"] + d["n_unsupported"] else None
        assert d["claim_precision"] == expected


def test_tiny_llm_splits_captions_on_one_stream(tiny_models) -> None:
    llm = {"name": "transformers", "model": str(tiny_models["answerer"]), "batch_size": 4}
    cfg = FaithfulnessConfig(splitter={"name": "llm", "backend": llm, "sampling": {"max_tokens": 24}})
    verifier = build_backend(BackendConfig(name="lexical"))
    scorer = FaithfulnessScorer(cfg, verifier)
    split_calls, verify_calls = count_streams(scorer.splitter.engine), count_streams(verifier)
    captions = ["A red circle at the left.", "A blue square at the top and a green star.", "A yellow triangle."]
    out = scorer.score(captions, [Evidence(reference=c) for c in captions])
    assert split_calls == [3]
    n_claims = sum(d["n_claims"] for d in out.details)
    assert verify_calls == ([n_claims] if n_claims else [])
    for d in out.details:
        assert d["faithfulness_requests"] == 1 + d["n_claims"]  # its split, then one check per claim
        assert d["faithfulness_tokens"] > 0
        assert all(c.strip() and "\n" not in c for c in d["claims"])
