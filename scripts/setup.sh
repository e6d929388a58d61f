#!/usr/bin/env bash
# Creates .venv and installs mof-llava with everything the tests and the demo need.
# torch is pinned through constraints.txt (a CPU wheel on CPU machines, CUDA elsewhere).
# Usage: bash scripts/setup.sh [extras]     (default extras: dev,deepspeed,wandb)
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="${1:-dev,deepspeed,wandb}"
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
. .venv/bin/activate
python -m pip install --quiet --upgrade pip
# DeepSpeed builds its ops just in time; building them at install needs CUDA.
DS_BUILD_OPS=0 python -m pip install --quiet -c constraints.txt torch==2.13.0 -e ".[${EXTRAS}]"
if python -c "import torchvision" 2>/dev/null && ! python -c "import torch; assert torch.cuda.is_available()" 2>/dev/null; then
  echo "error: torchvision is installed on a CPU machine; it breaks 'import transformers'. Run: pip uninstall -y torchvision" >&2
  exit 1
fi
echo "mof-llava installed in .venv ($(python -c 'import torch, transformers; print(f"torch {torch.__version__}, transformers {transformers.__version__}")'))"
