"""Every file name a run writes, in one place: the writers format these, and the generated ``data_schemas/`` index
shows them as each artifact's file pattern, so the docs cannot drift from what is on disk."""

from __future__ import annotations

#: a run's root (every verb)
RUN_MARKER = "caprl_run.json"
RUN_MANIFEST = "run_manifest.json"
RESOLVED_CONFIG = "config.resolved.yaml"
CONFIG_IDENTITY = "config.identity.json"  # the resolved config's resume identity (caprl_kit.config.identity)
OUTPUT_LOCK = ".caprl.lock"  # held while a command writes the folder (io/lock.py)
#: a sharded stage's folder
SHARD = "{shard:05d}.parquet"
SHARD_STATS = "{shard:05d}_stats.json"
#: caprl curate: OUTPUT/<stage>/ shards, then OUTPUT/dataset/
CURATE_STAGE_DIR = "{stage}"
CURATED_SPLIT = "dataset/{split}.parquet"
CURATED_SPLIT_JSONL = "dataset/{split}.jsonl"
AUDIT = "dataset/audit.parquet"
FUNNEL = "dataset/funnel.json"
#: caprl eval: OUTPUT/captions/<task>/ (annotate runs), OUTPUT/answers/<task>/ and the judge's OUTPUT/judgments/<task>/
#: shards, results and samples
EVAL_CAPTIONS_DIR = "captions/{task}"
EVAL_ANSWERS_DIR = "answers/{task}"
EVAL_JUDGMENTS_DIR = "judgments/{task}"
EVAL_RESULTS = "results_{ts}.json"
EVAL_RESULTS_LATEST = "results_latest.json"
EVAL_SAMPLES = "samples_{task}_{ts}.jsonl"
#: caprl eval export-official: the official Eval_CapRL.py stage-2 input, one per image benchmark, + what was written
OFFICIAL_STAGE2 = "intermediate_generations_{tag}_step{step}.jsonl"
OFFICIAL_EXPORT_DIR = "official"  # default folder inside the eval run
OFFICIAL_EXPORT_MANIFEST = "official_export.json"
#: caprl annotate publish: a Hub-ready dataset folder (the parquet builder's layout + a dataset card)
PUBLISH_DATA = "data/train-{index:05d}-of-{count:05d}.parquet"
PUBLISH_DATA_GLOB = "data/train-*"
DATASET_CARD = "README.md"
#: caprl annotate with select: OUTPUT/candidates/ (every sampled caption), then the chosen rows in OUTPUT
ANNOTATE_CANDIDATES_DIR = "candidates"
#: caprl train pairs: OUTPUT/samples/ (an annotate run), OUTPUT/scored/ shards, then the pairs
PAIRS_SAMPLES_DIR = "samples"
PAIRS_SCORED_DIR = "scored"
PAIRS = "pairs.parquet"
PAIRS_JSONL = "pairs.jsonl"
PAIRS_SUMMARY = "pairs_summary.json"
#: caprl data export: what an export wrote (a re-export removes exactly those files), and the media it wrote
EXPORT_REPORT = "export.json"
EXPORT_MEDIA_DIR = "media"


def pattern(*parts: str) -> str:
    """A path pattern for the docs: ``pattern(EVAL_ANSWERS_DIR, SHARD)`` -> ``answers/{task}/{shard:05d}.parquet``."""
    return "/".join(parts)
