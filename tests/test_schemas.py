"""data_schemas/ is generated from the models and must not drift; examples validate against both views."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from pydantic import Field, create_model

from caprl_kit.io.parquet import rows_to_table
from caprl_kit.schemas import ARTIFACTS, AnnotationRow
from caprl_kit.schemas import export

REPO = Path(__file__).resolve().parents[1]
EXPECTED_ARTIFACTS = {
    "input_manifest", "mcq_generation", "mcq_set", "qa_trials", "curated_qa", "annotation", "shard_stats",
    "run_manifest", "reward_request", "reward_response", "eval_sample", "eval_results", "scored_caption",
    "preference_pair",
}


def drift(root: Path) -> list[str]:
    """Files whose committed content differs from what the models generate."""
    out = []
    for rel, text in export.generate().items():
        path = root / rel
        if not path.is_file() or path.read_text() != text:
            out.append(rel)
    return out


def test_every_artifact_is_covered() -> None:
    assert {a.schema_name for a in ARTIFACTS} == EXPECTED_ARTIFACTS
    for a in ARTIFACTS:
        stem = f"{a.schema_name}.v{a.schema_version}"
        for rel in (f"{stem}.schema.json", f"{stem}.arrow.txt", f"examples/{stem}.json"):
            assert (REPO / "data_schemas" / rel).is_file(), rel


def test_committed_files_match_the_models() -> None:
    assert drift(REPO / "data_schemas") == [], "run: python -m caprl_kit.schemas.export"


def test_drift_is_detected_when_a_model_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    export.write(tmp_path)
    assert drift(tmp_path) == []
    changed = create_model(
        "AnnotationRow", __base__=AnnotationRow, __module__=AnnotationRow.__module__, new_column=(str | None, Field(None, description="added"))
    )
    monkeypatch.setattr(export, "ARTIFACTS", [changed if a is AnnotationRow else a for a in ARTIFACTS])
    assert sorted(drift(tmp_path)) == ["annotation.v2.arrow.txt", "annotation.v2.schema.json", "examples/annotation.v2.json"]


@pytest.mark.parametrize("artifact", ARTIFACTS, ids=lambda a: a.schema_name)
def test_example_validates_against_json_schema_and_arrow(artifact) -> None:
    stem = f"{artifact.schema_name}.v{artifact.schema_version}"
    schema = json.loads((REPO / "data_schemas" / f"{stem}.schema.json").read_text())
    example = json.loads((REPO / "data_schemas" / "examples" / f"{stem}.json").read_text())
    jsonschema.validate(example, schema)
    row = artifact.model_validate(example)
    table = rows_to_table([row], artifact)
    assert table.num_rows == 1
    assert table.schema.metadata[b"caprl.schema"] == artifact.schema_id().encode()
