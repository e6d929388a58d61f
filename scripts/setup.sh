#!/usr/bin/env bash
# Creates .venv and installs mof-llava with everything the tests and the demo need.
# Every version is pinned through constraints.txt (the versions the suite last passed with; torch a
# CPU wheel on CPU machines, CUDA elsewhere).
# Usage: bash scripts/setup.sh [extras]     (default extras: dev,deepspeed,wandb,bpo,lmms-eval)
#        LATEST=1 bash scripts/setup.sh     newest versions pyproject.toml allows; only torch stays pinned
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="${1:-dev,deepspeed,wandb,bpo,lmms-eval}"
PYTHON="${PYTHON:-python3}"
CONSTRAINTS=constraints.txt
if [ "${LATEST:-0}" = 1 ]; then
  # Without the torch pin pip pulls the newest CUDA torch (several GB), so that one stays.
  CONSTRAINTS="$(mktemp)"
  grep -E '^torch==' constraints.txt > "$CONSTRAINTS"
fi
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
. .venv/bin/activate
python -m pip install --quiet --upgrade pip
# DeepSpeed builds its ops just in time; building them at install needs CUDA.
DS_BUILD_OPS=0 python -m pip install --quiet -c "$CONSTRAINTS" torch==2.13.0 -e ".[${EXTRAS}]"
if [[ ",${EXTRAS}," == *",lmms-eval,"* ]]; then
  # lmms-eval declares torchvision and timm, which break `import transformers` on CPU machines; the
  # [lmms-eval] extra holds what its evaluator and tasks need instead (pyproject.toml).
  python -m pip install --quiet --no-deps -c "$CONSTRAINTS" lmms-eval
fi
if python -c "import torchvision" 2>/dev/null && ! python -c "import torch; assert torch.cuda.is_available()" 2>/dev/null; then
  echo "error: torchvision is installed on a CPU machine; it breaks 'import transformers'. Run: pip uninstall -y torchvision" >&2
  exit 1
fi
echo "mof-llava installed in .venv ($(python -c 'import torch, transformers; print(f"torch {torch.__version__}, transformers {transformers.__version__}")'))"
