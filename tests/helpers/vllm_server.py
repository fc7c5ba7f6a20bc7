"""Start ``vllm serve`` (the OpenAI-compatible server of the vLLM CPU environment) on 127.0.0.1 and stop it by PID."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx


REPO = Path(__file__).resolve().parents[2]


def vllm_python() -> Path:
    """The vLLM environment's interpreter: $CAPRL_VLLM_PYTHON, else .venv-vllm/bin/python in the repository."""
    return Path(os.environ.get("CAPRL_VLLM_PYTHON", REPO / ".venv-vllm" / "bin" / "python"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class VLLMServer:
    def __init__(self, python: Path, model: Path, log_path: Path, served_name: str = "tiny", timeout_s: float = 240):
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.timeout_s = timeout_s
        self.log_path = log_path
        self.cmd = [
            str(python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model),
            "--served-model-name", served_name, "--host", "127.0.0.1", "--port", str(self.port),
            "--dtype", "float32", "--gpu-memory-utilization", "0.2", "--enforce-eager", "--max-model-len", "2048",
            "--limit-mm-per-prompt", '{"image": 1, "video": 1}',
        ]
        self.proc: subprocess.Popen | None = None
        self.ready_s = 0.0

    def __enter__(self) -> "VLLMServer":
        env = {**os.environ, "VLLM_HOST_IP": "127.0.0.1", "HF_HUB_OFFLINE": "1"}
        self._log = open(self.log_path, "w")
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(self.cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)
        while time.perf_counter() - t0 < self.timeout_s:
            if self.proc.poll() is not None:
                raise RuntimeError(f"vllm serve exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=2).status_code == 200:
                    self.ready_s = time.perf_counter() - t0
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(1)
        self.__exit__()
        raise TimeoutError(f"vllm serve not ready in {self.timeout_s}s:\n{self.log_tail()}")

    def log_tail(self, n: int = 40) -> str:
        return "\n".join(Path(self.log_path).read_text(errors="replace").splitlines()[-n:])

    def __exit__(self, *exc) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()
