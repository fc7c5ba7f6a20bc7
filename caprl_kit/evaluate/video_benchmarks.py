"""The VLMEvalKit files of the CapRL++ video evaluation (spec §5.2: Video-MME, MVBench, MMVU, MMBench-Video, TOMATO,
TimeLens-Bench) as eval samples (``benchmarks[].layout``). Each layout reads its file as VLMEvalKit's dataset class
lays the benchmark out (its TSV, or the benchmark's own JSON where VLMEvalKit builds the TSV from it), finds each
row's video under the benchmark's videos folder (``image_root``; default: where VLMEvalKit keeps them beside the
file), asks the question as the class's prompt does (less its sentences about frames: the answerer reads a caption),
scores an answer by the class's rule-based evaluation (the open-ended ones by the judge, ``judge.py``), and reports
the benchmark's own breakdown beside BoN and M_Acc. docs/eval.md lists each layout's columns, paths, prompt, scoring
and breakdown."""

from __future__ import annotations

import ast
import csv
import io
import json
import posixpath
import re
from collections.abc import Iterable
from typing import Any

from caprl_kit.errors import CaprlError
from caprl_kit.evaluate.config import BenchmarkConfig
from caprl_kit.evaluate.data import Sample
from caprl_kit.evaluate.judge import MMBENCH_VIDEO_JUDGE, MMVU_JUDGE, Judge
from caprl_kit.evaluate.metrics import Compat
from caprl_kit.io.fs import url_to_fs

Row = dict[str, Any]


class RowProblem(ValueError):
    """What is wrong with one benchmark row (the layout's loader names the file and the row)."""


# --------------------------------------------------------------------------- answer extraction (VLMEvalKit's rules)

_REFUSALS = (
    "Sorry, I can't help with images of people yet.",
    "I can't process this file.",
    "I'm sorry, but without the image provided",
    "Cannot determine the answer",
)


def infer_option(answer: str, letters: Iterable[str]) -> str | None:
    """The one option letter standing as a word among the last five of ``answer`` (punctuation as spaces); "Z" for a
    refusal. VLMEvalKit's ``can_infer_option``."""
    for refusal in _REFUSALS:
        if refusal in answer:
            return "Z"
    words = re.sub(r"[.()\[\],:;!*#{}]", " ", answer).split()
    present = [c for c in letters if c in words]
    if len(present) == 1 and words.index(present[0]) > len(words) - 5:
        return present[0]
    return None


def infer_text(answer: str, options: dict[str, str]) -> str | None:
    """The one option whose text the answer contains (lower case; an answer over twice the options' length names
    none). VLMEvalKit's ``can_infer_text``."""
    answer = answer.lower()
    if len(answer) > 2 * sum(len(v) for v in options.values()):
        return None
    found = [k for k, v in options.items() if v.lower() in answer]
    return found[0] if len(found) == 1 else None


def infer_choice(answer: str, options: dict[str, str]) -> str | None:
    """VLMEvalKit's ``can_infer``: the letter, else the option text."""
    return infer_option(answer, options) or infer_text(answer, options)


_VIDEO_MME_PREFIXES = (
    "The best answer is",
    "The correct answer is",
    "The answer is",
    "The answer",
    "The best option is",
    "The correct option is",
    "Best answer:",
    "Best option:",
    "Answer:",
    "Option:",
)


def video_mme_letter(answer: str) -> str | None:
    """Video-MME's ``extract_characters_regex``: the answer phrases removed, the first capital A-D."""
    s = answer.strip()
    for prefix in _VIDEO_MME_PREFIXES:
        s = s.replace(prefix, "")
    found = re.search(r"[ABCD]", s)
    return found.group(0) if found else None


def letter_of(answer: str, letters: str) -> str | None:
    """MMVU's / TOMATO's letter extraction over ``letters``: the last "Answer: X", else the last (X), [X], X. or X),
    else the last X after a colon or space, else the last X standing alone (upper-cased text)."""
    s = answer.strip().upper()
    cls = f"[{letters}]"
    patterns = (
        rf"ANSWER\s*[:：]\s*({cls})\b",
        rf"\(({cls})\)",
        rf"\[({cls})\]",
        rf"\b({cls})[\.\)]\b",
        rf"[:\s]\s*({cls})\b",
        rf"(?<![A-Z])({cls})(?![A-Z])",
    )
    for pattern in patterns:
        found = re.findall(pattern, s)
        if found:
            return str(found[-1])
    return None


def normalize(text: str) -> str:
    """Lower case, punctuation as spaces, spaces collapsed (VLMEvalKit's ``_normalize_text``)."""
    return re.sub(r"\s+", " ", re.sub(r"[^0-9a-z\s]+", " ", text.strip().lower())).strip()


def tomato_letter(answer: str, options: dict[str, str]) -> str | None:
    """TOMATO's: the A-F letter, else the last lone digit 0-5 as an option index, else the (last) option whose
    normalised text the normalised answer holds."""
    letter = letter_of(answer, "ABCDEF")
    if letter:
        return letter
    digits = re.findall(r"(?<!\d)([0-5])(?!\d)", answer)
    if digits:
        return chr(ord("A") + int(digits[-1]))
    said, best = normalize(answer), None
    for key, text in options.items():
        if normalize(text) and normalize(text) in said:
            best = key
    return best


def time_spans(text: str) -> list[tuple[float, float]]:
    """The (start, end) seconds pairs an answer gives, as TimeLens's ``extract_time``: HH:MM:SS / MM:SS times in
    pairs, else "a - b" / "a to b", else any numbers in pairs."""
    text = text.lower()
    clock = re.findall(r"\b(\d{1,2}:\d{2}:\d{2}(?:\.\d+)?|\d{1,2}:\d{2}(?:\.\d+)?)\b", text)
    clock = clock[: len(clock) // 2 * 2]
    if clock:
        secs = []
        for t in clock:
            parts = t.split(":")
            secs.append(sum(float(p) * 60**i for i, p in enumerate(reversed(parts))))
        return [(secs[i], secs[i + 1]) for i in range(0, len(secs), 2)]
    for pattern in (r"(\d+\.?\d*)\s*-\s*(\d+\.?\d*)", r"(\d+\.?\d*)\s+to\s+(\d+\.?\d*)"):
        pairs = re.findall(pattern, text)
        if pairs:
            return [(float(a), float(b)) for a, b in pairs]
    numbers = re.findall(r"\b(\d+\.\d+|\d+)\b", text)
    numbers = numbers[: len(numbers) // 2 * 2]
    return [(float(numbers[i]), float(numbers[i + 1])) for i in range(0, len(numbers), 2)]


def iou(gold: tuple[float, float], pred: tuple[float, float]) -> float:
    """Temporal IoU of two spans; a prediction that does not end after it starts scores 0."""
    if pred[0] >= pred[1]:
        return 0.0
    union = max(gold[1], pred[1]) - min(gold[0], pred[0])
    inter = min(gold[1], pred[1]) - max(gold[0], pred[0])
    return max(inter, 0.0) / union if union > 0 else 0.0


# --------------------------------------------------------------------------- reading


def _text(bench: BenchmarkConfig) -> str:
    fs, path = url_to_fs(bench.path)
    if not fs.exists(path):
        raise CaprlError(
            f"benchmark {bench.name}: {bench.path} does not exist; fix its path (benchmarks[].path) or download the "
            "benchmark"
        )
    try:
        return str(fs.cat(path).decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise CaprlError(f"benchmark {bench.name}: {bench.path} is not UTF-8 text ({exc})") from None


def read_tsv(bench: BenchmarkConfig) -> list[Row]:
    """A VLMEvalKit TSV (pandas ``to_csv(sep='\\t')``: a header, quoted fields where needed)."""
    csv.field_size_limit(1 << 30)
    try:
        return list(csv.DictReader(io.StringIO(_text(bench)), delimiter="\t"))
    except csv.Error as exc:
        raise CaprlError(f"benchmark {bench.name}: {bench.path} is not a readable TSV ({exc})") from None


def read_json(bench: BenchmarkConfig) -> Any:
    try:
        return json.loads(_text(bench))
    except json.JSONDecodeError as exc:
        raise CaprlError(
            f"benchmark {bench.name}: {bench.path} line {exc.lineno} is not valid JSON ({exc.msg}, column {exc.colno})"
        ) from None


def field(row: Row, name: str) -> str:
    """A column the row must fill."""
    if name not in row or row[name] is None:
        raise RowProblem(f"'{name}' is missing (found {', '.join(map(str, row)) or 'no columns'})")
    value = str(row[name]).strip()
    if not value:
        raise RowProblem(f"'{name}' is empty")
    return value


def python_list(row: Row, name: str) -> list[Any]:
    """A column holding a Python list literal (VLMEvalKit writes lists with ``str()``), or a list already."""
    value = row.get(name)
    if isinstance(value, list):
        return value
    try:
        parsed = ast.literal_eval(field(row, name))
    except (ValueError, SyntaxError):
        raise RowProblem(f"'{name}' is not a list ({str(value)[:80]!r})") from None
    if not isinstance(parsed, list) or not parsed:
        raise RowProblem(f"'{name}' is not a non-empty list ({str(value)[:80]!r})")
    return parsed


def json_choices(row: Row, name: str) -> dict[str, str]:
    """A column holding the choices as a JSON object {letter: text} (or an object already)."""
    value = row.get(name)
    if not isinstance(value, dict):
        try:
            value = json.loads(field(row, name))
        except json.JSONDecodeError:
            raise RowProblem(f"'{name}' is not a JSON object of choices ({str(value)[:80]!r})") from None
    if not isinstance(value, dict) or not value:
        raise RowProblem(f"'{name}' holds no choices")
    return {str(k).strip().upper(): str(v).strip() for k, v in value.items() if v is not None}


def after_videos(path: str) -> str:
    """The part of a video path or URL after its ``videos/`` folder (MMVU's and TOMATO's paths name it)."""
    path = path.replace("\\", "/").split("?", 1)[0]
    at = path.rfind("/videos/")
    if at >= 0:
        return path[at + len("/videos/") :]
    return path.removeprefix("./").removeprefix("videos/")


def under(root: str, rel: str) -> str:
    """``rel`` under ``root`` (an absolute path or URL as it is), ``./`` and ``..`` resolved in a local path."""
    path = rel if "://" in rel or rel.startswith("/") else posixpath.join(root, rel.removeprefix("./"))
    return path if "://" in path else posixpath.normpath(path)


def options_block(options: Iterable[tuple[str, str]], style: str) -> str:
    return "\n".join(style.format(letter=k, text=v) for k, v in options)


# --------------------------------------------------------------------------- the layouts


class VideoLayout:
    """A VLMEvalKit video benchmark: ``read`` (the file's rows), ``sample`` (one row -> a Sample), ``extract`` (the
    option letter an answer gives); the breakdowns in ``dimensions`` with their group order in ``order``."""

    name = ""
    media_type = "video"
    judge: Judge | None = None
    metric = ""
    videos = "videos"  # the videos folder beside the file when image_root is not set
    dimensions: tuple[str, ...] = ()
    order: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (dimension, its groups in report order)

    # ---- reading
    def read(self, bench: BenchmarkConfig) -> list[Row]:
        return read_tsv(bench)

    def root(self, bench: BenchmarkConfig) -> str:
        return bench.image_root or posixpath.join(posixpath.dirname(bench.path), self.videos)

    def sample(self, row: Row, i: int, root: str, bench: BenchmarkConfig) -> Sample:
        raise NotImplementedError

    def load(self, bench: BenchmarkConfig) -> list[Sample]:
        where = f"benchmark {bench.name}: {bench.path}"
        rows = self.read(bench)
        root = self.root(bench)
        samples, seen = [], set()
        for i, row in enumerate(rows[: bench.limit] if bench.limit else rows):
            try:
                s = self.sample(row, i, root, bench)
            except RowProblem as exc:
                raise CaprlError(f"{where} row {i} ({self.name} layout): {exc}; fix or drop the row") from None
            if s.id in seen:
                raise CaprlError(
                    f"{where} row {i} ({self.name} layout): its id {s.id!r} is another row's too; every row needs "
                    "its own"
                )
            seen.add(s.id)
            samples.append(s)
        if not samples:
            raise CaprlError(
                f"{where} has no rows, so nothing was written: a {self.name} file holds one row per question; point "
                "benchmarks[].path at its file or remove the benchmark"
            )
        return samples

    # ---- scoring
    def scorer(self, bench: BenchmarkConfig, samples: list[Sample], compat: Compat) -> str:
        return self.metric

    def extract(self, response: str, sample: Sample) -> str | None:
        raise NotImplementedError

    def score(self, response: str, sample: Sample, scorer: str, compat: Compat) -> tuple[str | None, float | None]:
        if sample.open_ended:
            return response.strip(), None
        letter = self.extract(response, sample)
        return letter, float(letter is not None and letter == sample.gold)

    def values_metrics(self, values: list[list[float]]) -> dict[str, float]:
        """Metrics of a group beside M_Acc/BoN, from its samples' per-caption scores."""
        return {}

    def headline(self, breakdown: dict[str, dict[str, dict[str, Any]]], m_acc: float | None) -> dict[str, float]:
        """The numbers the benchmark's own table reports, beside M_Acc/BoN."""
        return {}

    def summarize(self, rows: list[Row], samples: list[Sample], scorer: str, compat: Compat) -> dict[str, Any]:
        """BoN and M_Acc over the scored caption slots (every answer scored again; an open-ended one keeps its
        verdict), the unscored samples per reason, the breakdown and the headline metrics."""
        by_id = {s.id: s for s in samples}
        per: dict[str, list[float]] = {}
        reasons: dict[str, set[str]] = {}
        for r in rows:
            s = by_id.get(r["sample_id"])
            if s is None:
                continue
            if r["status"] == "ok" and not s.open_ended:
                r["prediction"], r["score"] = self.score(r["response"], s, scorer, compat)
                r["metric"] = self.metric
            if r["status"] != "ok" or r["score"] is None:
                reasons.setdefault(s.id, set()).add(r["status"] if r["status"] != "ok" else "awaiting_judge")
                continue
            per.setdefault(s.id, []).append(float(r["score"]))
        failed: dict[str, int] = {}
        for sid, why in reasons.items():
            if sid not in per:
                for status in sorted(why):
                    failed[status] = failed.get(status, 0) + 1
        m_acc, bon = _means(list(per.values()))
        breakdown = self.breakdown(samples, per)
        return {
            "metric": self.metric,
            "m_acc": m_acc,
            "bon": bon,
            "n_samples": len(per),
            "n_failed": len([sid for sid in reasons if sid not in per]),
            "failed": failed,
            "breakdown": breakdown,
            "metrics": self.headline(breakdown, m_acc),
        }

    def breakdown(self, samples: list[Sample], per: dict[str, list[float]]) -> dict[str, dict[str, dict[str, Any]]]:
        groups: dict[str, dict[str, list[str]]] = {d: {} for d in self.dimensions}
        for s in samples:
            for dim, group in s.groups:
                if dim in groups and s.id in per:
                    groups[dim].setdefault(group, []).append(s.id)
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for dim, found in groups.items():
            rank = {g: i for i, g in enumerate(dict(self.order).get(dim, ()))}
            names = sorted(found, key=lambda g: (rank.get(g, len(rank)), list(found).index(g)))
            out[dim] = {}
            for g in names:
                values = [per[sid] for sid in found[g]]
                m_acc, bon = _means(values)
                out[dim][g] = {"n_samples": len(values), "m_acc": m_acc, "bon": bon, **_extra(self, values)}
        return out


def _extra(layout: VideoLayout, values: list[list[float]]) -> dict[str, Any]:
    metrics = layout.values_metrics(values)
    return {"metrics": metrics} if metrics else {}


def _means(values: list[list[float]]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return sum(sum(v) / len(v) for v in values) / len(values), sum(max(v) for v in values) / len(values)


def _index(row: Row, i: int) -> str:
    return str(row.get("index") if row.get("index") not in (None, "") else i)


class VideoMME(VideoLayout):
    """Video-MME.tsv: index, video, video_path, duration (short/medium/long), domain, sub_category, task_type,
    candidates (a list of "A. ..." strings), question, answer (the letter); videos ``<video>.mp4`` (default: the
    row's video_path beside the TSV)."""

    name, metric, videos = "videomme", "videomme_letter", "video"
    dimensions = ("duration", "domain", "task_type")
    order = (("duration", ("short", "medium", "long")),)
    PROMPT = (
        "Select the best answer to the following multiple-choice question based on the video. Respond with only the "
        "letter (A, B, C, or D) of the correct option.\nQuestion: {question}\n{options}\nAnswer: "
    )

    def sample(self, row: Row, i: int, root: str, bench: BenchmarkConfig) -> Sample:
        question, answer = field(row, "question"), field(row, "answer").upper()
        options = []
        for c in python_list(row, "candidates"):
            m = re.match(r"\s*([A-Z])\.\s*(.*)", str(c), re.DOTALL)
            if not m:
                raise RowProblem(f"candidate {str(c)[:60]!r} is not 'X. text'")
            options.append((m.group(1), m.group(2).strip()))
        if answer not in dict(options):
            raise RowProblem(f"'answer' {answer!r} is none of the candidates' letters")
        video = (
            posixpath.join(bench.image_root, f"{field(row, 'video')}.mp4")
            if bench.image_root
            else under(posixpath.dirname(bench.path), row.get("video_path") or f"video/{field(row, 'video')}.mp4")
        )
        text = self.PROMPT.format(question=question, options="\n".join(str(c) for c in python_list(row, "candidates")))
        groups = tuple((d, str(row[d])) for d in ("duration", "domain", "sub_category", "task_type") if row.get(d))
        return Sample(_index(row, i), video, "video", text, answer, tuple(options), False, question, groups)

    def extract(self, response: str, sample: Sample) -> str | None:
        return video_mme_letter(response)

    def headline(self, breakdown: dict[str, dict[str, dict[str, Any]]], m_acc: float | None) -> dict[str, float]:
        return {d: g["m_acc"] for d, g in breakdown.get("duration", {}).items() if g["m_acc"] is not None}


class MVBench(VideoLayout):
    """MVBench.tsv (or MVBench_MP4.tsv): index, task_type, prefix, video, question, candidates (a list of option
    texts), answer (the right option's text); videos ``<prefix>/<video>`` under the dataset folder (the TSV's)."""

    name, metric, videos = "mvbench", "mvbench_option", ""
    dimensions = ("task_type",)
    SYSTEM = (
        "Carefully watch the video and pay attention to the cause and sequence of events, the detail and movement of "
        "objects, and the action and pose of persons. Based on your observations, select the best option that "
        "accurately addresses the question.\n"
    )

    def root(self, bench: BenchmarkConfig) -> str:
        return bench.image_root or posixpath.dirname(bench.path)

    def sample(self, row: Row, i: int, root: str, bench: BenchmarkConfig) -> Sample:
        question, answer = field(row, "question"), field(row, "answer")
        texts = [str(c) for c in python_list(row, "candidates")]
        if answer not in texts:
            raise RowProblem(f"'answer' {answer[:60]!r} is none of the candidates")
        options = tuple((chr(ord("A") + k), t) for k, t in enumerate(texts))
        text = (
            f"{self.SYSTEM}Question: {question}\nOptions:\n{options_block(options, '({letter}) {text}')}\n"
            "Only give the best option."
        )
        video = under(root, posixpath.join(row.get("prefix") or "", field(row, "video")))
        gold = options[texts.index(answer)][0]
        groups = (("task_type", str(row["task_type"])),) if row.get("task_type") else ()
        return Sample(_index(row, i), video, "video", text, gold, options, False, question, groups)

    def extract(self, response: str, sample: Sample) -> str | None:
        return infer_choice(response, dict(sample.options))


class MMVU(VideoLayout):
    """MMVU's validation.json (the benchmark's own: id, video URL, question, question_type multiple-choice or
    open-ended, choices {A..E}, answer, metadata.subject) or VLMEvalKit's MMVU.tsv (the same, video
    ``videos/<subject>/<n>.mp4``, choices as JSON, subject); videos ``<subject>/<n>.mp4`` (the path after
    ``videos/``) under the ``videos`` folder of the MMVU checkout."""

    name, metric = "mmvu", "mmvu_letter"
    judge = MMVU_JUDGE
    dimensions = ("question_type", "subject")
    order = (("question_type", ("multiple-choice", "open-ended")),)
    MCQ = (
        "Question: {question}\n\nOptions:\n{options}\n\nPlease answer with the option letter only (A, B, C, D, or E)."
        "\nAnswer:"
    )
    OPEN = "Question: {question}\n\nPlease output the final short answer.\nAnswer:"

    def read(self, bench: BenchmarkConfig) -> list[Row]:
        if bench.path.endswith(".tsv"):
            return read_tsv(bench)
        data = read_json(bench)
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise CaprlError(f"benchmark {bench.name}: {bench.path} is not MMVU's validation.json (a list of objects)")
        return [{**r, "subject": (r.get("metadata") or {}).get("subject", r.get("subject", ""))} for r in data]

    def root(self, bench: BenchmarkConfig) -> str:
        if bench.image_root:
            return bench.image_root
        folder = posixpath.dirname(bench.path)  # validation.json sits in <MMVU>/data/, the TSV in <MMVU>/
        return posixpath.join(folder if bench.path.endswith(".tsv") else posixpath.dirname(folder), "videos")

    def sample(self, row: Row, i: int, root: str, bench: BenchmarkConfig) -> Sample:
        question, answer = field(row, "question"), field(row, "answer")
        kind = field(row, "question_type").lower()
        video = under(root, after_videos(field(row, "video")))
        sid = str(row.get("id") or _index(row, i))
        groups = (("question_type", kind),) + ((("subject", str(row["subject"])),) if row.get("subject") else ())
        if kind == "open-ended":
            return Sample(sid, video, "video", self.OPEN.format(question=question), answer, (), True, question, groups)
        if kind != "multiple-choice":
            raise RowProblem(f"'question_type' {kind!r} is neither multiple-choice nor open-ended")
        options = tuple(sorted(json_choices(row, "choices").items()))
        gold = answer.upper()
        if gold not in dict(options):
            raise RowProblem(f"'answer' {answer!r} is none of the choices' letters")
        text = self.MCQ.format(question=question, options=options_block(options, "{letter}. {text}"))
        return Sample(sid, video, "video", text, gold, options, False, question, groups)

    def extract(self, response: str, sample: Sample) -> str | None:
        return letter_of(response, "ABCDE")

    def headline(self, breakdown: dict[str, dict[str, dict[str, Any]]], m_acc: float | None) -> dict[str, float]:
        return {t: g["m_acc"] for t, g in breakdown.get("question_type", {}).items() if g["m_acc"] is not None}


#: MMBench-Video's capability taxonomy: the coarse (L2) dimensions and the fine (L3) ones each covers
MMBENCH_VIDEO_L2 = {
    "CP": ("Video Topic", "Video Emotion", "Video Scene", "Video Style"),
    "FP-S": ("OCR", "Object Recognition", "Attribute Recognition", "Event Recognition", "Human Motion", "Counting"),
    "FP-C": ("Spatial Relationship", "Human-object Interaction", "Human Interaction"),
    "HL": ("Hallucination",),
    "LR": ("Structuralized Image-Text Understanding", "Mathematical Calculation"),
    "AR": ("Physical Property", "Function Reasoning", "Identity Reasoning"),
    "RR": ("Natural Relation", "Physical Relation", "Social Relation"),
    "CSR": ("Common Sense Reasoning",),
    "TR": ("Counterfactual Reasoning", "Causal Reasoning", "Future Prediction"),
}
MMBENCH_VIDEO_L1 = {"Perception": ("CP", "FP-C", "FP-S", "HL"), "Reasoning": ("LR", "AR", "RR", "CSR", "TR")}


class MMBenchVideo(VideoLayout):
    """MMBench-Video.tsv: index, video, video_path, question, answer (free text), dimensions (a list of its fine
    capabilities); videos named by video_path's file name in the ``video`` folder beside the TSV. Every answer is
    judged 0-3 (the score: rating / 3); the breakdown reports the mean rating (0-3) as the benchmark does."""

    name, metric, videos = "mmbench_video", "mmbench_video_judge", "video"
    judge = MMBENCH_VIDEO_JUDGE
    dimensions = ("overall", "L2", "L3")
    order = (("overall", ("Perception", "Reasoning")), ("L2", tuple(MMBENCH_VIDEO_L2)))
    PROMPT = (
        "Please provide the answer to the question about the video content. Please directly reply with your "
        "response to the only question.\nQuestion: {question}\nAnswer: "
    )

    def sample(self, row: Row, i: int, root: str, bench: BenchmarkConfig) -> Sample:
        question, answer = field(row, "question"), field(row, "answer")
        name = posixpath.basename(str(row.get("video_path") or "").replace("\\", "/")) or f"{field(row, 'video')}.mp4"
        fine = [str(d) for d in python_list(row, "dimensions")]
        unknown = [d for d in fine if not any(d in v for v in MMBENCH_VIDEO_L2.values())]
        if unknown:
            raise RowProblem(f"'dimensions' holds {unknown[0]!r}, not one of MMBench-Video's capabilities")
        l2 = [k for k, v in MMBENCH_VIDEO_L2.items() if any(d in v for d in fine)]
        l1 = [k for k, v in MMBENCH_VIDEO_L1.items() if any(d in v for d in l2)]
        groups = tuple([("overall", g) for g in l1] + [("L2", g) for g in l2] + [("L3", g) for g in fine])
        text = self.PROMPT.format(question=question)
        return Sample(_index(row, i), under(root, name), "video", text, answer, (), True, question, groups)

    def values_metrics(self, values: list[list[float]]) -> dict[str, float]:
        m_acc, _ = _means(values)
        return {"mean_rating": 3 * m_acc} if m_acc is not None else {}

    def headline(self, breakdown: dict[str, dict[str, dict[str, Any]]], m_acc: float | None) -> dict[str, float]:
        out = {"mean_rating": 3 * m_acc} if m_acc is not None else {}
        for group, g in breakdown.get("overall", {}).items():
            out[f"{group} mean_rating"] = g["metrics"]["mean_rating"]
        return out


class Tomato(VideoLayout):
    """TOMATO.tsv (VLMEvalKit's, built from the benchmark's data/*.json): index, id, task (count, direction,
    rotation, shape&trend, velocity&frequency, visual_cues), demonstration_type, question, choices (JSON {A..F}),
    answer (the letter), video ``videos/<demonstration_type>/<key>.mp4``; videos under the ``videos`` folder."""

    name, metric = "tomato", "tomato_letter"
    dimensions = ("task", "demonstration_type")
    PROMPT = (
        "Question: {question}\n\nOptions:\n{options}\n\nPlease answer with the option letter only (A, B, C, D, E, "
        "or F).\nAnswer:"
    )

    def sample(self, row: Row, i: int, root: str, bench: BenchmarkConfig) -> Sample:
        question, answer = field(row, "question"), field(row, "answer").upper()
        options = tuple(sorted(json_choices(row, "choices").items()))
        if answer not in dict(options):
            raise RowProblem(f"'answer' {answer!r} is none of the choices' letters")
        text = self.PROMPT.format(question=question, options=options_block(options, "{letter}. {text}"))
        groups = tuple((d, str(row[d])) for d in self.dimensions if row.get(d))
        video = under(root, after_videos(field(row, "video")))
        return Sample(
            str(row.get("id") or _index(row, i)), video, "video", text, answer, options, False, question, groups
        )

    def extract(self, response: str, sample: Sample) -> str | None:
        return tomato_letter(response, dict(sample.options))

    def headline(self, breakdown: dict[str, dict[str, dict[str, Any]]], m_acc: float | None) -> dict[str, float]:
        return {t: g["m_acc"] for t, g in breakdown.get("task", {}).items() if g["m_acc"] is not None}


TIMELENS_SUBSETS = ("charades", "activitynet", "qvhighlights")
RECALL_AT = (0.3, 0.5, 0.7)


class TimeLens(VideoLayout):
    """TimeLens-Bench's ``<subset>-timelens.json`` ({video: {duration, spans, queries}}, one question per span) or
    VLMEvalKit's ``<subset>-timelens.tsv`` (index, video, question, gt_start, gt_end or gt_span; a SUB_DATASET
    column when several subsets share one file); videos ``<subset>/<video>.mp4`` under the ``videos`` folder. An
    answer scores the IoU of the first span it names with the gold span: M_Acc is the mIoU; R1@0.3/0.5/0.7 beside."""

    name, metric = "timelens", "timelens_iou"
    dimensions = ("subset",)
    order = (("subset", TIMELENS_SUBSETS),)
    PROMPT = (
        "Please find the visual event described by the sentence '{query}', determining its starting and ending "
        "times. The format should be: 'The event happens in <start time> - <end time> seconds'."
    )

    def subset_of(self, bench: BenchmarkConfig, row: Row) -> str:
        named = str(row.get("SUB_DATASET") or "").removeprefix("TimeLens_").lower()
        subset = named or posixpath.basename(bench.path).split("-timelens")[0].lower()
        if subset not in TIMELENS_SUBSETS:
            raise RowProblem(
                f"names no TimeLens-Bench subset ({', '.join(TIMELENS_SUBSETS)}): a file named <subset>-timelens.json "
                "or .tsv, or a SUB_DATASET column, says which"
            )
        return subset

    def read(self, bench: BenchmarkConfig) -> list[Row]:
        if bench.path.endswith(".tsv"):
            return read_tsv(bench)
        data = read_json(bench)
        if not isinstance(data, dict):
            raise CaprlError(
                f"benchmark {bench.name}: {bench.path} is not a TimeLens-Bench annotation file "
                "({video: {duration, spans, queries}})"
            )
        rows: list[Row] = []
        for video, anno in data.items():
            spans = anno.get("spans") if isinstance(anno, dict) else None
            queries = anno.get("queries") if isinstance(anno, dict) else None
            if not isinstance(spans, list) or not isinstance(queries, list) or len(spans) != len(queries):
                rows.append({"video": video, "_problem": "needs 'spans' and 'queries' lists of one length"})
                continue
            for span, query in zip(spans, queries, strict=True):
                rows.append({"index": len(rows), "video": video, "question": query, "gt_span": span})
        return rows

    def sample(self, row: Row, i: int, root: str, bench: BenchmarkConfig) -> Sample:
        if row.get("_problem"):
            raise RowProblem(f"video {row['video']!r} {row['_problem']}")
        subset = self.subset_of(bench, row)
        query = re.sub(r"\s+", " ", field(row, "question")).strip().strip(".").strip()
        try:
            if row.get("gt_start") not in (None, "") and row.get("gt_end") not in (None, ""):
                start, end = float(row["gt_start"]), float(row["gt_end"])
            else:
                span = row.get("gt_span")
                start, end = (
                    float(x) for x in (span if isinstance(span, list) else ast.literal_eval(field(row, "gt_span")))
                )
        except (ValueError, SyntaxError, TypeError):
            raise RowProblem("the gold span (gt_start/gt_end or gt_span) is not two numbers") from None
        if not end > start:
            raise RowProblem(f"the gold span [{start}, {end}] does not end after it starts")
        video = under(root, posixpath.join(subset, f"{field(row, 'video')}.mp4"))
        sid = f"{subset}:{_index(row, i)}"
        gold = json.dumps([start, end])
        return Sample(
            sid, video, "video", self.PROMPT.format(query=query), gold, (), False, query, (("subset", subset),)
        )

    def score(self, response: str, sample: Sample, scorer: str, compat: Compat) -> tuple[str | None, float | None]:
        spans = time_spans(response)
        start, end = json.loads(sample.gold)
        if not spans:
            return None, 0.0
        return f"{spans[0][0]:g} - {spans[0][1]:g}", iou((start, end), spans[0])

    def values_metrics(self, values: list[list[float]]) -> dict[str, float]:
        n = len(values)
        out = {f"R1@{t}": sum(sum(v >= t for v in vs) / len(vs) for vs in values) / n for t in RECALL_AT}
        return {**out, "mIoU": sum(sum(vs) / len(vs) for vs in values) / n}

    def headline(self, breakdown: dict[str, dict[str, dict[str, Any]]], m_acc: float | None) -> dict[str, float]:
        groups = breakdown.get("subset", {}).values()
        n = sum(g["n_samples"] for g in groups)
        if not n:
            return {}
        keys = [f"R1@{t}" for t in RECALL_AT] + ["mIoU"]
        return {k: sum(g["metrics"][k] * g["n_samples"] for g in groups) / n for k in keys}


VIDEO_MME = VideoMME()
MVBENCH = MVBench()
MMVU_LAYOUT = MMVU()
MMBENCH_VIDEO = MMBenchVideo()
TOMATO = Tomato()
TIMELENS = TimeLens()
