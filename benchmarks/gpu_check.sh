#!/usr/bin/env bash
# The GPU check (benchmarks/gpu_check.py): one command, no network, within 8 minutes on one
# large GPU. `--dry-run` runs every step on the tiny model on a CPU, as the test suite does;
# it measures nothing, so it saves its JSON in its temporary folder (or at --out), not results/.
set -euo pipefail
cd "$(dirname "$0")"
exec "${PYTHON:-python3}" gpu_check.py "$@"
