#!/usr/bin/env bash
# Run tests N times in a row with the CPU kept busy beside them; stop at the first failure.
#
#   bash benchmarks/flake_check.sh 50 'tests/test_failures.py::test_an_interrupt_mid_trial_records_it_failed_and_the_same_command_resumes[SIGINT]'
#
# The load is `stress --cpu 2` (two busy loops where `stress` is missing), as many busy
# processes as a 2-core machine has cores, for as long as the runs last. Each run is a fresh
# `python -m pytest` process, so session fixtures are made again every time. Prints one line
# a run and, at the end, how many passed in a row, and saves the runs with the machine's
# facts as benchmarks/results/flake_check-<time>.json; the exit code is pytest's first failure.
set -uo pipefail
cd "$(dirname "$0")/.."

runs=${1:?usage: flake_check.sh RUNS TEST...}
shift
[ "$#" -gt 0 ] || { echo "usage: flake_check.sh RUNS TEST..." >&2; exit 2; }

# In a process group of its own, so that stress's workers go with it at the end.
if command -v stress >/dev/null 2>&1; then
    setsid stress --cpu 2 >/dev/null 2>&1 &
else
    setsid bash -c 'while :; do :; done & while :; do :; done' &
fi
load=$!
trap 'kill -- -"$load" 2>/dev/null' EXIT

logs=$(mktemp -d)
# One line per run: "<passed|failed> <seconds> <load average>", read back by save_result.
save_result() {
    python - "$logs/runs.txt" "$runs" "$@" <<'PY'
import sys

sys.path.insert(0, "benchmarks")
import _harness as h

lines, planned, tests = open(sys.argv[1]).read().split("\n"), int(sys.argv[2]), sys.argv[3:]
runs = [dict(zip(("outcome", "s", "load1"), line.split(), strict=True)) for line in lines if line]
passed = len([r for r in runs if r["outcome"] == "passed"])
payload = {
    "benchmark": "flake_check",
    "command": " ".join(["bash benchmarks/flake_check.sh", str(planned), *(repr(t) for t in tests)]),
    "machine": h.machine(),
    "tests": tests,
    "runs_planned": planned,
    "passed_in_a_row": passed,
    "failed": len(runs) > passed,
    "runs": [{"outcome": r["outcome"], "s": int(r["s"]), "load1": float(r["load1"])} for r in runs],
}
print(f"saved {h.save('flake_check', payload).relative_to(h.REPO)}")
PY
}
: >"$logs/runs.txt"
for i in $(seq "$runs"); do
    started=$(date +%s)
    if python -m pytest -q -p no:cacheprovider "$@" >"$logs/$i.log" 2>&1; then
        echo "passed $(( $(date +%s) - started )) $(cut -d' ' -f1 /proc/loadavg)" >>"$logs/runs.txt"
        echo "run $i passed in $(( $(date +%s) - started )) s, load $(cut -d' ' -f1 /proc/loadavg)"
    else
        code=$?
        echo "failed $(( $(date +%s) - started )) $(cut -d' ' -f1 /proc/loadavg)" >>"$logs/runs.txt"
        echo "run $i FAILED (exit $code) after $((i - 1)) in a row; log: $logs/$i.log"
        tail -n 30 "$logs/$i.log"
        save_result "$@"
        exit "$code"
    fi
done
echo "$runs of $runs passed in a row beside stress --cpu 2"
save_result "$@"
