#!/usr/bin/env bash
# Runs one peer comparison: gguf_peer_export.py (in the peer venv) piped into dms_peer_quant.
#   run_peer_check.sh model|synthetic CHECKER EXPORTER
# Exits 77 (ctest: skipped) with the reason when the peer venv, its gguf package or the model is
# missing; nothing is downloaded here (scripts/peers and scripts/fetch-model do that).
# Environment: DMS_PEERS_VENV (default ~/.cache/dms/peers-venv), DMS_PEER_MODEL (default: the
# SmolLM2-135M-Instruct Q4_1 file scripts/fetch-model leaves in ${DMS_CACHE:-~/.cache/dms}).
set -euo pipefail
mode=$1 checker=$2 exporter=$3
venv=${DMS_PEERS_VENV:-$HOME/.cache/dms/peers-venv}
python=$venv/bin/python
if [ ! -x "$python" ]; then
  echo "SKIPPED: no peer venv at $venv (create it with scripts/peers)"
  exit 77
fi
if ! "$python" -c 'import gguf, numpy' 2>/dev/null; then
  echo "SKIPPED: the peer venv $venv cannot import gguf and numpy (recreate it with scripts/peers)"
  exit 77
fi
echo "peer: $("$python" -c 'import importlib.metadata as m; print("gguf", m.version("gguf"), "numpy", m.version("numpy"))')"
case $mode in
model)
  model=${DMS_PEER_MODEL:-${DMS_CACHE:-$HOME/.cache/dms}/SmolLM2-135M-Instruct.Q4_1.gguf}
  if [ ! -f "$model" ]; then
    echo "SKIPPED: no model at $model (fetch it with scripts/fetch-model, or set DMS_PEER_MODEL)"
    exit 77
  fi
  echo "model: $model"
  "$python" "$exporter" model "$model" | "$checker" -
  ;;
synthetic)
  "$python" "$exporter" synthetic | "$checker" -
  ;;
*)
  echo "usage: $0 model|synthetic CHECKER EXPORTER" >&2
  exit 2
  ;;
esac
