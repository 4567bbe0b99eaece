#!/usr/bin/env bash
# Pre-train hpac-natural on a lent GPU machine in one device call (docs/training.md, "A GPU session").
#
# Here, once (20 minutes on 2 cores; .gpu/ is git-ignored):
#   bash scripts/gpu_session.sh prepare
# Then one device call (the `run` tool), carrying .gpu:
#   bash scripts/gpu_session.sh train MINUTES      (e.g. 8; the weights and logs come back in $OUT)
# and, at once on the warm machine, a second, lower-rate cosine from the first one's weights
# (copied here into .gpu/n1.safetensors; session 16 took another 0.17% off this way):
#   HPAC_INIT=.gpu/n1.safetensors HPAC_LR=2e-5 bash scripts/gpu_session.sh train 4
# Back here: judge the weights on the held-out files (scripts/heldout_nll.py), then on dev ("A GPU session" in
# docs/training.md). $OUT/natural.safetensors.ckpt resumes the run here with `--resume`.
# HPAC_DIM / HPAC_MLP_RATIO train a narrower network, from the --init weights' first channels
# (issue 31's encode time: docs/training.md, session 31).
#
# The device machine has PyTorch with CUDA but no network and not all of hpac's dependencies:
# `prepare` packs the training tiles as lossless WebP (scripts/webp_tiles.py) and downloads
# the wheels `hpac train` needs beyond torch, numpy and Pillow; `train` installs those offline
# if they are missing, unpacks the tiles and runs `hpac train` on the GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
GPU=.gpu
SHARED=../shared/data/train
EXTRA=${HPAC_EXTRA_TRAIN:-/work/data_extra/train}
LIMIT_MIB=60  # a device call carries 64 MiB with the tracked repo (about 2 MiB)

prepare() {
    local py=.venv/bin/python
    [ -d "$EXTRA" ] || nice -n 19 $py datasets/fetch_training.py --out "$EXTRA"
    rm -rf "$GPU/natural" "$GPU/wheels"
    mkdir -p "$GPU/wheels"
    nice -n 19 $py scripts/webp_tiles.py pack "$GPU/natural" "$SHARED" "$EXTRA"
    # over the limit: leave out the largest training tiles (never a validation tile)
    $py - "$GPU/natural" "$LIMIT_MIB" <<'EOF'
import sys, zlib
from pathlib import Path
root, limit = Path(sys.argv[1]), float(sys.argv[2]) * 2**20
files = sorted((p for p in root.rglob("*") if p.is_file()), key=lambda p: -p.stat().st_size)
total = sum(p.stat().st_size for p in files)
for p in files:
    if total <= limit:
        break
    rel = Path(*p.relative_to(root).parts[1:]).as_posix()  # the name hpac train sees after unpacking
    name = rel.removesuffix(".webp").removesuffix(".L").removesuffix(".png")
    if zlib.crc32(name.encode()) % 10 == 0:  # hpac.tools.train's validation split
        continue
    total -= p.stat().st_size
    print(f"left behind: {p.relative_to(root)}")
    p.unlink()
print(f"carried: {total / 2**20:.1f} MiB")
EOF
    .venv/bin/pip download --no-deps --only-binary=:all: -d "$GPU/wheels" "safetensors>=0.4" "tqdm>=4.60" -q
    du -sh "$GPU"
}

train() {
    local minutes=${1:?minutes}
    local out=${OUT:-/tmp/hpac-out}
    local py
    py=${HPAC_PYTHON:-$(command -v python3 || command -v python)}
    mkdir -p "$out"
    nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$out/gpu.txt" || true
    $py -c "import safetensors, tqdm" 2>/dev/null || $py -m pip install --no-index --find-links "$GPU/wheels" safetensors tqdm -q
    if [ ! -d /tmp/npy ]; then  # a warm machine keeps them; a call killed mid-unpack leaves only /tmp/npy.part
        rm -rf /tmp/npy.part
        $py scripts/webp_tiles.py unpack "$GPU/natural" /tmp/npy.part
        mv /tmp/npy.part /tmp/npy
    fi
    local data
    data=$(ls -d /tmp/npy/*)
    # float32 and torch.compile: at equal GPU time as good as bfloat16 and better per step (session 9);
    # alone on the GPU: about 36 steps of 64 crops a second on an H100, 39-40 on an H200 (loading and compiling included)
    PYTHONPATH=src $py -m hpac.tools.cli train --data $data --out "$out/natural.safetensors" --device "${HPAC_DEVICE:-cuda}" \
        --init "${HPAC_INIT:-src/hpac/zoo/data/hpac-natural.safetensors}" --dim "${HPAC_DIM:-64}" --mlp-ratio "${HPAC_MLP_RATIO:-2}" --blocks 3 --mixtures 5 --patch 128 \
        --crop 64 --batch "${HPAC_BATCH:-64}" --lr "${HPAC_LR:-5e-5}" --seed "${HPAC_SEED:-141}" ${HPAC_COMPILE---compile} \
        --minutes "$minutes" --val-every 2000 --no-progress 2>&1 | tee "$out/natural.log"
}

case "${1:-}" in
    prepare) prepare ;;
    train) shift; train "$@" ;;
    *) sed -n 2,17p "$0"; exit 2 ;;
esac
