"""caprl annotate on the vLLM engine (CPU build) vs the same engine given the whole pre-decoded queue, one run.

Run it in the vLLM environment (``bash envs/setup_vllm.sh`` builds it):

    .venv-vllm/bin/python benchmarks/annotate_vllm.py [--n 256] [--shard-size 64] [--max-num-seqs 64]
    .venv/bin/python benchmarks/annotate.py vllm ...      # the same, started from the main environment

Three ways through one engine (one ``VLLMBackend``: the tiny captioner, ``max_num_seqs`` 64, temperature 1 — and
stop strings so that caption lengths vary):

- raw:   ``LLM.generate`` on every pre-decoded request at once: vLLM's scheduler sees the whole queue (the ceiling);
- waves: ``backend.generate`` per batch of ``--batch-size`` pre-decoded requests, each waiting for its longest
         caption (how caprl annotate fed engines before the streaming engine);
- ours:  the annotate stage end to end inside the shards: folder listing, background decoding of the JPEGs,
         ``ShardStream`` over ``VLLMBackend.stream`` (add_request/step), Parquet shards + stats sidecars.

The engine is built once and warmed up before any timing, so model loading is not in any figure. Sampling is
temperature 1 with stop strings, so caption lengths vary; unseeded by default, so each way draws its own captions
from the same distribution: compare tokens/s as well as items/s. (``--seed N`` gives every request that seed, so
each way would generate the same captions, but the vLLM CPU build 0.32 dies on seeded requests whose prompt is
prefilled in chunks, as image prompts are: "CPU Generator does not use offset"; GPU builds are not affected.) A CPU profile per way says where the two cores went: this process (vLLM's front end: request
processing, the HF image processor; plus, in ours, listing, decoding and Parquet) with the share spent decoding
media, and vLLM's engine-core process (the model). On a CPU a decode step's cost grows with the batch, so waves lose less here than on a
GPU (where a step costs about the same for 1 or 64 sequences); ``benchmarks/gpu_timing_server.py`` measures that
regime for the ``openai`` path.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")


def write_photos(folder: Path, n: int, size: tuple[int, int]) -> list[Path]:
    """Noisy gradient JPEGs (real decode work, not flat colours); each file differs."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    w, h = size
    base = np.add.outer(np.linspace(0, 200, h), np.linspace(0, 55, w))[..., None].repeat(3, axis=2)
    out = []
    for i in range(n):
        arr = np.clip(base + rng.normal(0, 25, (h, w, 3)) + i % 7, 0, 255).astype("uint8")
        path = folder / f"photo_{i:05d}.jpg"
        Image.fromarray(arr).save(path, quality=90)
        out.append(path)
    return out


def percentiles(values: list[int]) -> dict[str, float]:
    q = statistics.quantiles(values, n=10)
    return {"p10": q[0], "p50": statistics.median(values), "p90": q[-1], "max": max(values)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=256, help="images")
    ap.add_argument("--size", type=int, nargs=2, default=[640, 480], help="image width height")
    ap.add_argument("--shard-size", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=64, help="requests per wave (the vllm back end refuses batch_size)")
    ap.add_argument("--max-num-seqs", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--stop", nargs="*", default=["s "], help="stop strings that make lengths vary (the default gives "
                    "p10/p50/p90/max about 8/46/160/256 tokens with the tiny captioner)")
    ap.add_argument("--window", type=int, default=None, help="batching.window (decode look-ahead); default: config's")
    ap.add_argument("--decode-workers", type=int, default=None, help="decode.workers; default: config's")
    ap.add_argument("--seed", type=int, default=-1, help="per-request sampling seed (-1: unseeded; see above)")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds; the fastest per token counts")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()

    from caprl_kit.annotate.config import AnnotateConfig
    from caprl_kit.annotate.worker import Annotator
    from caprl_kit.backends import build_backend
    from caprl_kit.backends.base import Request, SamplingParams
    from caprl_kit.io.media import load_image
    from caprl_kit.io.readers import iter_items
    from caprl_kit.io.rundir import RunDir
    from caprl_kit.io.shards import iter_shards
    from caprl_kit.models.tiny import build_tiny_models
    from caprl_kit.prompts import PROMPTS
    from caprl_kit.runners.local import run_local
    from caprl_kit.schemas.annotation import AnnotationRow

    root = Path(tempfile.mkdtemp(prefix="caprl-bench-vllm-"))
    model = str(build_tiny_models(root / "models")["captioner"])
    files = write_photos(root / "images", args.n, tuple(args.size))
    sampling = {"n": 1, "temperature": 1.0, "top_p": 1.0, "max_tokens": args.max_tokens, "stop": args.stop,
                "seed": None if args.seed < 0 else args.seed}
    cfg = AnnotateConfig.model_validate({
        "input": {"path": str(root / "images")},
        "backend": {"name": "vllm", "model": model, "sampling": sampling,  # waves: args.batch_size
                    "vllm": {"max_num_seqs": args.max_num_seqs, "enforce_eager": True, "max_model_len": 4096,
                             "gpu_memory_utilization": 0.3, "limit_mm_per_prompt": {"image": 1}}},
        "sharding": {"shard_size": args.shard_size}, "output_dir": str(root / "ours"),
        "batching": {"window": args.window} if args.window is not None else {},
        "decode": {"workers": args.decode_workers} if args.decode_workers is not None else {}})
    t0 = time.perf_counter()
    backend = build_backend(cfg.backend)
    load_s = time.perf_counter() - t0
    prompt = PROMPTS.get(cfg.prompt.image)
    s = SamplingParams.from_config(cfg.backend.sampling)
    media = cfg.media
    decoded = [load_image(f, min_pixels=media.min_pixels, max_pixels=media.max_pixels).pixels for f in files]
    requests = [Request.user(prompt, images=[im], sampling=s) for im in decoded]
    backend.generate(requests[: args.batch_size])  # warm-up: a full batch (first-use kernel setup is not timed)

    def tokens(responses) -> list[int]:
        return [sum(r.completion_tokens) for r in responses]

    results: dict[str, dict[str, float]] = {}

    import psutil

    import caprl_kit.annotate.worker as annotate_worker

    me = psutil.Process()
    decode_cpu = [0.0]
    load = annotate_worker.load_media

    def timed_load(*a, **kw):  # CPU seconds of this thread spent decoding media (annotate's decode threads)
        t = time.thread_time()
        try:
            return load(*a, **kw)
        finally:
            decode_cpu[0] += time.thread_time() - t

    annotate_worker.load_media = timed_load

    def cpu_now() -> tuple[float, float, float]:
        own = me.cpu_times()
        kids = 0.0
        for c in me.children(recursive=True):
            try:
                t = c.cpu_times()
                kids += t.user + t.system
            except psutil.NoSuchProcess:
                pass
        return own.user + own.system, kids, decode_cpu[0]

    def profiled(fn):
        def run(*a):
            before = cpu_now()
            secs, toks = fn(*a)
            after = cpu_now()
            own, engine, dec = (y - x for x, y in zip(before, after))
            return secs, toks, {"cpu_front_s": own, "cpu_decode_s": dec, "cpu_engine_core_s": engine}
        return run

    def record(name: str, secs: float, toks: list[int], cpu: dict[str, float]) -> None:
        results[name] = {"items_per_s": len(toks) / secs, "tokens_per_s": sum(toks) / secs, "seconds": secs,
                         **{f"len_{k}": v for k, v in percentiles(toks).items()}, **cpu,
                         "cores_busy": (cpu["cpu_front_s"] + cpu["cpu_engine_core_s"]) / secs}

    # raw: the engine sees the whole queue at once
    prompts = [backend._prompt(r) for r in requests]
    params = [backend._params(s) for _ in requests]

    def raw() -> tuple[float, list[int]]:
        t0 = time.perf_counter()
        outs = backend.llm.generate(prompts, params, use_tqdm=False)
        return time.perf_counter() - t0, [len(o.outputs[0].token_ids) for o in outs]

    # waves: batch by batch, each waiting for its longest caption
    def waves() -> tuple[float, list[int]]:
        t0 = time.perf_counter()
        got = []
        for i in range(0, len(requests), args.batch_size):
            got += backend.generate(requests[i : i + args.batch_size])
        return time.perf_counter() - t0, tokens(got)

    # ours: listing, decoding, streaming engine, shards + sidecars (the engine is already built)
    class Shared(Annotator):
        def close(self) -> None:  # the engine is measured again afterwards
            pass

    def ours(round_: int) -> tuple[float, list[int]]:
        c = cfg.model_copy(update={"output_dir": str(root / f"ours{round_}")})
        run_dir = RunDir(c.output_dir, AnnotationRow)
        run_dir.fs.makedirs(run_dir.path, exist_ok=True)
        t0 = time.perf_counter()
        run_local(iter_shards(iter_items(c.input), c.sharding.shard_size),
                  lambda progress: Shared(c, progress=progress, backend=backend), max_retries=0)
        secs = time.perf_counter() - t0
        table = run_dir.read_table()
        assert table.num_rows == args.n and set(table.column("status").to_pylist()) == {"ok"}, "every item captioned"
        return secs, [sum(x) for x in table.column("completion_tokens").to_pylist()]

    # rounds interleave the three ways (this VM's speed drifts); each way keeps its fastest round per token
    runs: dict[str, list[tuple[float, list[int], dict]]] = {"raw (whole queue)": [], f"waves of {args.batch_size}": [],
                                                             "caprl annotate (stream)": []}
    for r in range(args.rounds):
        runs["raw (whole queue)"].append(profiled(raw)())
        runs[f"waves of {args.batch_size}"].append(profiled(waves)())
        runs["caprl annotate (stream)"].append(profiled(ours)(r))
    for name, got in runs.items():
        record(name, *min(got, key=lambda x: x[0] / max(1, sum(x[1]))))
    backend.close()

    raw = results["raw (whole queue)"]
    print(f"vLLM CPU build, tiny captioner, {args.n} images {args.size[0]}x{args.size[1]}, max_num_seqs "
          f"{args.max_num_seqs}, temperature 1, seed {args.seed}, stop {args.stop}, max_tokens {args.max_tokens} (engine load "
          f"{load_s:.0f} s, not timed); shards of {args.shard_size}; best of {args.rounds} interleaved rounds")
    print(f"{'way':<28}{'items/s':>9}{'tokens/s':>10}{'x raw items':>12}{'x raw tok':>10}   lengths p10/p50/p90/max"
          f"   CPU s: front (decode) / engine core, cores busy")
    for name, r in results.items():
        print(f"{name:<28}{r['items_per_s']:>9.1f}{r['tokens_per_s']:>10.0f}{r['items_per_s'] / raw['items_per_s']:>12.2f}"
              f"{r['tokens_per_s'] / raw['tokens_per_s']:>10.2f}   {r['len_p10']:.0f}/{r['len_p50']:.0f}/"
              f"{r['len_p90']:.0f}/{r['len_max']:.0f}   {r['cpu_front_s']:.1f} ({r['cpu_decode_s']:.1f}) / "
              f"{r['cpu_engine_core_s']:.1f}, {r['cores_busy']:.2f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
