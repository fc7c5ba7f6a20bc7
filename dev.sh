#!/usr/bin/env bash
# caprl-kit's two commands on a fresh machine with only Python 3.11+:
#   bash dev.sh demo   build the environment, then run the offline demo (tiny models, no GPU, no downloads)
#   bash dev.sh test   build both environments (main + vLLM CPU), run the lint/type gate (envs/gate.sh), then the
#                      whole test suite (CAPRL_GATE=off skips the gate)
# Extra arguments go to the demo / to pytest. Environments are reused when their inputs did not change.
set -euo pipefail
root=$(cd "$(dirname "$0")" && pwd)
cmd=${1:-help}
shift || true
export PIP_DISABLE_PIP_VERSION_CHECK=1
case "$cmd" in
  demo)
    bash "$root/envs/setup_main.sh"
    exec "$root/.venv/bin/caprl" demo "$@"
    ;;
  test)
    bash "$root/envs/setup_main.sh"
    bash "$root/envs/gate.sh"  # ruff + mypy: fails here, before the slower steps, with the tools' messages
    bash "$root/envs/setup_vllm.sh"
    bash "$root/envs/setup_chromium.sh"
    cd "$root"
    exec "$root/.venv/bin/python" -m pytest "$@"
    ;;
  *)
    sed -n '2,6p' "$0"
    exit 2
    ;;
esac
