#!/usr/bin/env bash
# The GPU checks, as one bounded script for a lent NVIDIA machine (the project's CI has no GPU).
#
#   OUT=results/gpu bash benchmarks/gpu.sh          # on a machine with a CUDA build of PyTorch
#
# 1. the GPU tests (torch_cuda in the conformance suite and its own tests; TensorRT's, which skip
#    cleanly when tensorrt is not installed),
# 2. ResNet-50 on torch_cuda, eager, fp32 (TF32 off) / fp16 / bf16 at batch 1, 32 and 256,
# 3. the same compiled: fp16 with CUDA graphs (torch.compile mode reduce-overhead) at batch 1, and
#    inductor's default at batch 256.
# Each step has its own time limit, so a slow step costs that step only. Uses the python3 on PATH and
# this checkout's src/ (no install: the GPU machine may have another torch than constraints.txt pins).
set -u
OUT=${OUT:-results/gpu}
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1 | tee "$OUT/gpu.txt"
$PY -c "import torch, numpy; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'numpy', numpy.__version__, \
'gpu', torch.cuda.is_available() and torch.cuda.get_device_name(0))" 2>&1 | tee -a "$OUT/gpu.txt"

timeout 120 $PY -m pytest -q -p no:cacheprovider -o addopts="" -rs \
    tests/engines/test_torch_cuda.py tests/engines/test_conformance.py tests/engines/test_tensorrt.py \
    -k "cuda or tensorrt" 2>&1 | tee "$OUT/gpu_tests.txt" | tail -25

timeout 180 $PY -m effstack bench resnet50 --engine torch_cuda --precision fp32,fp16,bf16 --batch 1,32,256 \
    --duration 1 --repeats 3 --no-peak --json "$OUT/gpu_bench_eager.json" 2>&1 | tail -14

timeout 110 $PY -m effstack bench resnet50 --engine torch_cuda --precision fp16 --batch 1 \
    --knob mode=reduce-overhead --duration 1 --repeats 3 --no-peak --json "$OUT/gpu_bench_graphs.json" 2>&1 | tail -4
timeout 110 $PY -m effstack bench resnet50 --engine torch_cuda --precision fp16 --batch 256 \
    --knob compile=true --duration 1 --repeats 3 --no-peak --json "$OUT/gpu_bench_compiled.json" 2>&1 | tail -4
