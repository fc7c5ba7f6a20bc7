"""``lexical``: a deterministic, model-free multiple-choice answerer.

Given a prompt holding a caption and an MCQ (the CapRL answerer layout ``Caption: <Caption Start> ... <Caption End>``
... ``Question: ...`` with option lines ``- A) text``), it picks the option best supported by the caption's words:
text is lower-cased, split into words, stop words dropped and the rest Snowball-stemmed. The caption is cut into
clauses (at punctuation, at "but"/"while", and at "and" when a new noun phrase follows, so "a red and blue
flag" stays one clause); an option scores, in its best clause, one point per option word
present plus half a point per question-stem word present, so "What color is the circle?" over "a red circle and a
blue square" picks red. Only clauses that mention a word of the question stem count (when the stem has content
words), so a caption that never mentions the square supports no answer about it. Words shared by every option are
ignored.

When no option has a word in the caption, or several options tie for the best score, it answers the "cannot
answer" option (or "None of the above") if the question offers one, and otherwise gives no letter.

It also answers the faithfulness verifier's yes/no question about one claim against a reference caption (the
layout ``Reference: <Reference Start> ... <Reference End>`` ... ``Statement: ...``, ``rewards/faithfulness.py``):
"Yes." when every content word of the statement is in one claim of the reference (split by ``claims.split_rules``,
so "a blue circle" is not supported by "a red circle. a blue square"), "No." when not, "Cannot tell." when the
statement has no content word.

Use it for smoke tests and demos, as an exact-expectation oracle in tests, and as a cheap reward baseline — not
as a substitute for an LLM answerer in real training.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from functools import lru_cache

from caprl_kit.backends.base import BackendBase, Request, Response
from caprl_kit.backends.config import BackendConfig

OPTION_RE = re.compile(r"^\s*(?:[-*•]\s*)?[(（]?([A-I])[)）.．:：]\s*(.+?)\s*$", re.MULTILINE)
CAPTION_RE = re.compile(r"<Caption Start>(.*?)<Caption End>", re.DOTALL)
REFERENCE_RE = re.compile(r"<Reference Start>(.*?)<Reference End>", re.DOTALL)
STATEMENT_RE = re.compile(r"^Statement:[ \t]*(.*)$", re.MULTILINE)
CANNOT_RE = re.compile(
    r"\b(can ?not|cannot|can't|unable to) (be )?answer|none of the above|not (mentioned|stated)", re.IGNORECASE
)
WORD_RE = re.compile(r"[a-z0-9]+")
CLAUSE_RE = re.compile(
    r"[.;,!?\n]+|\b(?:but|while|whereas)\b"
    r"|\band\s+(?=(?:a|an|the|one|two|three|four|five|some|several|many|his|her|their|its)\b)",
    re.IGNORECASE,
)
STOP = frozenset(
    "a an the of in on at to is are was were be been being it its this that these those there here with and or "
    "for from by as into onto over under than then so such what which who whom whose where when why how does do "
    "did has have had can could would should may might will shall not no nor only also very just image picture "
    "photo video shown shows show seen visible appear appears caption question answer option following based".split()
)


@lru_cache(maxsize=1)
def _stemmer():
    import snowballstemmer

    return snowballstemmer.stemmer("english")


def content_words(text: str) -> list[str]:
    return list(_content_words(text))


@lru_cache(maxsize=1 << 16)
def _content_words(text: str) -> tuple[str, ...]:  # captions and options repeat across questions: cache the stems
    words = [w for w in WORD_RE.findall(text.lower()) if w not in STOP]
    return tuple(_stemmer().stemWords(words))


#: the caption in caprl eval's (Prism) answer prompt, "Here is a detailed caption of a video: ... Please answer ..."
PRISM_CAPTION_RE = re.compile(
    r"Here is a detailed caption of (?:an image|a video): (.*?)\. Please answer the question based on the caption\.",
    re.DOTALL,
)


def parse_prompt(text: str) -> tuple[str, str, list[tuple[str, str]]]:
    """(caption, question stem, [(letter, option text)]) from an answerer prompt (the CapRL answerer's, or caprl
    eval's); the last example wins."""
    captions = CAPTION_RE.findall(text) or PRISM_CAPTION_RE.findall(text)
    if captions:
        caption = captions[-1]
    else:
        m = list(re.finditer(r"Caption:\s*(.*?)(?:\n\s*Question:|$)", text, re.DOTALL))
        caption = m[-1].group(1) if m else ""
    q_at = text.rfind("Question:")
    question = text[q_at + len("Question:") :] if q_at >= 0 else text
    options = [(m.group(1), m.group(2)) for m in OPTION_RE.finditer(question)]
    first = OPTION_RE.search(question)
    stem = question[: first.start()] if first else question
    return caption.strip(), stem.strip(), options


def answer(caption: str, stem: str, options: list[tuple[str, str]]) -> str | None:
    """The letter the lexical rule picks, or None when it cannot pick and no cannot-answer option exists."""
    cannot = [letter for letter, t in options if CANNOT_RE.search(t)]
    real = [(letter, set(content_words(t))) for letter, t in options if not CANNOT_RE.search(t)]
    if real:
        shared = set.intersection(*(words for _, words in real)) if len(real) > 1 else set()
        real = [(letter, words - shared) for letter, words in real]
    stem_words = set(content_words(stem))
    clauses = [set(content_words(c)) for c in CLAUSE_RE.split(caption) if c and c.strip()]
    if stem_words:  # only clauses about the question's subject count
        clauses = [c for c in clauses if c & stem_words]
    scores: dict[str, float] = {}
    for letter, words in real:
        best = 0.0
        for clause in clauses:
            hits = len(words & clause)
            if hits:
                best = max(best, hits + 0.5 * len((stem_words - words) & clause))
        scores[letter] = best
    top = max(scores.values(), default=0.0)
    winners = [letter for letter, s in scores.items() if s == top]
    if top > 0 and len(winners) == 1:
        return winners[0]
    return cannot[0] if cannot else None


def verify(reference: str, statement: str) -> str:
    """Yes / No / Cannot tell for ``statement`` against ``reference`` (the rule in the module's docstring).

    >>> [verify("A red circle at the left. A blue square at the top.", s) for s in ("a red circle", "a blue circle", "it is")]
    ['Yes.', 'No.', 'Cannot tell.']
    """
    from caprl_kit.claims import split_rules

    words = set(content_words(statement))
    if not words:
        return "Cannot tell."
    supported = any(words <= set(content_words(claim)) for claim in split_rules(reference))
    return "Yes." if supported else "No."


def verify_prompt(text: str) -> str | None:
    """The verdict on a verification prompt (its last reference and statement), None when ``text`` is not one."""
    references, statements = REFERENCE_RE.findall(text), STATEMENT_RE.findall(text)
    if not references or not statements:
        return None
    return verify(references[-1], statements[-1])


class LexicalBackend(BackendBase):
    name = "lexical"

    def __init__(self, cfg: BackendConfig):
        super().__init__(cfg)
        self.model_id = "lexical"

    def generate(self, requests: Sequence[Request]) -> list[Response]:
        out = []
        for req in requests:
            t0 = time.perf_counter()
            text = "\n".join(_text_of(m["content"]) for m in req.messages if m["role"] != "assistant")
            caption, stem, options = parse_prompt(text)
            reply = verify_prompt(text) if not options else None
            if not options and reply is None:
                out.append(
                    Response.failed(
                        "bad_request", "no multiple-choice options nor a statement to verify in the prompt", req.id
                    )
                )
                continue
            if reply is None:
                letter = answer(caption, stem, options)
                body = f"{letter}." if letter else "none of the options."
                reply = f" {body}" if req.prefill is not None else f"The answer is {body}"
            n = self.sampling_of(req).n
            out.append(
                Response(
                    texts=[reply] * n,
                    prompt_tokens=len(text.split()),
                    completion_tokens=[len(reply.split())] * n,
                    finish_reasons=["stop"] * n,
                    latency_s=time.perf_counter() - t0,
                    id=req.id,
                )
            )
        return out


def _text_of(content: str | list) -> str:
    if isinstance(content, str):
        return content
    return "\n".join(p.get("text", "") for p in content if p.get("type") == "text")
