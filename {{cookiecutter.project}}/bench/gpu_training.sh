#!/usr/bin/env bash
# Keras-on-JAX training throughput on a GPU machine, Coveo-sized catalogue (README: Benchmarks).
#
#   bench/gpu_training.sh                        # 4 runs: batch 2048 and 8192, float32 and bf16
#   SESSIONS=2000 BATCHES=256 EPOCHS=2 PYTHON=.venv/bin/python bench/gpu_training.sh   # CPU dry run
#
# It needs no package registry and no TensorFlow: JAX (with CUDA), Keras 3 and the few packages the
# training code imports (numpy, pandas, pydantic, pydantic-settings, python-dotenv) in PYTHON's
# environment; the project's code is read from src/. Each run prints its samples/s (first epoch,
# which compiles, left out).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
SESSIONS=${SESSIONS:-1000000}  # enough sessions that nearly all 57,483 SKUs are in the vocabulary
EPOCHS=${EPOCHS:-3}
BATCHES=${BATCHES:-2048 8192}
PRECISIONS=${PRECISIONS:-float32 mixed_bfloat16}
export KERAS_BACKEND=jax PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}"

"$PYTHON" - <<'PY'
import importlib.util, sys
missing = [m for m in ("jax", "keras", "numpy", "pandas", "pydantic_settings", "dotenv")
           if importlib.util.find_spec(m) is None]
if missing:
    sys.exit(f"missing in this Python: {', '.join(missing)} (install their wheels; dotenv is "
             "python-dotenv, pydantic_settings is pydantic-settings)")
import jax
print("JAX", jax.__version__, "devices:", jax.devices())
PY

for batch in $BATCHES; do
    for precision in $PRECISIONS; do
        echo "=== batch $batch, $precision"
        "$PYTHON" bench/bench_training.py --products 57483 --sessions "$SESSIONS" \
            --epochs "$EPOCHS" --batch-size "$batch" --precision "$precision"
    done
done
