"""Caption-benchmark submissions keyed by image file name: ``{"test_01258.jpg": "caption", ...}``.

- CapArena-Auto (njucckevin/CapArena, README "Step 3: Generate Captions"): its 600 images ``test_XXXXX.jpg``;
  ``caparena_auto_eval.py --result_path FILE`` reads ``captions[img_filename]``.
- CapMAS (adobe-research/CapMAS, README "Captioning"; 1,000 DOCCI / IIW images ``aar_test_XXXXX.jpg``,
  ``test_XXXXX.jpg``): ``eval_factuality.py`` / ``eval_coverage.py`` / ``eval_clair.py --captions-file FILE``.

From an annotate run over the benchmark's images -> ``captions.json``; from an eval run -> ``<task>.json`` per
task. One caption per image: an item's first (``caption_index`` 0). Two items with one file name are refused.
"""

from __future__ import annotations

from caprl_kit.errors import CaprlError
from caprl_kit.exports.core import ExportDir, ExportOptions
from caprl_kit.exports.formats import ExportFormat
from caprl_kit.exports.runs import CaptionRun, Run, caption_items, caption_runs


def file_name(source: CaptionRun, ext: str = ".json") -> str:
    """``captions.json`` for an annotate run, ``<task>.json`` for one task of an eval run."""
    return f"{source.task}{ext}" if source.task else f"captions{ext}"


def write_dict(run: Run, out: ExportDir, opts: ExportOptions) -> None:
    for source in caption_runs(run):
        captions: dict[str, str] = {}
        keys: dict[str, str] = {}
        for item in caption_items(source, out, first=True, with_media=False):
            if item.image_id in captions:
                raise CaprlError(
                    f"items {keys[item.image_id]} and {item.key} of {source.url} share the file name "
                    f"{item.image_id}: a submission is keyed by image file name, so each must be unique"
                )
            captions[item.image_id] = item.captions[0]
            keys[item.image_id] = item.key
        if captions:
            out.json(file_name(source), captions, rows=len(captions))


CAPARENA = ExportFormat(
    name="caparena",
    summary="CapArena-Auto result JSON {image file name: caption}",
    writers={"annotate": write_dict, "eval": write_dict},
    options=frozenset({"captions"}),
    one_caption=True,
)
CAPMAS = ExportFormat(
    name="capmas",
    summary="CapMAS / DOCCI captions JSON {image file name: caption}",
    writers={"annotate": write_dict, "eval": write_dict},
    options=frozenset({"captions"}),
    one_caption=True,
)
