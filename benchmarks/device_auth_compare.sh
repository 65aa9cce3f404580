#!/usr/bin/env bash
# One device call: the 6-photo authentication case over HTTP (issue 9 acceptance 3 and 5) for this tree and for a
# copy of older code (BASE, default tmp/baseline, made with `git archive COMMIT src benchmarks | tar -x -C tmp/baseline`
# and carried), back to back in the order of VARIANTS, photo files on; before them, the photo-file layouts on this
# disk (photo_writes.py) and the GPU decode stage's steps (gpu_decode_profile.py).
# Env: VARIANTS ("new base new12": new = this tree with 8 server processes, base = BASE with 8, new12 = this tree
# with 12, staged = this tree with 8 and KILN_STAGE_PHOTOS=1), SWEEP (170,230), AUTH_TIMEOUT (190 s per variant), EXTRA (more gpu_authenticity.py args; a check here:
# EXTRA="--device cpu --smoke" PROFILE_ARGS="--device cpu --iterations 5"). Writes JSON and Markdown under $OUT.
set -u
cd "$(dirname "$0")/.."
here=$PWD
base=$(cd "${BASE:-tmp/baseline}" && pwd) || { echo "no baseline copy at ${BASE:-tmp/baseline} (carry it)" >&2; exit 2; }
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
python3 benchmarks/photo_writes.py --seconds 8 --out "$OUT/photo_writes.md" >/dev/null 2>&1; tail -5 "$OUT/photo_writes.md"
python3 benchmarks/gpu_decode_profile.py ${PROFILE_ARGS:-} --out "$OUT/decode_profile.json" 2>&1 | grep -v Warning | tail -10
for variant in ${VARIANTS:-new base new12}; do
  case "$variant" in
    base) dir=$base; workers=8; stage=0 ;;
    new12) dir=$here; workers=12; stage=0 ;;
    staged) dir=$here; workers=8; stage=1 ;;
    *) dir=$here; workers=8; stage=0 ;;
  esac
  echo "== $variant: $dir, $workers server processes"
  (cd "$dir" && PYTHONPATH="${SITE:-/tmp/site}:$dir/src:$dir" KILN_PHOTO_FILES=1 KILN_STAGE_PHOTOS=$stage timeout "${AUTH_TIMEOUT:-190}" \
    python3 benchmarks/gpu_authenticity.py --workers "$workers" --compile reduce-overhead --rate 100 --seconds 15 \
    --sweep "${SWEEP:-170,230}" --sweep-seconds 8 --heatmap-cases 0 ${EXTRA:-} --out "$OUT/auth_$variant.json" 2>&1 \
    | grep -v Warning | tail -24)
done
