#!/usr/bin/env bash
# The GPU checks, for a machine with an NVIDIA GPU (a few minutes; under 8 with torch already
# installed): sets up .venv (`make install`), runs the `gpu` tests and then the GPU rows of
# `make bench` (`python benchmarks/bench.py --gpu`). Without a CUDA device it stops at once
# with "no CUDA device" and exit status 1.
#
# .venv needs a CUDA build of torch (and torchvision). PyPI's wheels for Linux x86-64 are CUDA
# builds, so the default `make install` gets them where pip takes torch from PyPI. Where a local
# wheel folder offers CPU builds first (pip's find-links on the lab machines), ask for the CUDA
# builds by their local version through PyTorch's wheel index for your CUDA version (the
# --index-url its "Get started" page gives), e.g. for CUDA 12.8:
#   rm -rf .venv
#   PIP_EXTRA_INDEX_URL=<PyTorch's cu128 index> \
#     TORCH_SPEC="torch==2.13.0+cu128 torchvision==0.28.0+cu128" benchmarks/gpu.sh
# (TORCH_SPEC is the Makefile's: pip requirements, one per word.)
set -euo pipefail
cd "$(dirname "$0")/.."

if ! nvidia-smi -L >/dev/null 2>&1; then
    echo "no CUDA device: nvidia-smi finds no GPU on this machine" >&2
    exit 1
fi
make install
.venv/bin/python - <<'EOF'
import sys

import torch

if torch.version.cuda is None:
    sys.exit(
        f"no CUDA device: torch {torch.__version__} in .venv is a CPU build; reinstall it with "
        "a CUDA build (rm -rf .venv, then TORCH_SPEC=...: see benchmarks/gpu.sh's header)"
    )
if not torch.cuda.is_available():
    sys.exit(f"no CUDA device: torch {torch.__version__} (CUDA {torch.version.cuda}) sees no GPU")
names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}: {', '.join(names)}")
EOF
.venv/bin/pytest -m gpu
.venv/bin/python benchmarks/bench.py --gpu
echo "gpu.sh done in ${SECONDS} s"
