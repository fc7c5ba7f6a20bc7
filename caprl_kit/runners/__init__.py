"""Runners map a worker over shards: in-process, a process pool, or Ray actors. Same worker code for all.

A runner is ``runner(shards, factory, *, done, max_retries, num_workers, address, progress, stage, resources,
committed)`` returning ``(stats written now, shards skipped)``; ``factory(progress)`` builds the worker inside the
process that runs it; ``resources`` (``placement.WorkerResources``) is what each worker asks for (CPUs, GPUs, a
bundle); ``committed(shard_id)`` gives the stats of a shard already on disk (None if not), which a runner that redoes
a dead worker's shards asks first: the worker may have committed a shard it never got to report.
"""

from caprl_kit.registry import Registry

RUNNERS = Registry("runner")
RUNNERS.register("local", target="caprl_kit.runners.local:run_local")
RUNNERS.register("multiprocess", target="caprl_kit.runners.multiprocess:run_multiprocess")
RUNNERS.register("ray", target="caprl_kit.runners.ray:run_ray")
