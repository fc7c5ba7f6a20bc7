"""Single source of truth for every artifact caprl-kit reads or writes (see data_schemas/README.md)."""

from caprl_kit.schemas._base import Artifact
from caprl_kit.schemas.annotation import AnnotationRow, SamplingRecord
from caprl_kit.schemas.curate import MCQ, CuratedQARow, MCQGenerationRow, MCQSetRow, QATrialsRow, Trial
from caprl_kit.schemas.evaluation import EvalResults, EvalSample
from caprl_kit.schemas.inputs import InputManifestRow
from caprl_kit.schemas.pairs import PreferencePairRow, ScoredCaptionRow
from caprl_kit.schemas.reward import RewardRequest, RewardResponse
from caprl_kit.schemas.run import RunManifest, ShardStats

ARTIFACTS: list[type[Artifact]] = [
    InputManifestRow,
    MCQGenerationRow,
    MCQSetRow,
    QATrialsRow,
    CuratedQARow,
    AnnotationRow,
    ShardStats,
    RunManifest,
    RewardRequest,
    RewardResponse,
    EvalSample,
    EvalResults,
    ScoredCaptionRow,
    PreferencePairRow,
]

__all__ = [a.__name__ for a in ARTIFACTS] + ["ARTIFACTS", "Artifact", "MCQ", "Trial", "SamplingRecord"]
