#!/usr/bin/env bash
# The accelerator benchmark (benchmarks/gpu_bench.py): on one GPU in at most 8 minutes it prints the
# matmul peak, MFU of the 10M, 30M and 100M presets (bf16, a batch filling memory), cuDNN vs XLA
# attention at 2048 tokens, decode ms/step cached vs recomputed, and compile times.
#
#   benchmarks/gpu.sh            # one GPU (the first device)
#   benchmarks/gpu.sh --cpu      # small presets on the CPU, as CI runs it
#
# Extra arguments go to gpu_bench.py (--budget SECONDS, --presets ..., --iters N).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
python="${PYTHON:-$repo/.venv/bin/python}"
[ -x "$python" ] || python="python3"
cd "$repo"
budget=450  # seconds of work; with start-up and imports the run stays under 8 minutes
exec timeout 480 "$python" "$here/gpu_bench.py" --budget "$budget" "$@"
