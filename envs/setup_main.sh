#!/usr/bin/env bash
# Build the main environment (default .venv): caprl-kit editable with the test, video, serve, train and ray extras.
# Idempotent: a stamp of the inputs skips the work when nothing changed.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
venv=${1:-$root/.venv}
py=${PYTHON:-python3}
stamp="$venv/.caprl-stamp"
want=$(cat "$here/main-constraints.txt" "$here/setup_main.sh" "$root/pyproject.toml" | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
echo ">> building the main environment in $venv (about 3-6 minutes on a fresh machine)"
# the environment takes about 7 GB (a CUDA build of torch runs on the CPU); no pip cache is kept beside it
mkdir -p "$(dirname "$venv")"
free_gb=$(df -Pk "$(dirname "$venv")" | awk 'NR==2 {print int($4 / 1048576)}')
if [ "$free_gb" -lt 7 ]; then
  echo ">> warning: $free_gb GB free on the disk of $venv; this environment needs about 7 GB" >&2
fi
[ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
pip=("$venv/bin/python" -m pip --disable-pip-version-check --no-cache-dir -q)
quiet() { grep -v "^WARNING: Location 'file:" || true; }
"${pip[@]}" install -c "$here/main-constraints.txt" torch torchvision 2>&1 | quiet
"${pip[@]}" install -c "$here/main-constraints.txt" -e "$root[test,video,serve,train,ray]" 2>&1 | quiet
"$venv/bin/python" -c "import torch, torchvision, transformers, caprl_kit; print('torch', torch.__version__, 'transformers', transformers.__version__)"
echo "$want" > "$stamp"
