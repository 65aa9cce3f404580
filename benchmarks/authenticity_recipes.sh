#!/usr/bin/env bash
# Train several authentication recipes side by side on one GPU machine and evaluate each one with
# benchmarks/authenticity_accuracy.py (held-out synthetic test sets with unseen seeds, INT8 engine,
# sample photographs). Test sets are shared; each recipe has its own working folder.
#
#   benchmarks/authenticity_recipes.sh OUT_DIR "NAME|CASES|ARGS..." ["NAME|CASES|ARGS..." ...]
#
# RECIPE_SIZE sets the synthetic photo size for all data sets (default 176).
# ARGS are passed to authenticity_accuracy.py (e.g. --epochs 40 --width 1.0). Each recipe is bounded
# by $RECIPE_TIMEOUT seconds (default 540); whatever it finished (checkpoint, train.json, results.json,
# evaluation summaries and per-case outcomes in eval.tar.gz) is copied to OUT_DIR/NAME, so a recipe cut off still
# returns its checkpoint.
set -uo pipefail
out=$1; shift
work=${RECIPE_WORK:-/tmp/kiln-recipes}
threads=${RECIPE_THREADS:-5}
mkdir -p "$out" "$work/data"
here=$(cd "$(dirname "$0")" && pwd)
python3 "$here/authenticity_accuracy.py" --work "$work/data" --cases 8 --size "${RECIPE_SIZE:-176}" --synth-only >"$out/synth.log" 2>&1 || { cat "$out/synth.log"; exit 1; }
pids=()
names=()
for spec in "$@"; do
  IFS='|' read -r name cases args <<<"$spec"
  dir="$work/$name"
  mkdir -p "$dir"
  # Test sets are made once (seeds 1001/1002) and linked into every recipe's folder.
  for test in test-mixed test-hard; do ln -sfn "$work/data/$test" "$dir/$test"; done
  # shellcheck disable=SC2086
  (timeout "${RECIPE_TIMEOUT:-540}" python3 "$here/authenticity_accuracy.py" --work "$dir" --cases "$cases" \
      --threads "$threads" --size "${RECIPE_SIZE:-176}" --no-doc $args >"$out/$name.log" 2>&1; echo "exit $?" >>"$out/$name.log") &
  pids+=($!)
  names+=("$name")
  sleep 1
done
for pid in "${pids[@]}"; do wait "$pid"; done
for name in "${names[@]}"; do
  dir="$work/$name"
  mkdir -p "$out/$name"
  cp -f "$dir"/auth.pt "$dir"/train.json "$dir"/results.json "$out/$name/" 2>/dev/null
  # metrics and the per-case outcomes (cases.csv: what case calibrators and coverage curves are studied on), as
  # one archive: the device tool does not bring deep folders back
  [ -d "$dir/eval" ] && tar -czf "$out/$name/eval.tar.gz" -C "$dir" --exclude='*.png' eval
  echo "== $name: $(tail -1 "$out/$name.log")"
  grep -E "^epoch|coverage" "$out/$name.log" | tail -6
done
