#!/usr/bin/env bash
# GPU discovery script for Spark (spark.executor.resource.gpu.discoveryScript and
# spark.worker.resource.gpu.discoveryScript). Prints the GPUs of this host as Spark expects:
#   {"name": "gpu", "addresses": ["0", "1", ...]}
# Honors CUDA_VISIBLE_DEVICES when it is set (containers, schedulers).
set -euo pipefail
if [ -n "${CUDA_VISIBLE_DEVICES:-}" ]; then
  IFS=',' read -ra ids <<< "$CUDA_VISIBLE_DEVICES"
else
  if ! command -v nvidia-smi >/dev/null 2>&1; then
    echo "getGpusResources.sh: nvidia-smi not found and CUDA_VISIBLE_DEVICES unset; no GPUs to report" >&2
    echo '{"name": "gpu", "addresses": []}'
    exit 0
  fi
  mapfile -t ids < <(nvidia-smi --query-gpu=index --format=csv,noheader | tr -d ' ')
fi
out=""
for id in "${ids[@]}"; do
  [ -n "$id" ] || continue
  out="${out:+$out, }\"$id\""
done
echo "{\"name\": \"gpu\", \"addresses\": [$out]}"
