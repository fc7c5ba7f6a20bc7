"""The LLM judges of open-ended video answers (MMVU, MMBench-Video; spec §5.2: any OpenAI-compatible model, gpt-4o in
the official run script): the prompt each asks about an answer and how its reply becomes a score, as VLMEvalKit's
evaluation of the benchmark does (docs/eval.md). ``judge_stage.py`` runs them."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from caprl_kit.backends.base import Request, SamplingParams


@dataclass(frozen=True)
class Judge:
    """One benchmark's judge: the prompt it is asked about an answer (``system`` + ``template`` with ``question``,
    ``gold`` and ``answer``) and how its reply becomes (prediction, score in [0, 1]); a None score: no verdict."""

    metric: str
    system: str | None
    template: str

    def request(self, question: str, gold: str, answer: str, sampling: SamplingParams) -> Request:
        text = self.template.format(question=question, gold=gold, answer=answer)
        return Request.user(text, system=self.system, sampling=sampling)

    def verdict(self, reply: str) -> tuple[str | None, float | None]:
        raise NotImplementedError


def json_objects(text: str) -> Iterator[Any]:
    """The JSON values that start at each ``{`` of ``text`` and parse, left to right (a parsed one is skipped over)."""
    decoder = json.JSONDecoder()
    pos = text.find("{")
    while pos >= 0:
        try:
            value, end = decoder.raw_decode(text, pos)
        except ValueError:
            pos = text.find("{", pos + 1)
            continue
        yield value
        pos = text.find("{", end)


class CorrectnessJudge(Judge):
    """MMVU's: the reply's last JSON object says ``correct`` (true/false) and the ``extracted_answer``; a reply without
    one is a wrong answer, as in VLMEvalKit's MMVU evaluation."""

    def verdict(self, reply: str) -> tuple[str | None, float | None]:
        found = [v for v in json_objects(reply) if isinstance(v, dict)]
        if not found:
            return "", 0.0
        correct = found[-1].get("correct", False)
        if not isinstance(correct, bool):  # "true" as text: what the judge meant, not Python's truth of a string
            correct = str(correct).strip().lower() in ("true", "yes", "1")
        return str(found[-1].get("extracted_answer", "") or ""), float(correct)


class RatingJudge(Judge):
    """MMBench-Video's: the reply is one integer rating 0-3 (the score is rating / 3); any other reply is no
    verdict (VLMEvalKit counts it -1, out of the "valid" rating)."""

    def verdict(self, reply: str) -> tuple[str | None, float | None]:
        text = reply.strip()
        if not re.fullmatch(r"[+-]?\d+", text) or not 0 <= int(text) <= 3:
            return None, None
        return None, int(text) / 3


MMVU_JUDGE = CorrectnessJudge(
    "judge_correct",
    None,
    "Evaluate whether the model's final answer is correct by comparing it to the ground-truth answer.\n"
    "The final answer does NOT need to match word-for-word, but must be explicitly and unambiguously equivalent.\n"
    "You MUST output a JSON object with keys: extracted_answer (string), correct (boolean).\n"
    "\n"
    "Question: {question}\n\nGround Truth Answer: {gold}\n\nModel Response to the Question: {answer}\n",
)
MMBENCH_VIDEO_JUDGE = RatingJudge(
    "judge_rating",
    "\nAs an AI assistant, your task is to evaluate a candidate answer in comparison to a given correct answer.\n"
    "The question itself, the correct 'groundtruth' answer, and the candidate answer will be provided to you.\n"
    "Your assessment should range from 0 to 3, based solely on the semantic similarity between the groundtruth and "
    "the candidate answer, disregarding any grammatical differences.\n"
    "A rating of 0 suggests no similarity, implying the candidate answer is entirely incorrect.\n"
    "A rating of 1 suggests low similarity, meaning the candidate answer is largely incorrect.\n"
    "A rating of 2 suggests high similarity, meaning the candidate answer is largely correct.\n"
    "Lastly, a rating of 3 indicates complete similarity, which means the candidate answer is entirely correct.\n"
    "Your response should be a single integer from 0, 1, 2, or 3.\n",
    "Question: {question}\nGroundtruth answer: {gold}\nCandidate answer: {answer}\nYour response: ",
)
