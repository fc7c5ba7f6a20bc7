"""What a worker asks of the cluster: GPUs from the stage's engines, the override, and how multiprocess deals out
CUDA_VISIBLE_DEVICES."""

from __future__ import annotations

import pytest

from caprl_kit.backends.config import BackendConfig
from caprl_kit.errors import ConfigError
from caprl_kit.io.stats import StatsBuilder
from caprl_kit.runners.config import RunnerConfig
from caprl_kit.runners.multiprocess import gpu_groups
from caprl_kit.runners.placement import worker_resources


def be(name: str, **kw) -> BackendConfig:
    return BackendConfig.model_validate({"name": name, "model": "m", **kw})


@pytest.mark.parametrize("engines, runner, cpus, gpus, explicit", [
    ([be("vllm", vllm={"tensor_parallel_size": 8})], {}, 1, 8, False),
    ([be("transformers")], {}, 1, 1, False),  # device auto: one GPU where there is one
    ([be("transformers", device="cuda:1")], {}, 1, 1, True),
    ([be("transformers", device="cpu")], {}, 1, 0, False),
    ([be("openai"), be("lexical")], {}, 1, 0, False),
    ([], {}, 1, 0, False),  # parse stage: no engine
    ([be("lexical")], {"resources": {"num_gpus": 0.5, "num_cpus": 4}}, 4, 0.5, True),
    ([be("vllm", vllm={"tensor_parallel_size": 2})], {"resources": {"num_gpus": 0}}, 1, 0, False),
])
def test_gpus_per_worker(engines, runner, cpus, gpus, explicit) -> None:
    res = worker_resources(engines, RunnerConfig.model_validate(runner))
    assert (res.num_cpus, res.num_gpus, res.needs_gpu) == (cpus, gpus, explicit)
    assert res.tensor_parallel == (gpus > 1)


def test_a_derived_need_is_dropped_where_there_is_no_gpu_an_explicit_one_is_kept() -> None:
    auto = worker_resources([be("transformers")], RunnerConfig())
    assert auto.on(0).num_gpus == 0 and auto.on(4).num_gpus == 1
    explicit = worker_resources([be("transformers", device="cuda")], RunnerConfig())
    assert explicit.on(0).num_gpus == 1  # Ray then reports it unschedulable instead of running on the CPU
    tp = worker_resources([be("vllm", vllm={"tensor_parallel_size": 4})], RunnerConfig())
    assert tp.bundle == {"CPU": 1.0, "GPU": 4.0}


def test_multiprocess_deals_out_groups_of_gpus() -> None:
    assert gpu_groups(["0", "1", "2", "3"], 1, 4) == ["0", "1", "2", "3"]
    assert gpu_groups(["0", "1", "2", "3"], 2, 2) == ["0,1", "2,3"]
    assert gpu_groups(["4", "5"], 0.5, 4) == ["4", "4", "5", "5"]  # two workers per GPU
    assert gpu_groups([], 1, 2) is None and gpu_groups(["0"], 0, 2) is None
    with pytest.raises(ConfigError, match=r"runner.num_workers.*3 workers x 2 GPU\(s\) each need 6 GPUs; "
                                          r"CUDA_VISIBLE_DEVICES shows 4"):
        gpu_groups(["0", "1", "2", "3"], 2, 3)


def test_every_shard_records_where_it_ran(monkeypatch: pytest.MonkeyPatch) -> None:
    import os
    import socket

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    stats = StatsBuilder(7, "annotation/v1").build()
    assert stats.worker is not None
    w = stats.worker
    assert (w.host, w.pid, w.gpu_ids) == (socket.gethostname(), os.getpid(), ["2", "3"])
