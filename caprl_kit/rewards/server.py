"""``caprl serve-reward``: the CapRL reward as an HTTP service. The command: its config, plan and ``run`` (one
process, or uvicorn workers sharing the port). The app and its endpoints are ``rewards/server_app.py``; the scoring
of every request on one engine stream is ``rewards/server_scorer.py``."""

from __future__ import annotations

import os
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from caprl_kit.config import FieldIssue, JobConfig
from caprl_kit.log import get_logger
from caprl_kit.rewards.config import QARewardConfig, TimestampFormatConfig

log = get_logger(__name__)

#: answerers that several server processes can share: a client of one engine server, or no model at all
MULTI_WORKER_ANSWERERS = ("openai", "lexical")


class RewardServerConfig(JobConfig):
    pipeline_module: ClassVar[str] = "caprl_kit.rewards.server"

    kind: Literal["serve_reward"] = "serve_reward"
    host: str = Field("127.0.0.1", description="Bind address (loopback by default)")
    port: int = Field(18889, ge=0, le=65535, description="Port (CapRL++ scripts use 18889)")
    token_env: str | None = Field(None, description="Env var holding a bearer token; unset = no auth")
    max_body_bytes: int = Field(16 * 1024 * 1024, ge=1024, description="Larger requests get 413")
    qa: QARewardConfig = Field(default_factory=QARewardConfig, description="QA reward and its answerer engine")
    format_weight: float | None = Field(
        None, description="Weight of the timestamp-format term; default 0.2 for video, 0 for image (spec §2.4)"
    )
    timestamp_format: TimestampFormatConfig = Field(default_factory=TimestampFormatConfig)
    empty_qa: Literal["refuse", "zero"] = Field(
        "refuse",
        description="A caption whose ground-truth QA list is empty: refuse (the request gets a 422 naming it) or "
        "zero (scored 0 in every term, counted and logged, as the official server zeroes such rows; for the "
        "official batch client, which sends them)",
    )
    workers: int = Field(
        1,
        ge=1,
        description="Server processes sharing the port (uvicorn workers), each with its own answerer client; "
        "above 1 only for an answerer behind HTTP (openai) or the lexical one",
    )

    @model_validator(mode="after")
    def _scores_itself(self) -> RewardServerConfig:
        if self.qa.service is not None:
            raise FieldIssue(
                "qa.service",
                "a reward server scores with its own answerer (qa.answerer), not through another server",
                "remove qa.service",
            )
        if self.workers > 1 and self.qa.answerer.name not in MULTI_WORKER_ANSWERERS:
            raise FieldIssue(
                "workers",
                f"each worker would load its own {self.qa.answerer.name} engine with the model",
                "serve the answerer once (vllm serve) and point qa.answerer at it (name: openai), or set workers: 1",
            )
        return self


def plan(cfg: RewardServerConfig) -> list[str]:
    auth = f"bearer token from ${cfg.token_env}" if cfg.token_env else "no auth"
    workers = f", {cfg.workers} worker processes" if cfg.workers > 1 else ""
    return [
        f"serve the {cfg.qa.task} QA reward on http://{cfg.host}:{cfg.port} ({auth}{workers})",
        f"answerer: {cfg.qa.answerer.name}:{cfg.qa.answerer.model or ''} compat={cfg.qa.compat} "
        f"mode={cfg.qa.mode} qa_num={cfg.qa.qa_num}",
        "a caption with an empty QA list: "
        + ("refused (422)" if cfg.empty_qa == "refuse" else "scored 0 and counted (empty_qa: zero)"),
    ]


def run(cfg: RewardServerConfig, *, overwrite: bool = False, progress: Any = None) -> Any:
    """Serve until SIGINT/SIGTERM. ``workers > 1``: uvicorn's supervisor binds the port and starts that many worker
    processes (spawned, each building the app with ``worker_app``), restarts one that dies, and stops them all on
    the signal; the kernel hands each connection to one worker, so a request, with every question of its captions,
    is scored by one worker."""
    import uvicorn

    from caprl_kit.backends import build_backend
    from caprl_kit.progress import RunReport
    from caprl_kit.rewards.server_app import WORKER_CONFIG_ENV, bearer_token, create_app

    log.info("reward server on http://%s:%d", cfg.host, cfg.port)
    if cfg.workers == 1:
        uvicorn.run(create_app(cfg), host=cfg.host, port=cfg.port, log_level="warning")
        return RunReport(command="serve_reward", output_dir=None)
    bearer_token(cfg)  # what each worker would refuse, refused once here
    build_backend(cfg.qa.answerer).close()  # likewise the answerer's settings (an openai key variable set but empty)
    os.environ[WORKER_CONFIG_ENV] = cfg.model_dump_json()
    uvicorn.run(
        "caprl_kit.rewards.server_app:worker_app",
        factory=True,
        workers=cfg.workers,
        host=cfg.host,
        port=cfg.port,
        log_level="warning",
    )
    return RunReport(command="serve_reward", output_dir=None)
