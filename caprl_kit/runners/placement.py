"""What each worker asks of the cluster (CPUs, GPUs, a placement-group bundle for tensor-parallel engines) and where
a worker; shared by the ``multiprocess`` and ``ray`` runners (where a shard ran: ``io.stats.worker_info``).

A worker builds the engines of its stage (``Stage.engines``). GPUs per worker = what those engines need: a ``vllm``
engine its ``tensor_parallel_size``, a ``transformers`` engine one unless its device is ``cpu``; ``openai`` and
``lexical`` none. ``runner.resources`` overrides either number (fractional GPUs pack small models several to a
GPU). Where no GPU exists (a CPU cluster, the vLLM CPU build) a derived need of an engine on ``device: auto`` is
dropped, so the same config runs on a laptop and on a GPU cluster; an explicit ``cuda`` device or an explicit
``runner.resources.num_gpus`` is kept, and Ray then reports the worker as unschedulable instead of running it on CPU.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pydantic import Field

from caprl_kit.config import ConfigModel


class ResourcesConfig(ConfigModel):
    num_cpus: float | None = Field(None, gt=0, description="CPUs per worker (Ray's scheduling); null: 1")
    num_gpus: float | None = Field(
        None,
        ge=0,
        description="GPUs per worker; null: what the stage's engines need "
        "(vllm: tensor_parallel_size; transformers: 1 unless on cpu); fractions pack "
        "small models several to a GPU",
    )
    start_timeout_s: float = Field(
        600.0,
        gt=0,
        description="runner: ray: how long to wait for every worker to be "
        "placed before failing with what the cluster lacks (never a silent hang)",
    )


@dataclass(frozen=True)
class WorkerResources:
    num_cpus: float
    num_gpus: float
    needs_gpu: bool  #: an engine asked for a GPU explicitly (device cuda / runner.resources.num_gpus)
    start_timeout_s: float = 600.0

    @property
    def bundle(self) -> dict[str, float]:
        """The worker's placement-group bundle (its GPUs on one node)."""
        return {"CPU": self.num_cpus, **({"GPU": self.num_gpus} if self.num_gpus else {})}

    @property
    def tensor_parallel(self) -> bool:
        """More than one GPU per worker: the engine's GPUs must sit together, in a bundle of their own."""
        return self.num_gpus > 1

    def on(self, gpus_available: float) -> WorkerResources:
        """This need on a cluster with ``gpus_available`` GPUs: a derived need is dropped where there is none."""
        if gpus_available or self.needs_gpu or not self.num_gpus:
            return self
        return WorkerResources(self.num_cpus, 0.0, False, self.start_timeout_s)


def engine_gpus(backend: Any) -> tuple[int, bool]:
    """(GPUs one engine needs, whether its config asks for a GPU explicitly)."""
    if backend.name == "vllm":
        return backend.vllm.tensor_parallel_size, False
    if backend.name == "transformers" and backend.device != "cpu":
        return 1, backend.device.startswith("cuda")
    return 0, False


def worker_resources(engines: Iterable[Any], runner: Any) -> WorkerResources:
    needs = [engine_gpus(b) for b in engines]
    res = runner.resources
    gpus = float(res.num_gpus) if res.num_gpus is not None else float(sum(n for n, _ in needs))
    explicit = (res.num_gpus is not None and res.num_gpus > 0) or any(e for _, e in needs)
    cpus = float(res.num_cpus) if res.num_cpus is not None else 1.0
    return WorkerResources(cpus, gpus, explicit, res.start_timeout_s)
