#!/usr/bin/env bash
# The figures a new CPU kind needs, recorded under results/<cpu-kind>/ in one go (issue 21 on an Intel AMX CPU):
#
#   engine_overhead  ResNet-50 cells through effstack and directly, the INT8 ceiling from the fastest path (9 min)
#   photo_search     image search on the real embedder, INT8 builds against the fp32 neighbours (1-2 min)
#   demo             the demo ladder on EfficientNet-Lite0 (5-7 min)
#   ladder_lite2     EfficientNet-Lite2's ladder with a distilled student (12-14 min)
#
#   bash benchmarks/record_cpu.sh [NAME ...]     # default: all four, about 30 minutes; `make record-cpu`
#
# Run nothing else meanwhile (2 cores: every file records the CPU other processes took). Each recording is the
# command the README quotes for it, and at the end the README gets a block for each new file, right after the
# same file's block from another CPU kind (`python -m effstack.report.results --add-kind KIND`): review the
# lead-in line above each (`The same on KIND:`), say what the figures show, and commit.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
kind=$("$PY" -c "from effstack.hardware import cpu_kind; print(cpu_kind())")
names=("$@")
[ ${#names[@]} -gt 0 ] || names=(engine_overhead photo_search demo ladder_lite2)
known=" engine_overhead photo_search demo ladder_lite2 "
for name in "${names[@]}"; do  # every name checked before the first 10-minute recording starts
  if [[ $known != *" $name "* ]]; then
    echo "record_cpu.sh: no recording named '$name'; choose from$known" >&2
    exit 2
  fi
done
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

record() {
  local name=$1
  shift
  echo "== $name on $kind: $(date -u +%H:%M:%S) UTC"
  "$PY" benchmarks/record.py "$name" -- "$@"
}

for name in "${names[@]}"; do
  case $name in
    engine_overhead) record engine_overhead "$PY" benchmarks/engine_overhead.py --json '{json}' ;;
    photo_search) record photo_search "$PY" benchmarks/photo_search.py --json '{json}' ;;
    demo) record demo "$PY" -m effstack demo --quiet --out "$out/demo" --json '{json}' ;;
    ladder_lite2)
      record ladder_lite2 "$PY" -m effstack ladder efficientnet_lite2 \
        --data 'photos:all?n=24&labels=reference&min_confidence=0.3' --train-data 'photos:all?n=24&split=train' \
        --student efficientnet_lite0 --student-size 192 --latency-budget 100ms --max-drop 1.0 --distill-epochs 3 \
        --no-prune --max-batch 16 --time-budget 13m --quiet --json '{json}' ;;
  esac
done
echo "recorded under results/$kind/: ${names[*]}"
"$PY" -m effstack.report.results --readme README.md --root results --add-kind "$kind"
