#!/usr/bin/env bash
# One device call: the 6-photo authentication case over HTTP at 100 cases/s and a rate sweep
# (issue 9 acceptance 3 and 5), photos stored as files beside the SQLite database, with and
# without the engine host. Writes JSON under $OUT.
set -u
cd "$(dirname "$0")"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
for shared in ${VARIANTS:-shared per_worker}; do
  flag=""; [ "$shared" = shared ] && flag="--shared-engines"
  KILN_PHOTO_FILES=1 timeout "${AUTH_TIMEOUT:-240}" python3 gpu_authenticity.py --workers 8 $flag --compile reduce-overhead \
    --rate 100 --seconds 10 --sweep "${SWEEP:-100,135,170}" --sweep-seconds 8 --heatmap-cases 0 \
    --out "$OUT/auth_photofiles_$shared.json" 2>&1 | grep -v Warning | tail -32
done
