#!/usr/bin/env bash
# The lint/type gate that `bash dev.sh test` runs before pytest (and so CI, .ci/run): over caprl_kit/, with the
# main environment's tools (pinned in envs/main-constraints.txt) and the settings in pyproject.toml:
#   lint    ruff check caprl_kit
#   format  ruff format --check caprl_kit
#   types   mypy caprl_kit
# Every selected check runs and prints the tools' own messages; the gate fails when any of them failed.
# Switch: CAPRL_GATE is the comma-separated checks to run (default: lint,format,types); CAPRL_GATE=off runs none.
#   bash envs/gate.sh                          the whole gate
#   CAPRL_GATE=lint,types bash dev.sh test     no format check
#   CAPRL_GATE=off bash dev.sh test            pytest only
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
venv=${VENV:-$root/.venv}
checks=${CAPRL_GATE:-lint,format,types}
cd "$root"
if [ "$checks" = off ]; then
  echo ">> lint/type gate skipped (CAPRL_GATE=off)"
  exit 0
fi
IFS=, read -ra selected <<< "$checks"
for check in "${selected[@]}"; do
  case "$check" in
    lint | format | types) ;;
    *)
      echo "envs/gate.sh: unknown check '$check' in CAPRL_GATE=$checks (use lint, format, types, or off)" >&2
      exit 2
      ;;
  esac
done
failed=()
for check in "${selected[@]}"; do
  case "$check" in
    lint) cmd=("$venv/bin/ruff" check caprl_kit) ;;
    format) cmd=("$venv/bin/ruff" format --check caprl_kit) ;;
    types) cmd=("$venv/bin/mypy" caprl_kit) ;;
  esac
  echo ">> gate $check: ${cmd[*]#"$root/"}"
  "${cmd[@]}" || failed+=("$check")
done
if [ "${#failed[@]}" -gt 0 ]; then
  echo ">> lint/type gate failed: ${failed[*]} (messages above; CAPRL_GATE=off skips the gate)" >&2
  exit 1
fi
echo ">> lint/type gate passed ($checks)"
