#!/usr/bin/env bash
# One device call: resnet50 over gRPC through `kiln serve`, the engine host (--shared-engines) against
# per-worker engines, same engine and buckets (issue 9 acceptance 2). Writes JSON under $OUT.
# PROFILE_AT=N: py-spy --gil on every server process at the shared run's sweep point N (py-spy from the device wheels).
# FUSE_CONV=1: both engines built with --fuse-conv (files serving_*_fused.json).
# BALANCE=round_robin: the per-worker runs with --grpc-worker-ports (each client deals its calls over every worker's own
# gRPC port with round_robin, instead of the workers sharing one port and the kernel dealing connections; files
# serving_per_worker*_round_robin.json). Default: BALANCE=reuseport. BALANCE="reuseport round_robin": both, one after
# the other for each engine (the second reuses the first's engine cache), in the same call.
# INSTANCES=N: engine instances per model (gpu_serving.py --instances; default 2).
# SHARED=0: no engine-host run.  PER_WORKER_FUSE="0 1": the per-worker run once per value, unfused then fused, same call.
# A per-worker run that builds its engine needs ~200 s or more (H100: build 68 s unfused, then four processes compile;
# BASELINE_TIMEOUT=145 was too short for the unfused one on 2026-12-07). A device call has at most 600 s: choose the
# runs and timeouts to fit. A run that times out says so (exit 124).
# Each client process opens one gRPC channel per concurrency slot (kiln bench serve's default since 2026-12-07).
set -u -o pipefail
fc=""
[ "${FUSE_CONV:-0}" = 1 ] && fc="--fuse-conv"
PER_WORKER_FUSE=${PER_WORKER_FUSE:-$([ -n "$fc" ] && echo 1 || echo 0)}
for fuse in $PER_WORKER_FUSE; do
  case "$fuse" in 0|1) ;; *) echo "PER_WORKER_FUSE takes 0 and 1 separated by spaces, got '$fuse'" >&2; exit 2;; esac
done
for balance in ${BALANCE:=reuseport}; do
  case "$balance" in reuseport|round_robin) ;; *) echo "BALANCE takes reuseport and round_robin, got '$balance'" >&2; exit 2;; esac
done
report() { local rc=$?; [ "$rc" = 0 ] || echo "!! $1 ended with exit status $rc (124: timed out)"; }
cd "$(dirname "$0")"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
BUCKETS=${BUCKETS:-1,16,32,64,128,256}
CACHE=${CACHE:-/tmp/kiln-serving-cache}
if [ "${SHARED:-1}" = 1 ]; then
timeout "${SHARED_TIMEOUT:-330}" python3 gpu_serving.py --model resnet50 --workers "${WORKERS:-4}" --shared-engines \
  --buckets "$BUCKETS" --instances "${INSTANCES:-2}" --sweep "${SWEEP:-1,2,4,8}" --clients 6 --rows 8 --duration "${DURATION:-6}" --cache "$CACHE" \
  ${SKIP_SINGLE:+--skip-single} ${PROFILE_AT:+--profile-at $PROFILE_AT} $fc \
  --out "$OUT/serving_shared${fc:+_fused}.json" 2>&1 | grep -v Warning
report "the shared-engine run"
fi
if [ "${BASELINE:-1}" = 1 ]; then
  for fuse in $PER_WORKER_FUSE; do
    flag=""; [ "$fuse" = 1 ] && flag="--fuse-conv"
    for balance in $BALANCE; do
      rr=""; [ "$balance" = round_robin ] && rr="--grpc-worker-ports"
      echo "== per-worker engines ${flag:-unfused}, balance $balance"
      timeout "${BASELINE_TIMEOUT:-240}" python3 gpu_serving.py --model resnet50 --workers "${WORKERS:-4}" \
        --buckets "$BUCKETS" --instances "${INSTANCES:-2}" --sweep "${BASELINE_SWEEP:-${SWEEP:-1,2,4,8}}" --clients 6 --rows 8 --duration "${DURATION:-6}" \
        --cache "$CACHE" --skip-single $flag $rr --out "$OUT/serving_per_worker${flag:+_fused}${rr:+_round_robin}.json" 2>&1 | grep -v Warning
      report "the per-worker run ${flag:-unfused} $balance"
    done
  done
fi
