"""Small curated QA sets for tests: rows -> a JSONL manifest -> ``caprl curate`` in import mode (the lexical
answerer reads each row's caption as its evidence) -> the exported dataset folder."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from caprl_kit.curate.config import CurateConfig
from caprl_kit.curate.pipeline import run as curate


def scene_rows(scenes: list[Any], seed: int = 0) -> list[dict[str, Any]]:
    """Manifest rows for synthetic scenes written under ``images/``: path, MCQs and the complete caption."""
    rng = random.Random(seed)
    return [{"path": f"images/{s.key}.png", "qa": s.mcqs(rng), "caption": s.caption()} for s in scenes]


def curate_import(root: Path, rows: list[dict[str, Any]], *, out: str = "cur", val_fraction: float = 0.0) -> Path:
    """Write ``rows`` to ``root/m.jsonl``, curate them into ``root/out``; returns ``root/out/dataset``."""
    (root / "m.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    curate(CurateConfig.model_validate({"input": {"path": str(root / "m.jsonl")}, "import_mode": "qa",
                                        "answer": {"backend": {"name": "lexical"}, "evidence": "caption"},
                                        "export": {"val_fraction": val_fraction}, "output_dir": str(root / out)}))
    return root / out / "dataset"
