#!/usr/bin/env bash
# Rewrites constraints.txt with every version installed in .venv, after the suite has passed there
# (for instance after `LATEST=1 bash scripts/setup.sh` and `.venv/bin/python -m pytest`).
set -euo pipefail
cd "$(dirname "$0")/.."
{
  echo "# Every version the test suite last passed with (written by scripts/pin_constraints.sh, $(date -u +%Y-%m-%d),"
  echo "# Python $(.venv/bin/python -c 'import platform; print(platform.python_version())')). scripts/setup.sh installs through it; LATEST=1 keeps only the torch pin."
  echo "# Never add torchvision here: on CPU machines it breaks \`import transformers\`."
  # torch without its local tag (+cpu / +cu130), so the same line picks the build each machine needs.
  .venv/bin/python -m pip freeze --exclude-editable | grep -v -E '^(-e |mof-llava)' | sed -E 's/^(torch==[^+]+)\+.*/\1/' | sort -f
} > constraints.txt.new
mv constraints.txt.new constraints.txt
echo "constraints.txt: $(grep -vc '^#' constraints.txt) pins"
