"""The generated config reference matches the code, and every command's every key is documented there."""

from __future__ import annotations

from pathlib import Path

from caprl_kit import docgen
from caprl_kit.commands import COMMANDS

REPO = Path(__file__).resolve().parents[1]


def test_reference_matches_the_models() -> None:
    for name, text in docgen.generate().items():
        path = REPO / "docs" / "reference" / name
        assert path.is_file() and path.read_text() == text, f"regenerate: python -m caprl_kit.docgen ({name})"


def test_every_top_level_key_is_documented() -> None:
    for kind in COMMANDS.names():
        page = (REPO / "docs" / "reference" / f"{kind}.md").read_text()
        for field in COMMANDS.get(kind).model_fields:
            if field != "kind":
                assert f"| `{field}` |" in page, (kind, field)


def test_docs_link_the_reference_and_verb_pages() -> None:
    readme = (REPO / "README.md").read_text()
    for page in ("docs/annotate.md", "docs/curate.md", "docs/eval.md", "docs/train.md", "docs/rewards.md",
                 "docs/engines.md", "docs/config.md"):
        assert page in readme and (REPO / page).is_file(), page


def test_pipelines_index_is_current() -> None:
    assert (REPO / "pipelines" / "README.md").read_text() == docgen.pipelines_index()
