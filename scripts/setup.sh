#!/usr/bin/env bash
# Create .venv and install hpac with its test/bench extras (CPU PyTorch wheel pinned).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
# torch==2.13.0 first: the pin selects the CPU wheel; a looser spec would pull a CUDA build
.venv/bin/python -m pip install -q "torch==2.13.0" 2>&1 | grep -v -i "warning" || true
.venv/bin/python -m pip install -q -e ".[test]" 2>&1 | grep -v -i "warning" || true
# atheris (coverage-guided fuzzing) has no wheel everywhere: optional, its test skips without it
.venv/bin/python -m pip install -q "atheris>=2.3" >/dev/null 2>&1 || echo "atheris not installed: its fuzz test will be skipped"
# Ray (distributed batch coding) is large and has no wheel everywhere: optional, its test skips without it
.venv/bin/python -m pip install -q "ray[data]>=2.40" >/dev/null 2>&1 || echo "ray not installed: its test will be skipped"
.venv/bin/python -c "import hpac, torch, constriction, imagecodecs, oxipng; print('hpac', hpac.__version__, 'ready (torch', torch.__version__ + ')')"
