"""Signals: what each per-epoch validation score says early about a trial's final F1.

    python benchmarks/signals.py --seeds 42 --trials 5              # unpruned searches, every epoch's scores
    python benchmarks/signals.py --collect /tmp/signals-42 ...      # read back searches stopped early

One unpruned search per TPE seed on sms_spam (the pruning benchmark's settings: 256/256
rows, 64 tokens, 5 epochs), with the evaluation extended to record, beside hpsearch's own
row (F1, loss, ROC AUC), the average precision of the positive class and the gap between
the mean positive-class probability of positives and of negatives. The result file holds
every trial's rows, so that a pruning rule can be weighed against the curves: which score,
after how many epochs or updates, tells a trial that will become the best from one that
never learns. The searches run one after another (no timing is reported).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import _harness as h

EXTRA = ("average_precision", "margin")
# The first, exploratory run of this measurement named two of its scores differently.
_ALIASES = {"auc": "roc_auc", "ap": "average_precision"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default=str(h.SMS_SPAM), help="dataset folder (default ../shared/data/sms_spam)")
    p.add_argument("--seeds", default="42,43,44", help="comma-separated TPE seeds, one search each")
    p.add_argument("--trials", type=int, default=10)
    p.add_argument("--workdir", default=None, help="keep the searches here (default: a temporary folder)")
    p.add_argument("--collect", nargs="+", metavar="DIR", help="only read back the searches in these folders")
    args = p.parse_args()
    if args.collect:
        searches = {Path(d).name: _rows(Path(d)) for d in args.collect}
    else:
        root = Path(args.workdir or tempfile.mkdtemp(prefix="bench-signals-"))
        searches = {}
        for seed in (int(s) for s in args.seeds.split(",")):
            work = root / f"seed-{seed}"
            _search(seed, work, args)
            searches[work.name] = _rows(work)
    payload = {"benchmark": "signals", "command": h.command_line(), "machine": h.machine(), "settings": vars(args), "searches": searches}
    path = h.save("signals", payload)
    print(f"saved {path.relative_to(h.REPO)}", file=sys.stderr)


def _search(seed: int, work: Path, args: argparse.Namespace) -> None:
    import numpy as np

    import hpsearch.training.objective as objective
    from hpsearch import metrics

    plain = metrics.compute_metrics_for

    def with_extras(average: str) -> Any:
        inner = plain(average)

        def compute(eval_pred: Any) -> dict[str, float]:
            from sklearn.metrics import average_precision_score

            out = inner(eval_pred)
            logits = eval_pred.predictions[0] if isinstance(eval_pred.predictions, tuple) else eval_pred.predictions
            z = np.exp(logits - logits.max(axis=1, keepdims=True))
            p1 = (z / z.sum(axis=1, keepdims=True))[:, 1]
            y = eval_pred.label_ids
            out["average_precision"] = float(average_precision_score(y, p1))
            out["margin"] = float(p1[y == 1].mean() - p1[y == 0].mean())
            return out

        return compute

    objective.compute_metrics_for = with_extras
    objective.METRICS = (*metrics.METRICS, *EXTRA)
    work.mkdir(parents=True, exist_ok=True)
    config = work / "signals.toml"
    config.write_text(f"early_stopping_patience = 0\n[pruner]\nname = 'none'\n[sampler]\nseed = {seed}\n", encoding="utf-8")
    h.run_hpsearch_cli([
        "run", "--dataset", args.dataset, "--max-train-samples", "256", "--max-eval-samples", "256", "--epochs", "5",
        "--max-length", "64", "--trials", str(args.trials), "--config", str(config),
        "--storage", f"sqlite:///{work}/hpsearch.db", "--workdir", f"{work}/studies",
    ])


def _rows(work: Path) -> list[dict[str, Any]]:
    """Every trial's parameters, state and epoch rows, from a search's storage."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name="hpsearch", storage=f"sqlite:///{work}/hpsearch.db")
    keys = ("epoch", "step", "eval_loss", "f1", "roc_auc", *EXTRA)
    return [
        {"number": t.number, "state": t.state.name.lower(), "params": t.params,
         "rows": [{k: r[k] for k in keys if k in r} for r in map(_renamed, t.user_attrs.get("epochs", []))]}
        for t in study.trials
    ]



def _renamed(row: dict[str, Any]) -> dict[str, Any]:
    return {_ALIASES.get(k, k): v for k, v in row.items()}


if __name__ == "__main__":
    main()
