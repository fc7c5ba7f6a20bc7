"""The faithfulness (claim-precision) score on its model-free path: the rules splitter, the lexical verifier reading a
reference caption, the strict yes/no parsing, the config's refusals, and the acceptance table: captions of
synthetic scenes, each fully-true caption against its falsified twin (a wrong colour, a wrong position or an object
that is not there), where the score must rank every true caption above its twin and name exactly the false claims."""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest

from caprl_kit.backends import build_backend
from caprl_kit.backends.config import BackendConfig
from caprl_kit.backends.lexical import content_words
from caprl_kit.claims import parse_claim_lines, parse_verdict, split_rules
from caprl_kit.errors import ConfigError
from caprl_kit.rewards.base import RewardError
from caprl_kit.rewards.combine import CaprlReward
from caprl_kit.rewards.config import FaithfulnessConfig, RewardConfig
from caprl_kit.rewards.faithfulness import Evidence, FaithfulnessReward, FaithfulnessScorer
from caprl_kit.synthetic import COLORS, POSITIONS, SHAPES, Scene, ShapeFact, make_scene


@pytest.mark.parametrize("caption, claims", [
    ("A red circle at the left. A blue square at the top.", ["A red circle at the left", "A blue square at the top"]),
    ("A red circle at the left and a blue square at the top.", ["A red circle at the left", "a blue square at the top"]),
    ("A red circle, a blue square, and a green star.", ["A red circle", "a blue square", "a green star"]),
    ("A red and blue flag waves while a dog sleeps.", ["A red and blue flag waves", "a dog sleeps"]),
    ("The circle is red and large", ["The circle is red and large"]),  # "and" before an adjective: one claim
    ("The star is green; it is small!", ["The star is green", "it is small"]),
    ("A man walks, but the dog sits.", ["A man walks", "the dog sits"]),
    ("A table with a cup, a plate and a fork.", ["A table with a cup", "A table with a plate", "A table with a fork"]),
    ("A woman with a hat.", ["A woman with a hat"]),  # a with-phrase that is no list stays whole
    ("First line\n- a bulleted cat\n\n2) a numbered dog", ["First line", "a bulleted cat", "a numbered dog"]),
    ("[00:00 - 00:05] A man walks. [00:06] He sits.", ["[00:00 - 00:05] A man walks", "[00:06] He sits"]),
    ("", []),
    ("  ... ", []),
])
def test_the_rules_splitter(caption: str, claims: list[str]) -> None:
    assert split_rules(caption) == claims


def test_claim_lines_drop_bullets_numbers_and_blank_lines() -> None:
    text = "1. A red circle.\n- a blue square at the top\n\n* (3) a star\nClaim 4: the star is green\n  \n"
    assert parse_claim_lines(text) == ["A red circle", "a blue square at the top", "a star", "the star is green"]


@pytest.mark.parametrize("text, verdict", [
    ("Yes", True), ("yes.", True), ("**Yes**, it is.", True), ("No", False), ("no, the circle is blue", False),
    (" NO.", False), ("Answer: yes", None), ("Yes and no", None), ("The statement is true", None), ("", None),
    (None, None), ("Yesterday", None), ("Maybe", None),
])
def test_verdicts_are_parsed_strictly(text: str | None, verdict: bool | None) -> None:
    assert parse_verdict(text) is verdict


# --------------------------------------------------------------------------- the acceptance table


@dataclass
class Pair:
    scene: Scene
    true_caption: str
    twin: str
    false_phrases: list[str]  #: what each falsified claim says ("blue circle at the left")


def phrase(f: ShapeFact) -> str:
    return f"a {f.color} {f.shape} at the {f.position}"


def render(phrases: list[str], style: int) -> str:
    """One caption of the facts in one of five styles (sentences, and-lists, semicolons, while, an opener)."""
    if style == 0:
        return " ".join(p[0].upper() + p[1:] + "." for p in phrases)
    if style == 1:
        head = ", ".join(phrases[:-1])
        return (f"{head} and {phrases[-1]}." if head else f"{phrases[-1]}.").capitalize()
    if style == 2:
        return "; ".join(p.replace(" at the ", " is at the ") for p in phrases).capitalize() + "."
    if style == 3:
        return (f"There is {phrases[0]}" + "".join(f", while {p} is there" for p in phrases[1:])) + "."
    return "The image shows " + " and ".join(phrases) + "."


def falsify(scene: Scene, rng: random.Random, kinds: list[str]) -> tuple[list[str], list[str]]:
    """The scene's claims with one change per kind: ``colour`` (a wrong colour), ``position`` (a wrong place) or
    ``object`` (an added shape that is not in the scene); returns (all claims, the false ones)."""
    claims = [phrase(f) for f in scene.facts]
    false: list[str] = []
    for kind in kinds:
        if kind == "object":
            absent = [s for s in SHAPES if s not in {f.shape for f in scene.facts}]
            extra = phrase(ShapeFact(rng.choice(absent), rng.choice(list(COLORS)), rng.choice(list(POSITIONS))))
            claims.insert(rng.randrange(len(claims) + 1), extra)
            false.append(extra)
            continue
        i, f = rng.choice([(i, f) for i, f in enumerate(scene.facts) if phrase(f) in claims])
        if kind == "colour":
            wrong = ShapeFact(f.shape, rng.choice([c for c in COLORS if c != f.color]), f.position)
        else:
            wrong = ShapeFact(f.shape, f.color, rng.choice([p for p in POSITIONS if p != f.position]))
        claims[claims.index(phrase(f))] = phrase(wrong)
        false.append(phrase(wrong))
    return claims, false


def acceptance_table(n: int = 36, seed: int = 3) -> list[Pair]:
    """``n`` scenes of 1-3 shapes in five caption styles; the true caption states every fact, its twin one or two
    falsified claims (a wrong colour, a wrong position, an added object; every third twin a changed colour and an
    added object)."""
    rng = random.Random(seed)
    changes = [["colour"], ["position"], ["colour", "object"], ["object"], ["position", "object"], ["colour"]]
    pairs = []
    for i in range(n):
        scene = make_scene(f"scene_{i:05d}", rng, max_shapes=3)
        claims, false = falsify(scene, rng, changes[i % len(changes)])
        pairs.append(Pair(scene, render([phrase(f) for f in scene.facts], i % 5), render(claims, i % 5), false))
    return pairs


TABLE = acceptance_table()


@pytest.fixture(scope="module")
def model_free() -> FaithfulnessScorer:
    return FaithfulnessScorer(FaithfulnessConfig())  # rules splitter + lexical verifier, evidence: reference


def test_the_table_is_big_and_every_twin_says_something_false() -> None:
    assert len(TABLE) >= 30
    assert sum(len(p.false_phrases) == 2 for p in TABLE) >= 10  # some twins carry two false claims
    assert all(p.twin != p.true_caption for p in TABLE)
    assert {len(p.scene.facts) for p in TABLE} == {1, 2, 3}


def test_every_true_caption_outranks_its_twin_and_the_false_claims_are_named(model_free) -> None:
    captions = [c for p in TABLE for c in (p.true_caption, p.twin)]
    evidence = [Evidence(reference=p.scene.caption()) for p in TABLE for _ in range(2)]
    out = model_free.score(captions, evidence)
    for k, p in enumerate(TABLE):
        true, twin = out.details[2 * k], out.details[2 * k + 1]
        assert out.scores[2 * k] > out.scores[2 * k + 1], (p.true_caption, p.twin, true, twin)
        assert true["n_unsupported"] == 0 and true["n_claims"] == len(p.scene.facts), (p.true_caption, true)
        assert twin["n_unsupported"] == len(p.false_phrases), (p.twin, twin)
        said = sorted(sorted(content_words(c)) for c in twin["unsupported_claims"])
        assert said == sorted(sorted(content_words(f)) for f in p.false_phrases), (p.false_phrases, twin)
        assert twin["n_unknown"] == 0 and true["n_unknown"] == 0


def test_a_batch_goes_through_one_stream_and_its_cost_is_reported() -> None:
    engine = build_backend(BackendConfig(name="lexical"))
    calls = []
    stream = engine.stream

    def counted(requests, **kw):
        requests = list(requests)
        calls.append(len(requests))
        return stream(requests, **kw)

    engine.stream = counted  # type: ignore[method-assign]
    scorer = FaithfulnessScorer(FaithfulnessConfig(), engine)
    pairs = TABLE[:6]
    out = scorer.score([p.twin for p in pairs], [Evidence(reference=p.scene.caption()) for p in pairs])
    n_claims = sum(d["n_claims"] for d in out.details)
    assert calls == [n_claims]  # every claim of every caption, one stream
    assert [d["faithfulness_requests"] for d in out.details] == [d["n_claims"] for d in out.details]
    assert all(d["faithfulness_tokens"] > 0 and d["faithfulness_seconds"] > 0 for d in out.details)


def test_unknown_replies_are_reported_not_supported(model_free) -> None:
    out = model_free.score(["It is. A red circle at the left. A blue star."],
                           [Evidence(reference="A red circle at the left.")])
    (d,) = out.details
    assert (d["n_supported"], d["n_unsupported"], d["n_unknown"]) == (1, 1, 1)
    assert d["verdicts"] == ["unknown", "yes", "no"] and d["claim_precision"] == 0.5
    assert d["unsupported_claims"] == ["A blue star"]


def test_a_caption_with_nothing_verified_earns_zero(model_free) -> None:
    out = model_free.score(["", "It is."], [Evidence(reference="A red circle.")] * 2)
    assert out.scores == [0.0, 0.0]
    assert [d["claim_precision"] for d in out.details] == [None, None]


def test_the_reward_term_reads_the_reference_column_and_combines_with_qa() -> None:
    pairs = TABLE[:8]
    cfg = RewardConfig(components=[{"name": "qa_accuracy"}, {"name": "faithfulness", "weight": 0.5}],
                       qa={"mode": "all_qa"})
    reward = CaprlReward(cfg)
    rng = random.Random(0)
    captions = [c for p in pairs for c in (p.true_caption, p.twin)]
    gts = [p.scene.mcqs(rng) for p in pairs for _ in range(2)]
    refs = [p.scene.caption() for p in pairs for _ in range(2)]
    out = reward.compute(captions, ground_truth=gts, caption=refs)
    for d, s in zip(out.details, out.scores):
        assert s == pytest.approx(d["qa_reward"] + 0.5 * d["faithfulness_reward"])
    assert all(out.scores[2 * k] > out.scores[2 * k + 1] for k in range(len(pairs)))


def test_a_missing_reference_is_one_clear_error() -> None:
    term = FaithfulnessReward(FaithfulnessConfig())
    with pytest.raises(RewardError, match="no 'caption' column.*faithfulness.verifier.reference_column"):
        term(["A red circle."], ground_truth=[[]])
    with pytest.raises(RewardError, match="caption 1 has no evidence"):
        term(["A red circle.", "A blue square."], caption=["A red circle.", None])
    media = FaithfulnessConfig(verifier={"evidence": "media", "backend": {"name": "transformers", "model": "m"}})
    with pytest.raises(RewardError, match="caption 0 has no evidence: evidence: media reads the item's image"):
        FaithfulnessScorer(media, engine=build_backend(BackendConfig(name="lexical"))).score(["A cat."], [Evidence()])


@pytest.mark.parametrize("block, key, says", [
    ({"splitter": {"backend": {"name": "lexical"}}}, "splitter.backend", "not used by the rules splitter"),
    ({"splitter": {"prompt": "caprl_image"}}, "splitter.prompt", "not used by the rules splitter"),
    ({"splitter": {"name": "llm"}}, "splitter.backend", "required by the llm splitter"),
    ({"splitter": {"name": "llm", "backend": {"name": "lexical", "sampling": {"max_tokens": 9}}}},
     "splitter.backend.sampling", "splitter.sampling"),
    ({"splitter": {"name": "llm", "backend": {"name": "lexical"}, "sampling": {"n": 2}}}, "splitter.sampling.n",
     "one reply per caption"),
    ({"splitter": {"name": "rule"}}, "splitter.name", "did you mean 'rules'"),
    ({"splitter": {"name": "llm", "backend": {"name": "lexical"}}}, "splitter.backend.name", "writes no claims"),
    ({"verifier": {"evidence": "media"}}, "verifier.backend.name", "cannot see the media"),
    ({"verifier": {"evidence": "media", "backend": {"name": "openai"}, "reference_column": "ref"}},
     "verifier.reference_column", "not used with evidence: media"),
    ({"verifier": {"sampling": {"n": 3}}}, "verifier.sampling.n", "one reply per claim"),
    ({"verifier": {"backend": {"name": "lexical", "sampling": {"temperature": 0.5}}}}, "verifier.backend.sampling",
     "verifier.sampling"),
    ({"verifier": {"prompt": "claim_verify_imag"}}, "verifier.prompt", "did you mean 'claim_verify_image'"),
])
def test_config_refusals_name_the_key(block: dict, key: str, says: str) -> None:
    from caprl_kit.config import load_config

    overrides = [f"reward.faithfulness={block}", "reward.components=[{name: qa_accuracy}, {name: faithfulness}]"]
    with pytest.raises(ConfigError) as info:
        load_config("train/grpo_tiny_trl", overrides)
    named = [i for i in info.value.issues if i.path == f"reward.faithfulness.{key}"]
    assert named, str(info.value)
    assert says in named[0].render(), named[0].render()


def test_the_engines_a_run_checks_first_include_the_verifier_and_the_splitter() -> None:
    from caprl_kit.rewards.combine import reward_engines

    cfg = RewardConfig(components=[{"name": "qa_accuracy"}, {"name": "faithfulness", "weight": 0.5}],
                       faithfulness={"splitter": {"name": "llm", "backend": {"name": "openai", "model": "s"}},
                                     "verifier": {"evidence": "media", "backend": {"name": "vllm", "model": "v"}}})
    engines = reward_engines(cfg, "reward")
    assert engines["reward.faithfulness.verifier.backend"].model == "v"
    assert engines["reward.faithfulness.splitter.backend"].model == "s"
    off = cfg.model_copy(update={"components": cfg.components[:1]})
    assert not [k for k in reward_engines(off, "reward") if "faithfulness" in k]
