"""The openai back end against a GPU-timed loopback server: does the streaming engine keep a GPU engine full?

    .venv/bin/python benchmarks/stream.py [--n 4000] [--max-running 64] [--step-s 0.01] [--json out.json]
    (the defaults are the settings docs/dataflow.md quotes: 64 slots x 10 ms, max_concurrency 128, shards of 64)

    # photos, a GPU-class instrument (~142 items/s of capacity), the server resizing:
    .venv/bin/python benchmarks/stream.py --preset fast --image-size 1024 --image-resize server --n 6144 \
        --shard-size 256 --phases raw-stream annotate-stream
    (also: .venv/bin/python benchmarks/annotate.py openai-gpu [...])

    # the HTTP client's own cost, max_concurrency 64 and 512 (an instrument fast enough not to be the limit):
    .venv/bin/python benchmarks/stream.py --phases raw-stream --n 3000 --max-running 512 --step-s 0.002 \
        --median-tokens 20 --max-concurrency 64 512

The server is benchmarks/gpu_timing_server.py, a MEASURING INSTRUMENT in its own process that emulates a GPU
engine's decode timing (it runs no model): continuous batching over --max-running slots, one token per --step-s for
every running request however many run, seeded lognormal lengths per request content, real HTTP. On the same N
small JPEGs, with backend.openai.max_concurrency = max_running (or --max-concurrency), it measures:

- raw-stream: ``OpenAIBackend.stream`` over pre-decoded requests (the client's own ceiling);
- annotate-stream: ``caprl annotate`` (``annotate.pipeline.run``, shards of --shard-size) on the streaming engine,
  in this process (``--runner local``) or in ``--num-workers`` workers of ``--runner multiprocess`` / ``ray`` that
  are handed shard after shard (each keeps two in one open engine stream);
- curate-generate-stream: ``caprl curate``'s generate stage on the streaming engine (answer: lexical; the filler
  texts hold no questions, so only the generate stage reaches the server);
- batch-synchronous: today's figure before the streaming engine: ``backend.generate`` per batch of batch_size =
  max_running, each batch waiting for its slowest request.

Per phase, measured in this process: the client's CPU time per item (``time.process_time()`` over the phase, all of
this process's threads: the payloads' JSON, the HTTP client, its event loop, and in the annotate and curate phases
the pipeline's reading, decoding, resizing and image encoding too; raw-stream and batch-synchronous get their images
made into their wire form before the clock starts; the server runs in its own process and is not counted). Before
the timed phases, an untimed warm-up runs each selected phase on 16 photos (imports and first-use setup, paid once
per process in a real run). ``--max-concurrency`` takes several values: every phase runs once per value against
the same server. Photos: ``--image-size`` (1024: ~1 MP, 1632x1224: 2 MP camera-size JPEGs, quality 90) and
``--image-resize`` (``backend.openai.image_resize``: client or server); ``--preset fast`` is a GPU-class instrument
(~140 items/s of capacity); ``--busy N`` adds N processes that each keep a core busy (a competing load).

Per phase, from the server's /stats between its first arrival and last completion: the ratio to capacity
(completions per engine step / (max_running / mean length incl. prefill), that phase's lengths; per step, so the
instrument's own lag on a busy CPU is left out; wall-clock items/s are printed beside it), the measured slot
occupancy, the occupancy before the tail and the share of slot-steps lost in the tail (after the last admission,
fewer than max_running requests remain; a longer run amortises it), and the greedy ideal: the same lengths in the
same order with no gap between a completion and the next admission (its shortfall from 1.0 is the finite run's
unavoidable tail).
"""

from __future__ import annotations

import argparse
import heapq
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

PHASES = ("raw-stream", "annotate-stream", "curate-generate-stream", "batch-synchronous")


def write_jpegs(folder: Path, n: int, size: int | tuple[int, int] = 64) -> list[Path]:
    """n distinct JPEGs of size x size (or (width, height)): seeded noise when small (this mode measures scheduling,
    not decoding), a photo-like gradient with mild noise when large (quality 90: ~0.2 MB per MP, as camera JPEGs;
    --image-size shows what the per-request image work costs)."""
    import numpy as np
    from PIL import Image

    w, h = (size, size) if isinstance(size, int) else size
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    bases: list = []  # large photos: 32 drawn, the rest are those shifted sideways (distinct, and quick to make)
    for i in range(n):
        rng = np.random.default_rng(i)
        if max(w, h) <= 128:
            arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        elif len(bases) < 32:
            y, x = np.mgrid[0:h, 0:w] / max(w, h)
            a, b, c = rng.uniform(0.5, 3.0, 3)
            arr = np.stack([np.sin(a * x + i), np.cos(b * y), np.sin(c * (x + y))], -1) * 110 + 128
            arr = (arr + rng.normal(0, 6, arr.shape)).clip(0, 255).astype(np.uint8)
            bases.append(arr)
        else:
            arr = np.roll(bases[i % 32], 7 * (i // 32), axis=1)
        out.append(folder / f"img_{i:06d}.jpg")
        Image.fromarray(arr).save(out[-1], quality=90)
    return out


def image_size(text: str) -> tuple[int, int]:
    """``1024`` (square) or ``1632x1224``."""
    w, _, h = text.lower().partition("x")
    return int(w), int(h or w)


def _spin() -> None:
    while True:
        pass


def busy_processes(n: int) -> list:
    """``n`` processes that keep a core busy each (a competing load), started now; terminate them when done."""
    import multiprocessing as mp

    procs = [mp.get_context("spawn").Process(target=_spin, daemon=True) for _ in range(n)]
    for p in procs:
        p.start()
    return procs


def greedy_makespan_steps(lengths: list[int], slots: int) -> int:
    """Steps to run ``lengths`` in this order on ``slots``, each admitted the step a slot frees (the ideal client)."""
    free = [0] * slots
    end = 0
    for n in lengths:
        t = heapq.heappop(free) + n
        heapq.heappush(free, t)
        end = max(end, t)
    return end


def run(args: argparse.Namespace) -> dict:
    import httpx
    from gpu_timing_server import BANNER, EngineConfig, serve_process

    from caprl_kit.annotate.config import AnnotateConfig
    from caprl_kit.annotate.pipeline import run as annotate_run
    from caprl_kit.backends import build_backend
    from caprl_kit.backends.base import Request
    from caprl_kit.backends.config import BackendConfig
    from caprl_kit.curate.config import CurateConfig
    from caprl_kit.curate.pipeline import run as curate_run
    from caprl_kit.io.config import MediaConfig
    from caprl_kit.io.media import load_media
    from caprl_kit.prompts import PROMPTS

    root = Path(tempfile.mkdtemp(prefix="caprl-bench-stream-"))
    files = write_jpegs(root / "images", args.n, args.image_size)
    size = f"{args.image_size[0]}x{args.image_size[1]}"
    R = args.max_running
    ecfg = EngineConfig(max_running=R, step_s=args.step_s, prefill_steps=args.prefill_steps,
                        median_tokens=args.median_tokens, sigma=args.sigma, seed=args.seed)
    sweep = args.max_concurrency or [2 * R]
    results: dict = {"instrument": BANNER, "items": args.n, "max_running": R, "step_s": args.step_s,
                     "max_concurrency": sweep[0] if len(sweep) == 1 else sweep,
                     "prefill_steps": args.prefill_steps, "median_tokens": args.median_tokens, "sigma": args.sigma,
                     "shard_size": args.shard_size, "image_size": size, "image_resize": args.image_resize, "embed_media": args.embed_media, "runner": args.runner,
                     "num_workers": args.num_workers, "busy": args.busy, "phases": {}}
    with serve_process(ecfg) as url:
        base = url.rsplit("/v1", 1)[0]
        backend = {"name": "openai", "model": "gpu-timing",  # batch_sync: waves of R
                   "sampling": {"n": 1, "temperature": 0.0, "max_tokens": 2048},
                   "openai": {"base_url": url, "max_concurrency": sweep[0], "image_resize": args.image_resize}}

        runner = {"name": args.runner, "num_workers": args.num_workers}

        def requests(n: int | None = None) -> list[Request]:  # what annotate sends (same payloads, same prompt)
            text = PROMPTS.get("caprl_image")
            wire = build_backend(BackendConfig.model_validate(backend)).image_wire
            return [Request.user(text, images=[load_media(str(f), None, "image", MediaConfig(), wire)[0].payload],
                                 id=f.name) for f in files[:n]]

        def raw_stream(todo: list[Request]) -> None:
            out = list(build_backend(BackendConfig.model_validate(backend)).stream(todo))
            assert len(out) == len(todo) and all(r.ok for r in out), [r.error for r in out if not r.ok][:3]

        def batch_sync(todo: list[Request]) -> None:
            be = build_backend(BackendConfig.model_validate(backend))
            for i in range(0, len(todo), R):  # the per-batch barrier of the stages before the streaming engine
                out = be.generate(todo[i : i + R])
                assert all(r.ok for r in out), [r.error for r in out if not r.ok][:3]

        def out_dir(stage: str) -> str:  # one per max_concurrency of a sweep (a second run would resume the first)
            return str(root / f"{stage}-mc{backend['openai']['max_concurrency']}")

        def annotate(_: None, folder: str = "images") -> None:
            cfg = AnnotateConfig(input={"path": str(root / folder)}, backend=backend, runner=runner,
                                 sharding={"shard_size": args.shard_size}, output_dir=out_dir(f"annotate-{folder}"),
                                 output={"embed_media": args.embed_media})
            report = annotate_run(cfg)
            assert report.n_ok == report.n_items, report.status_counts

        def curate(_: None, folder: str = "images") -> None:
            cfg = CurateConfig.model_validate({
                "input": {"path": str(root / folder)}, "generate": {"backend": backend},
                "answer": {"backend": {"name": "lexical"}}, "sharding": {"shard_size": args.shard_size},
                "runner": runner,
                "output_dir": out_dir(f"curate-{folder}")})
            curate_run(cfg)

        # untimed warm-up on 16 of the photos: imports and first-use setup are paid once per process in a run of
        # millions, so they are kept out of the per-item figures
        (root / "warm").mkdir()
        for f in files[:16]:
            (root / "warm" / f.name).write_bytes(f.read_bytes())
        if "annotate-stream" in args.phases:
            annotate(None, "warm")
        if "curate-generate-stream" in args.phases:
            curate(None, "warm")
        if {"raw-stream", "batch-synchronous"} & set(args.phases):
            raw_stream(requests(16))

        phases = {"raw-stream": raw_stream, "annotate-stream": annotate, "curate-generate-stream": curate,
                  "batch-synchronous": batch_sync}
        prepare = {"raw-stream": requests, "batch-synchronous": lambda: requests(args.sync_items)}  # decoded untimed
        load = busy_processes(args.busy)
        for mc, name in [(mc, name) for mc in sweep for name in args.phases]:
            backend["openai"]["max_concurrency"] = mc
            key = name if len(sweep) == 1 else f"{name} mc={mc}"
            httpx.post(base + "/reset").raise_for_status()
            todo = prepare[name]() if name in prepare else None
            t0, cpu0 = time.perf_counter(), time.process_time()
            phases[name](todo)
            del todo
            wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
            st = httpx.get(base + "/stats", timeout=60).json()
            lengths = st.pop("lengths")
            ideal_steps = greedy_makespan_steps(lengths, R)
            results["phases"][key] = p = {
                "items": st["completed_sequences"], "max_concurrency": mc,
                "client_cpu_ms_per_item": 1000 * cpu / max(st["completed_sequences"], 1), "client_cpu_s": cpu,
                "wall_ratio": st["items_per_s"] / st["capacity_items_per_s"],
                "ratio_to_capacity": st["ratio_to_capacity"], "occupancy": st["occupancy"],
                "occupancy_before_tail": st["occupancy_before_tail"], "tail_lost_share": st["tail_lost_share"],
                "greedy_ideal_ratio": sum(lengths) / R / ideal_steps,  # same lengths, same order, no gaps
                "ratio_to_greedy_ideal": ideal_steps / st["steps"],
                "items_per_s": st["items_per_s"], "capacity_items_per_s": st["capacity_items_per_s"],
                "items_per_step": st["items_per_step"], "capacity_items_per_step": st["capacity_items_per_step"],
                "steps": st["steps"], "tail_steps": st["tail_steps"], "mean_len_steps": st["mean_len_observed"],
                "window_s": st["window_s"], "effective_step_s": st["effective_step_s"], "wall_s": wall,
                "engine_lag_s": st["engine_lag_s"], "occupancy_while_queued": st["occupancy_while_queued"],
                "refill_gap_ms": st.get("refill_gap_ms"),
            }
            print(f"  {key}: {p['ratio_to_capacity']:.3f}x capacity per step, {p['wall_ratio']:.3f}x wall, occupancy "
                  f"{p['occupancy']:.3f} (before tail {p['occupancy_before_tail']:.3f}), {p['items_per_s']:.1f} "
                  f"items/s, client CPU {p['client_cpu_ms_per_item']:.2f} ms/item, window {p['window_s']:.1f} s, "
                  f"wall {wall:.1f} s", file=sys.stderr, flush=True)
        for proc in load:
            proc.terminate()
    return results


def print_table(r: dict) -> None:
    print(r["instrument"])
    print(f"{r['items']} JPEGs of {r['image_size']} (resized by the {r['image_resize']}), max_running {r['max_running']}, "
          f"max_concurrency {r.get('max_concurrency', r['max_running'])}, step {r['step_s']} s, prefill {r['prefill_steps']} step, lengths lognormal(median "
          f"{r['median_tokens']}, sigma {r['sigma']}), shards of {r['shard_size']}")
    cols = [("items", "items", "d"), ("items/s", "items_per_s", ".1f"), ("cap/s", "capacity_items_per_s", ".1f"),
            ("ratio", "ratio_to_capacity", ".3f"), ("wall ratio", "wall_ratio", ".3f"),
            ("cpu ms", "client_cpu_ms_per_item", ".2f"), ("occupancy", "occupancy", ".3f"),
            ("occ<tail", "occupancy_before_tail", ".3f"), ("tail loss", "tail_lost_share", ".3f"),
            ("greedy", "greedy_ideal_ratio", ".3f"), ("vs greedy", "ratio_to_greedy_ideal", ".3f"),
            ("lag s", "engine_lag_s", ".2f"), ("window s", "window_s", ".1f")]
    width = max([24, *(len(name) + 1 for name in r["phases"])])
    print(f"{'phase':<{width}}" + "".join(f"{h:>11}" for h, _, _ in cols))
    for name, p in r["phases"].items():
        print(f"{name:<{width}}" + "".join(f"{p[k]:>11{f}}" for _, k, f in cols))
    for name, p in r["phases"].items():
        if p.get("refill_gap_ms"):
            g = p["refill_gap_ms"]
            print(f"  {name}: a freed slot waited {g['mean']:.0f} ms on average for the client's next request "
                  f"(p50 {g['p50']:.0f}, p90 {g['p90']:.0f}, max {g['max']:.0f} ms; {g['n']} refills; step "
                  f"{r['step_s'] * 1000:.0f} ms)")
    print("ratio: completions per engine step / capacity per step (max_running / mean length incl. prefill, that "
          "phase's lengths); wall ratio: items/s / cap/s (wall clock, the instrument's lag included); cpu ms: this "
          "process's CPU time over the phase per item (the client's cost; the server's process is not counted); "
          "occupancy: busy slot-steps / (max_running x steps), first arrival to last completion; "
          "occ<tail: before the last admission; tail loss: slot-steps lost after it; greedy: the ratio an ideal client "
          "reaches on those lengths (same order, no gap: its shortfall is the finite run's tail); vs greedy: ideal "
          "steps / measured steps; items/s and cap/s: wall clock at the nominal step (lag: the instrument's own delay)")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=4000, help="images")
    ap.add_argument("--sync-items", type=int, default=256,
                    help="items of the batch-synchronous phase (whole batches; each batch is measured alike)")
    ap.add_argument("--image-size", type=image_size, default=(64, 64),
                    help="image side in pixels, or WxH (64: scheduling only; 1024: 1 MP photos, 1632x1224: 2 MP "
                         "camera photos: the client's image work too)")
    ap.add_argument("--image-resize", default="client", choices=["client", "server"],
                    help="backend.openai.image_resize: the client decodes, resizes and encodes each photo, or sends "
                         "the file's own bytes for the server to resize")
    ap.add_argument("--preset", choices=["fast"], default=None,
                    help="fast: a GPU-class instrument (128 slots x 5 ms steps, median 150 tokens: ~140 items/s of "
                         "capacity; max_concurrency 256 keeps a queue at the server, as clients of vllm serve do); "
                         "its settings replace --max-running, --step-s, --median-tokens and --max-concurrency")
    ap.add_argument("--max-running", type=int, default=64, help="server slots (the engine's max_num_seqs)")
    ap.add_argument("--max-concurrency", type=int, nargs="+", default=None,
                    help="backend.openai.max_concurrency (default: 2 x --max-running); several values: a sweep, every "
                         "phase once per value. More than the server's slots keeps a queue at the server, as clients "
                         "of vllm serve do, so a freed slot is refilled without waiting for the client's round trip")
    ap.add_argument("--step-s", type=float, default=0.01, help="server seconds per decode step")
    ap.add_argument("--median-tokens", type=float, default=150.0, help="server lognormal median length")
    ap.add_argument("--sigma", type=float, default=0.6, help="server lognormal sigma")
    ap.add_argument("--prefill-steps", type=int, default=1, help="server steps per admission")
    ap.add_argument("--seed", type=int, default=0, help="server length seed")
    ap.add_argument("--shard-size", type=int, default=64)
    ap.add_argument("--embed-media", action="store_true",
                    help="annotate-stream: output.embed_media=true (each commit writes the photos' bytes: with large "
                         "photos a commit takes long enough to show whether the engine waits for it)")
    ap.add_argument("--runner", default="local", choices=["local", "multiprocess", "ray"],
                    help="runner of the annotate / curate phases (multiprocess, ray: workers get shard after shard)")
    ap.add_argument("--num-workers", type=int, default=1, help="runner.num_workers (multiprocess, ray)")
    ap.add_argument("--busy", type=int, default=0,
                    help="processes that each keep a core busy while the phases run (a competing CPU load)")
    ap.add_argument("--phases", nargs="+", default=list(PHASES), choices=list(PHASES))
    ap.add_argument("--json", help="also write the results to this file")
    args = ap.parse_args(argv)
    if args.preset == "fast":
        args.max_running, args.step_s, args.median_tokens, args.max_concurrency = 128, 0.005, 150.0, [256]
    r = run(args)
    print_table(r)
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=1))
    print(json.dumps(r))


if __name__ == "__main__":
    main()
