"""Reward config blocks: the QA-accuracy reward, the extra terms, and their weighted combination (spec §2)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator

from caprl_kit.backends.config import BackendConfig, SamplingConfig, one_answer
from caprl_kit.claims import CLAIM_SPLITTERS
from caprl_kit.config import ConfigModel, FieldIssue, prompt_field, raise_issues, registry_name, volatile
from caprl_kit.prompts import PROMPTS
from caprl_kit.rewards.registry import REWARDS


def _answer_sampling() -> SamplingConfig:
    return SamplingConfig(n=1, temperature=0.6, top_p=1.0, max_tokens=10)  # spec §2.2


class RewardServiceConfig(ConfigModel):
    """The QA reward scored by ``caprl serve-reward`` replicas over HTTP (``POST /v1/reward``), as cluster runs do:
    the server's own ``qa`` config (answerer, mode, qa_num) decides the score; this side only sends captions and
    their questions."""

    urls: list[str] = volatile(
        min_length=1, description="Reward server base URLs (round-robin with failover), e.g. http://127.0.0.1:18889"
    )
    token_env: str | None = volatile(None, description="Env var holding the servers' bearer token")
    timeout_s: float = volatile(600.0, gt=0, description="Seconds one request may take")
    max_captions_per_request: int = volatile(
        64, ge=1, description="Captions per HTTP request; a larger call is split and its requests sent concurrently"
    )


class QARewardConfig(ConfigModel):
    mode: Literal["shuffle", "all_qa"] = Field(
        "shuffle",
        description="shuffle: qa_num draws with replacement, options shuffled + cannot-answer option; "
        "all_qa: every question once, unshuffled, no extra option (spec §2.2)",
    )
    qa_num: int = Field(8, ge=1, description="Questions drawn per caption in shuffle mode (spec §2.2: 8)")
    task: Literal["image", "video"] = Field("image", description="Selects the answerer prompt")
    compat: Literal["fixed", "official"] = Field(
        "fixed",
        description="official: cannot-answer always labelled F, first-[A-I]-letter parsing, video prompt "
        "indentation (spec §2.2); fixed: next free label, robust letter extraction",
    )
    seed: int | None = Field(None, description="Seed for question draws and shuffles (None: fresh randomness)")
    answerer: BackendConfig = Field(
        default_factory=lambda: BackendConfig(name="lexical"), description="Text LLM answering from the caption"
    )
    sampling: SamplingConfig = Field(
        default_factory=_answer_sampling, description="Answerer sampling (n: 1, one answer per question)"
    )
    service: RewardServiceConfig | None = Field(
        None, description="Score through caprl serve-reward over HTTP instead of the in-process answerer"
    )

    @model_validator(mode="after")
    def _one_sampling(self) -> QARewardConfig:
        issues = []
        if self.answerer.sampling != SamplingConfig():  # a resolved config dumps the default: that one is fine
            issues.append(
                FieldIssue(
                    "answerer.sampling",
                    "is not used: the answerer samples with qa.sampling",
                    "move these keys to qa.sampling",
                )
            )
        if self.sampling.n > 1:
            issues.append(
                one_answer(
                    "sampling.n",
                    self.sampling.n,
                    "the QA reward reads one answer per question",
                    "set it to 1; raise qa_num to ask more questions per caption",
                )
            )
        if self.service is not None:  # the server's own qa config scores: a different local one would be ignored
            default = QARewardConfig()
            ignored = [
                k
                for k in ("mode", "qa_num", "compat", "seed", "answerer", "sampling")
                if getattr(self, k) != getattr(default, k)
            ]
            if ignored:
                issues.append(
                    FieldIssue(
                        ignored[0],
                        f"is set, but with qa.service the reward server's own qa config "
                        f"decides ({', '.join(ignored)} would be ignored)",
                        "set them in the server's config (caprl serve-reward), or drop qa.service to score in-process",
                    )
                )
        raise_issues(issues)
        return self


class LengthRewardConfig(ConfigModel):
    l1: int = Field(2048, ge=1, description="Full reward up to this many tokens (spec §2.3)")
    l2: int = Field(3072, ge=1, description="Zero reward beyond this many tokens; linear in between")
    tokenizer: str | None = Field(None, description="Policy tokenizer (hub id or path); None: whitespace words")


class TimestampFormatConfig(ConfigModel):
    version: Literal["v2", "legacy"] = Field(
        "v2",
        description="v2: 0.5 validity + 0.5 chronology (default); legacy: 0.45/0.25/0.30 with min_brackets (spec §2.4)",
    )
    max_minute: int = Field(599, ge=0, description="Largest valid minute value")
    min_brackets: int = Field(3, ge=1, description="legacy only: timestamps needed for full coverage")


class JudgeRewardConfig(ConfigModel):
    judge: BackendConfig = Field(default_factory=BackendConfig, description="Vision-language judge model")
    sampling: SamplingConfig = Field(
        default_factory=lambda: SamplingConfig(n=1, temperature=0.2, top_p=1.0, max_tokens=256),
        description="Judge sampling",
    )

    @model_validator(mode="after")
    def _one_sampling(self) -> JudgeRewardConfig:
        issues = []
        if self.judge.sampling != SamplingConfig():
            issues.append(
                FieldIssue(
                    "judge.sampling",
                    "is not used: the judge samples with vl_judge.sampling",
                    "move these keys to vl_judge.sampling",
                )
            )
        if self.sampling.n > 1:
            issues.append(
                one_answer("sampling.n", self.sampling.n, "the judge reads one verdict per caption", "set it to 1")
            )
        raise_issues(issues)
        return self


def _claim_sampling() -> SamplingConfig:
    return SamplingConfig(n=1, temperature=0.0, max_tokens=512)


def _verdict_sampling() -> SamplingConfig:
    return SamplingConfig(n=1, temperature=0.0, max_tokens=8)


def _default(model: ConfigModel, key: str) -> object:
    """The default of ``model``'s field ``key`` (a validator cannot build a default instance of its own model)."""
    return type(model).model_fields[key].get_default(call_default_factory=True)


def _prompt_or_none(name: str | None) -> str | None:
    return None if name is None else registry_name(PROMPTS)(name)


class ClaimSplitterConfig(ConfigModel):
    name: Annotated[str, AfterValidator(registry_name(CLAIM_SPLITTERS))] = Field(
        "rules",
        description="rules: sentences and clauses, model-free; llm: a model writes one claim per line "
        "(splitter.backend); file:path.py:Class",
    )
    backend: BackendConfig | None = Field(None, description="llm: the model that splits (any back end)")
    prompt: Annotated[str, AfterValidator(registry_name(PROMPTS))] = prompt_field(
        "claim_split", description="llm: the instruction (a registered prompt); the caption follows it"
    )
    sampling: SamplingConfig = Field(default_factory=_claim_sampling, description="llm: the splitter's sampling")

    @model_validator(mode="after")
    def _used(self) -> ClaimSplitterConfig:
        issues = []
        if self.name == "rules":
            for key in ("backend", "prompt", "sampling"):
                if getattr(self, key) != _default(self, key):
                    issues.append(
                        FieldIssue(key, "is not used by the rules splitter", "set name: llm to split with a model")
                    )
        elif self.name == "llm" and self.backend is None:
            issues.append(FieldIssue("backend", "is required by the llm splitter", "name the model that splits"))
        elif self.name == "llm" and self.backend is not None and self.backend.name == "lexical":
            issues.append(
                FieldIssue(
                    "backend.name",
                    "is lexical, which answers questions and claim checks but writes no claims",
                    "name a text model (transformers, vllm, openai), or splitter name: rules",
                )
            )
        if self.backend is not None and self.backend.sampling != SamplingConfig():
            issues.append(
                FieldIssue(
                    "backend.sampling",
                    "is not used: the splitter samples with splitter.sampling",
                    "move these keys to splitter.sampling",
                )
            )
        if self.sampling.n > 1:
            issues.append(
                one_answer("sampling.n", self.sampling.n, "the splitter reads one reply per caption", "set it to 1")
            )
        raise_issues(issues)
        return self


class ClaimVerifierConfig(ConfigModel):
    evidence: Literal["reference", "media"] = Field(
        "reference",
        description="reference: a reference caption (the rows' reference_column), text only; media: the item's "
        "image or video (the backend must be a VLM)",
    )
    backend: BackendConfig = Field(
        default_factory=lambda: BackendConfig(name="lexical"),
        description="Answers each claim yes or no (lexical: model-free, reference only)",
    )
    reference_column: str = Field("caption", description="evidence reference: the column holding the reference")
    prompt: Annotated[str | None, AfterValidator(_prompt_or_none)] = prompt_field(
        None,
        description="The question (a registered prompt); null: claim_verify_reference, claim_verify_image or "
        "claim_verify_video by the evidence",
    )
    sampling: SamplingConfig = Field(default_factory=_verdict_sampling, description="The verifier's sampling")

    @model_validator(mode="after")
    def _used(self) -> ClaimVerifierConfig:
        issues = []
        if self.evidence == "media" and self.backend.name == "lexical":
            issues.append(
                FieldIssue(
                    "backend.name",
                    "is lexical, which reads text and cannot see the media",
                    "set a VLM (transformers, vllm, openai), or evidence: reference",
                )
            )
        if self.evidence == "media" and self.reference_column != _default(self, "reference_column"):
            issues.append(
                FieldIssue("reference_column", "is not used with evidence: media", "remove it, or evidence: reference")
            )
        if self.backend.sampling != SamplingConfig():
            issues.append(
                FieldIssue(
                    "backend.sampling",
                    "is not used: the verifier samples with verifier.sampling",
                    "move these keys to verifier.sampling",
                )
            )
        if self.sampling.n > 1:
            issues.append(
                one_answer("sampling.n", self.sampling.n, "the verifier reads one reply per claim", "set it to 1")
            )
        raise_issues(issues)
        return self


class FaithfulnessConfig(ConfigModel):
    """Claim precision: the caption split into claims, each checked on its own against the evidence."""

    splitter: ClaimSplitterConfig = Field(default_factory=ClaimSplitterConfig, description="Caption -> claims")
    verifier: ClaimVerifierConfig = Field(default_factory=ClaimVerifierConfig, description="Claim -> yes / no")


class ComponentConfig(ConfigModel):
    name: Annotated[str, AfterValidator(registry_name(REWARDS))] = Field(
        description="qa_accuracy | length | timestamp_format | vl_judge | faithfulness | file:path.py:fn"
    )
    weight: float = Field(1.0, description="Weight in the total")


class RewardConfig(ConfigModel):
    components: list[ComponentConfig] = Field(
        default_factory=lambda: [
            ComponentConfig(name="qa_accuracy", weight=1.0),
            ComponentConfig(name="length", weight=0.0),
        ],
        description="Weighted terms; CapRL++ video: qa_accuracy 1.0 + timestamp_format 0.2 + length 0.2",
    )
    qa: QARewardConfig = Field(default_factory=QARewardConfig)
    length: LengthRewardConfig = Field(default_factory=LengthRewardConfig)
    timestamp_format: TimestampFormatConfig = Field(default_factory=TimestampFormatConfig)
    vl_judge: JudgeRewardConfig = Field(default_factory=JudgeRewardConfig)
    faithfulness: FaithfulnessConfig = Field(default_factory=FaithfulnessConfig)
