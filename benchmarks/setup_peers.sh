#!/usr/bin/env bash
# Build the virtual environment for the peers that cannot live beside embedrt (see README.md).
#   bash benchmarks/setup_peers.sh [VENV_DIR]      (default: ~/.venvs/embedrt-peers)
# torch is pinned and installed first: 2.13.0 resolves to the CPU build on this project's machines,
# while an unpinned torch pulled in by sentence-transformers would download a multi-GB CUDA build.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${1:-${EMBEDRT_PEERS_VENV:-$HOME/.venvs/embedrt-peers}}"
python="${PYTHON:-python3}"
if [[ ! -x "$venv/bin/python" ]]; then
    "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q torch==2.13.0
"$venv/bin/python" -m pip install -q -r "$here/requirements-peers.txt"
"$venv/bin/python" - <<'PY'
import importlib.metadata as md
for name in ("torch", "transformers", "sentence-transformers", "optimum-onnx", "onnxruntime", "fastembed", "ctranslate2"):
    try:
        print(f"{name:22s} {md.version(name)}")
    except md.PackageNotFoundError:
        print(f"{name:22s} not installed")
PY
echo "peers venv ready: $venv (compare_cpu.py finds it there, or pass --peers-python $venv/bin/python)"
