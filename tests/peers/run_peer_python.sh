#!/usr/bin/env bash
# Runs a peer-comparison Python script in the peer venv: run_peer_python.sh SCRIPT ARGS...
# An argument @MODEL@ is replaced by the default model's path. Exits 77 (ctest: skipped) with the
# reason when the venv or the model is missing; nothing is downloaded here (scripts/peers and
# scripts/fetch-model do that). The script itself exits 77 when a package it needs is missing.
# Environment: DMS_PEERS_VENV (default ~/.cache/dms/peers-venv), DMS_PEER_MODEL (default: the
# SmolLM2-135M-Instruct Q4_1 file scripts/fetch-model leaves in ${DMS_CACHE:-~/.cache/dms}).
set -euo pipefail
script=$1; shift
venv=${DMS_PEERS_VENV:-$HOME/.cache/dms/peers-venv}
if [ ! -x "$venv/bin/python" ]; then
  echo "SKIPPED: no peer venv at $venv (create it with scripts/peers)"
  exit 77
fi
model=${DMS_PEER_MODEL:-${DMS_CACHE:-$HOME/.cache/dms}/SmolLM2-135M-Instruct.Q4_1.gguf}
args=()
for a in "$@"; do
  if [ "$a" = "@MODEL@" ]; then
    if [ ! -f "$model" ]; then
      echo "SKIPPED: no model at $model (fetch it with scripts/fetch-model, or set DMS_PEER_MODEL)"
      exit 77
    fi
    a=$model
  fi
  args+=("$a")
done
exec "$venv/bin/python" "$script" "${args[@]}"
