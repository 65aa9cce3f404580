#!/usr/bin/env bash
# One device call: the 6-photo authentication case over HTTP at 100 cases/s and a rate sweep
# (issue 9 acceptance 3 and 5), photos stored as files beside the SQLite database, with and
# without the engine host, for each server process count of WORKERS_LIST (8; the first is the
# baseline when it names several, all in the same call so that the comparison does not cross hosts).
# Writes auth_photofiles_VARIANT.json (8 processes) or auth_photofiles_VARIANT_wN.json under $OUT.
set -u
cd "$(dirname "$0")"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
for workers in ${WORKERS_LIST:-8}; do
  for shared in ${VARIANTS:-shared per_worker}; do
    flag=""; [ "$shared" = shared ] && flag="--shared-engines"
    name="auth_photofiles_$shared"; [ "$workers" = 8 ] || name="${name}_w$workers"
    echo "== $shared, $workers server processes"
    KILN_PHOTO_FILES=1 timeout "${AUTH_TIMEOUT:-240}" python3 gpu_authenticity.py --workers "$workers" $flag --compile reduce-overhead \
      --rate 100 --seconds 10 --sweep "${SWEEP:-100,135,170}" --sweep-seconds 8 --heatmap-cases 0 \
      --out "$OUT/$name.json" 2>&1 | grep -v Warning | tail -32
  done
done
