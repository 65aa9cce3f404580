#!/usr/bin/env bash
# One device call: resnet50 over gRPC through `kiln serve`, the engine host (--shared-engines) against
# per-worker engines, same engine and buckets (issue 9 acceptance 2). Writes JSON under $OUT.
# PROFILE_AT=N: py-spy --gil on every server process at the shared run's sweep point N (py-spy from the device wheels).
# FUSE_CONV=1: both engines built with --fuse-conv (files serving_*_fused.json).
# Each client process opens one gRPC channel per concurrency slot (kiln bench serve's default since 2026-12-07).
set -u
cd "$(dirname "$0")"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
BUCKETS=${BUCKETS:-1,16,32,64,128,256}
CACHE=${CACHE:-/tmp/kiln-serving-cache}
timeout "${SHARED_TIMEOUT:-330}" python3 gpu_serving.py --model resnet50 --workers "${WORKERS:-4}" --shared-engines \
  --buckets "$BUCKETS" --sweep "${SWEEP:-1,2,4,8}" --clients 6 --rows 8 --duration "${DURATION:-6}" --cache "$CACHE" \
  ${SKIP_SINGLE:+--skip-single} ${PROFILE_AT:+--profile-at $PROFILE_AT} ${FUSE_CONV:+--fuse-conv} \
  --out "$OUT/serving_shared${FUSE_CONV:+_fused}.json" 2>&1 | grep -v Warning
if [ "${BASELINE:-1}" = 1 ]; then
  timeout "${BASELINE_TIMEOUT:-200}" python3 gpu_serving.py --model resnet50 --workers "${WORKERS:-4}" \
    --buckets "$BUCKETS" --sweep "${BASELINE_SWEEP:-${SWEEP:-1,2,4,8}}" --clients 6 --rows 8 --duration "${DURATION:-6}" --cache "$CACHE" --skip-single \
    ${FUSE_CONV:+--fuse-conv} --out "$OUT/serving_per_worker${FUSE_CONV:+_fused}.json" 2>&1 | grep -v Warning
fi
