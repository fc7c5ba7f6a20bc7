"""Prompts/s of the ``transformers`` back end vs the ``vllm`` back end (CPU build) on the same prompts, one run.

Run it in the vLLM environment (it has both engines):

    .venv-vllm/bin/python benchmarks/engines.py                # builds the tiny text model in a temp dir
    .venv-vllm/bin/python benchmarks/engines.py --model DIR --prompts 256 --max-tokens 32

Prints throughput per engine, the ratio, warm-up (load) time and peak memory (this process's RSS; vLLM's
engine core and worker run in child processes, reported separately).
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time


def peak_rss_mb(who: int) -> float:
    return resource.getrusage(who).ru_maxrss / 1024


def bench(backend, requests, repeats: int) -> dict[str, float]:
    backend.generate(requests[:4])  # warm-up
    best = float("inf")
    tokens = 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = backend.generate(requests)
        best = min(best, time.perf_counter() - t0)
        tokens = sum(sum(r.completion_tokens) for r in out)
        assert all(r.ok for r in out), [r.error for r in out if not r.ok][:3]
    return {"seconds": best, "prompts_per_s": len(requests) / best, "tokens_per_s": tokens / best}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="text model dir (default: build the tiny answerer)")
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=64, help="transformers batch size")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    from caprl_kit.backends import build_backend
    from caprl_kit.backends.base import Request, SamplingParams
    from caprl_kit.backends.config import BackendConfig

    model = args.model
    if model is None:
        from caprl_kit.models.tiny import build_answerer

        model = str(build_answerer(tempfile.mkdtemp(prefix="caprl-bench-") + "/answerer"))
    # same prompts for both; fixed length outputs (no early stop) make the comparison fair
    s = SamplingParams(temperature=1.0, seed=0, max_tokens=args.max_tokens)
    requests = [Request.user(f"Caption: a red circle number {i}. Question: what color is it?", sampling=s)
                for i in range(args.prompts)]
    results = {}
    t0 = time.perf_counter()
    hf = build_backend(BackendConfig(name="transformers", model=model, dtype="float32", batch_size=args.batch_size))
    load_hf = time.perf_counter() - t0
    results["transformers"] = {**bench(hf, requests, args.repeats), "load_s": load_hf}
    results["transformers"]["peak_rss_mb_self"] = peak_rss_mb(resource.RUSAGE_SELF)
    hf.close()
    t0 = time.perf_counter()
    vl = build_backend(BackendConfig(name="vllm", model=model, dtype="float32",
                                     vllm={"gpu_memory_utilization": 0.2, "enforce_eager": True,
                                           "max_model_len": 2048}))
    load_vllm = time.perf_counter() - t0
    results["vllm"] = {**bench(vl, requests, args.repeats), "load_s": load_vllm}
    vl.close()
    results["vllm"]["peak_rss_mb_self"] = peak_rss_mb(resource.RUSAGE_SELF)
    results["vllm"]["peak_rss_mb_children"] = peak_rss_mb(resource.RUSAGE_CHILDREN)
    ratio = results["vllm"]["prompts_per_s"] / results["transformers"]["prompts_per_s"]
    print(f"model: {model}  prompts: {args.prompts}  max_tokens: {args.max_tokens}  (best of {args.repeats})")
    print(f"{'engine':<14}{'prompts/s':>12}{'tokens/s':>12}{'load s':>9}{'peak RSS MB':>13}")
    for name, r in results.items():
        print(f"{name:<14}{r['prompts_per_s']:>12.1f}{r['tokens_per_s']:>12.0f}{r['load_s']:>9.1f}"
              f"{r['peak_rss_mb_self']:>13.0f}")
    print(f"vllm child processes peak RSS: {results['vllm']['peak_rss_mb_children']:.0f} MB")
    print(f"ratio vllm / transformers (prompts/s): {ratio:.2f}x")
    print(json.dumps({"ratio": ratio, **results}))


if __name__ == "__main__":
    main()
