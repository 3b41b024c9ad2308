#!/usr/bin/env bash
# The second GPU step: where a large batch's time goes, and small batches' latency with CUDA graphs.
#   OUT=results/gpu bash benchmarks/gpu2.sh
set -u
OUT=${OUT:-results/gpu}
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
for p in fp16 fp32; do
  timeout 90 $PY benchmarks/gpu_breakdown.py --batch 256 --precision $p --json "$OUT/breakdown_${p}_b256.json" 2>&1 | tail -3
done
timeout 200 $PY -m effstack bench resnet50 --engine torch_cuda --precision fp16 --batch 4,8 --scenario single_stream \
    --knob mode=reduce-overhead --duration 1 --repeats 3 --no-peak --json "$OUT/gpu_bench_graphs_b4.json" 2>&1 | tail -5
