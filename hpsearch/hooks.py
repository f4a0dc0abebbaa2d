"""Your own code in every trial, handed in from Python (docs/python.md).

:class:`Hooks` carries what ``Trainer.hyperparameter_search`` users pass to the Trainer: a
model factory, a ``Trainer`` subclass, a data collator and callbacks. Code cannot be
stored, so the study stores each hook's qualified name (:meth:`Hooks.names`); a resumed
study, a second worker or a confirmation must pass hooks of the same names, and the card
names them as facts of the run.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Parameters of your own (a head's dropout, say) are passed to ``model_init`` with the
# TrainingArguments values; see hpsearch.training.space.split_values.
ModelInit = Callable[[dict[str, Any], Any], Any]


@dataclass(frozen=True)
class Hooks:
    """What a trial's ``Trainer`` is built with beyond the recipe; every field is optional.

    Attributes:
        model_init: ``model_init(values, model) -> model``. ``values`` are the trial's
            training values: the recipe with the trial's parameters applied, your own
            parameters included; ``model`` is the trial's fresh copy of the base model (with
            a head for the task's labels). Return the model to train: the same one changed
            (a head's dropout), or a new one.
        trainer_class: A ``transformers.Trainer`` subclass, such as one whose ``compute_loss``
            weights the classes.
        data_collator: Replaces ``DataCollatorWithPadding(tokenizer)``.
        callbacks: Extra ``transformers.TrainerCallback`` objects for every trial.
    """

    model_init: ModelInit | None = None
    trainer_class: type | None = None
    data_collator: Any = None
    callbacks: Sequence[Any] = ()

    def names(self) -> dict[str, Any]:
        """The hooks' qualified names, the facts a study stores: ``{"model_init": "train.make_model"}``."""
        out: dict[str, Any] = {}
        if self.model_init is not None:
            out["model_init"] = qualified_name(self.model_init)
        if self.trainer_class is not None:
            out["trainer_class"] = qualified_name(self.trainer_class)
        if self.data_collator is not None:
            out["data_collator"] = qualified_name(self.data_collator)
        if self.callbacks:
            out["callbacks"] = [qualified_name(c) for c in self.callbacks]
        return out


def qualified_name(obj: Any) -> str:
    """``module.Name`` of a function or class; of an instance, its class's. Code in the script
    Python was started with is named after the script's file (``weighted.WeightedTrainer``)."""
    target = obj if callable(obj) and hasattr(obj, "__qualname__") else type(obj)
    module = target.__module__
    if module == "__main__" and getattr(sys.modules["__main__"], "__file__", None):
        module = Path(sys.modules["__main__"].__file__).stem
    return f"{module}.{target.__qualname__}"


def describe(names: dict[str, Any]) -> str:
    """``model_init=train.make_model, trainer_class=train.WeightedTrainer``, or ``none``."""
    parts = [f"{k}={', '.join(v) if isinstance(v, list) else v}" for k, v in names.items()]
    return "; ".join(parts) or "none"
