"""QA-accuracy reward (spec §2.1-2.2): a text-only answerer reads the caption and answers the image's MCQs.

For each caption: ``qa_num`` questions drawn with replacement from the image's QA list, options shuffled every time
with the cannot-answer option appended, answered with the prefill "The answer is" (temperature 0.6, 10 tokens);
reward = share answered correctly. ``mode: all_qa`` asks every question once, unshuffled, without the extra option.
All answer prompts of a batch go to the engine in one call (the reward server streams them instead: ``plan`` +
``reduce``).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from caprl_kit.backends import build_backend
from caprl_kit.backends.base import Backend, Request, Response, SamplingParams
from caprl_kit.mcq.options import (
    CANNOT_ANSWER,
    choice_texts,
    extract_letter,
    official_shuffle,
    parse_easy,
    render,
    shuffle_options,
)
from caprl_kit.rewards.base import RewardError, RewardOutput, completion_text, decode_ground_truth
from caprl_kit.rewards.config import QARewardConfig
from caprl_kit.rewards.prompts import PREFILL, answer_prompt
from caprl_kit.schemas.curate import MCQ

#: per caption, its trials' (correct letter, shown choices)
Trials = list[list[tuple[str, list[str]]]]


def cannot_answer_label(choices: Sequence[str]) -> str | None:
    """The label of the cannot-answer option among a trial's shown choices, None when it was not offered."""
    for choice in choices:
        label, _, text = choice.partition(")")
        if text.strip() == CANNOT_ANSWER:
            return label.strip()
    return None


class QAScorer:
    """Scores captions against QA lists with one engine call per batch."""

    def __init__(self, cfg: QARewardConfig, engine: Backend | None = None):
        self.cfg = cfg
        self.engine = engine or build_backend(cfg.answerer)
        self.sampling = SamplingParams.from_config(cfg.sampling)
        self.rng = random.Random(cfg.seed)

    def _trials(self, qas: list[MCQ]) -> list[tuple[str, str, list[str]]]:
        """(question_full shown, correct letter, shown choices) per trial."""
        cfg = self.cfg
        if cfg.mode == "all_qa":
            return [(render(q), q.answer, q.choices) for q in qas]
        out = []
        parsed: dict[int, list[tuple[str, str]]] = {}  # each question's choices, parsed once for all its draws
        for _ in range(cfg.qa_num):
            q = self.rng.choice(qas)
            if cfg.compat == "official":
                s = official_shuffle(render(q), q.answer, self.rng)
            else:
                pairs = parsed.get(id(q))
                if pairs is None:
                    pairs = parsed[id(q)] = choice_texts(q)
                s = shuffle_options(q, self.rng, extra_option=CANNOT_ANSWER, extra_label="next", pairs=pairs)
            out.append((s.question_full, s.answer, s.choices))
        return out

    def plan(self, captions: Sequence[str], qa_lists: Sequence[list[MCQ]]) -> tuple[list[Request], Trials]:
        """The answer prompts for ``captions`` (in order) and what each caption's trials expect."""
        requests: list[Request] = []
        plan: Trials = []
        for caption, qas in zip(captions, qa_lists):
            trials = self._trials(qas) if qas else []
            plan.append([(answer, choices) for _, answer, choices in trials])
            for question_full, _, _ in trials:
                prompt = answer_prompt(caption, question_full, self.cfg.task, self.cfg.compat)
                requests.append(Request.user(prompt, prefill=PREFILL, sampling=self.sampling))
        return requests, plan

    def reduce(self, plan: Trials, responses: Sequence[Response]) -> RewardOutput:
        """Rewards from the engine's answers to ``plan``'s prompts (in the order ``plan`` made them)."""
        failed = [r for r in responses if not r.ok]
        if failed:
            raise RewardError(f"answerer failed on {len(failed)} of {len(responses)} prompts: {failed[0].error}")
        scores, details = [], []
        it = iter(responses)
        for trials in plan:
            if not trials:
                scores.append(0.0)
                details.append(
                    {"qa_reward": 0.0, "n_questions": 0, "correct": [], "predicted": [], "cannot_answer": []}
                )
                continue
            predicted, correct, cannot = [], [], []
            for answer, choices in trials:
                text = next(it).texts[0]
                letter = parse_easy(text) if self.cfg.compat == "official" else extract_letter(text, choices)
                predicted.append(letter)
                correct.append(letter == answer)
                offered = cannot_answer_label(choices)
                if offered is not None:  # only trials that offered the option say whether it was taken
                    cannot.append(letter == offered)
            score = sum(correct) / len(correct)
            scores.append(score)
            details.append(
                {
                    "qa_reward": score,
                    "n_questions": len(trials),
                    "correct": correct,
                    "predicted": predicted,
                    "cannot_answer": cannot,
                }
            )
        return RewardOutput(scores, details)

    def score(self, captions: Sequence[str], qa_lists: Sequence[list[MCQ]]) -> RewardOutput:
        requests, plan = self.plan(captions, qa_lists)
        return self.reduce(plan, self.engine.generate(requests) if requests else [])


def qa_scorer(cfg: QARewardConfig, engine: Backend | None = None) -> Any:
    """The in-process scorer, or the reward service's client when ``cfg.service`` is set (same ``score``)."""
    if cfg.service is not None:
        from caprl_kit.rewards.client import RemoteQAScorer

        return RemoteQAScorer(cfg.service)
    return QAScorer(cfg, engine)


class QAAccuracyReward:
    """TRL-shaped reward: ``reward(completions, ground_truth, **columns) -> list[float]``.

    ``ground_truth`` per row: a list of ``{question, choices, answer}`` (or its JSON string), as in the curated
    dataset's ``reward_model.ground_truth``.
    """

    __name__ = "qa_accuracy"

    config_key = "qa"  #: its block in RewardConfig
    shares: tuple[str, ...] = ("engine",)  #: what it takes from the caller (the answerer engine, the tokenizer)

    def __init__(self, cfg: QARewardConfig | None = None, engine: Backend | None = None, **_: Any):
        cfg = cfg or QARewardConfig()
        self.scorer = qa_scorer(cfg, engine)
        self.last_details: list[dict[str, Any]] = []

    def compute(
        self,
        completions: Sequence[Any],
        ground_truth: Sequence[Any] | None = None,
        reward_model: Sequence[Any] | None = None,
        **_: Any,
    ) -> RewardOutput:
        if ground_truth is None and reward_model is not None:
            ground_truth = [rm["ground_truth"] for rm in reward_model]
        if ground_truth is None:
            raise RewardError("qa_accuracy needs a ground_truth (or reward_model) column")
        out = self.scorer.score(
            [completion_text(c) for c in completions], [decode_ground_truth(g) for g in ground_truth]
        )
        self.last_details = out.details
        return out

    def __call__(self, completions: Sequence[Any], **columns: Any) -> list[float]:
        return self.compute(completions, **columns).scores
