#!/usr/bin/env bash
# One device call: resnet50 FP16 with --fuse-conv against the unfused engine, back to back on the same GPU —
# offline throughput (issue 9 acceptance 1; issue 2 acceptance 2's img/s target) and, with ENGINE_GPU=1, eager FP32
# against the fused engine at batch 1..256 (issue 2 acceptance 2's speed-ups). Writes JSON under $OUT.
#   BATCH=512,1024 (offline batch sizes)   OFFLINE_TIMEOUT=150 (seconds per engine)   ENGINE_GPU=0|1
set -u -o pipefail
report() { local rc=$?; [ "$rc" = 0 ] || echo "!! $1 ended with exit status $rc (124: timed out)"; }
cd "$(dirname "$0")"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
for fuse in "" "--fuse-conv"; do
  echo "== offline resnet50 ${fuse:-unfused}"
  timeout "${OFFLINE_TIMEOUT:-150}" python3 gpu_offline.py --model resnet50 --compile reduce-overhead --freezing \
    --batch "${BATCH:-512,1024}" --instances 2 --seconds 6 $fuse --kernels 6 --out "$OUT/offline${fuse:+_fused}.json" 2>&1 \
    | grep -v -i warn | grep -v "^  *[a-z_]*(" | tail -24
  report "offline ${fuse:-unfused}"
done
if [ "${ENGINE_GPU:-0}" = 1 ]; then
  echo "== engine_gpu resnet50 --fuse-conv"
  timeout "${ENGINE_TIMEOUT:-200}" python3 engine_gpu.py --models resnet50 --batches 1,8,64,256 --compile reduce-overhead \
    --freezing --fuse-conv resnet50 --out "$OUT/engine_gpu_fused.json" 2>&1 | grep -v -i warn | tail -12
  report "engine_gpu"
fi
