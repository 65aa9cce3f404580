#!/usr/bin/env bash
# One device call: does the number of server processes move a case's p95 at 100 cases/s (issue 9 acceptance 3)?
# Runs gpu_authenticity.py (photo files, per-worker engines, compiled) once per entry of WORKERS_LIST, in order, the
# first being the baseline; every run in the same call, so that the comparison does not cross hosts.
# Env: WORKERS_LIST ("8 12"), EACH_S (time limit per run, 140), SWEEP (170). Writes auth_workersN.json under $OUT.
set -u
cd "$(dirname "$0")"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
for w in ${WORKERS_LIST:-8 12}; do
  echo "== workers $w"
  KILN_PHOTO_FILES=1 timeout "${EACH_S:-140}" python3 gpu_authenticity.py --workers "$w" --compile reduce-overhead \
    --rate 100 --seconds 10 --sweep "${SWEEP:-170}" --sweep-seconds 8 --heatmap-cases 0 --out "$OUT/auth_workers$w.json" 2>&1 \
    | grep -v Warning | grep -E "server ready|cases/s:|sweep|target|max cases" | head -8
done
