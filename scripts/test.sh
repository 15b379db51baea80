#!/usr/bin/env bash
# The README's test command: installs what the tests need (torch's CPU build, pinned, since a bare
# "torch" requirement pulls a multi-GB CUDA build), builds and installs the package, runs pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --quiet "torch==2.13.0" ".[test]"
python -m perceptrons info
python -m pytest -q "$@"
