#!/usr/bin/env bash
# Set everything up, then encode, decode and verify the bundled sample; print bpsp beside PNG and JPEG XL.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python scripts/demo.py "${1:-samples/ihc_crop.png}"
