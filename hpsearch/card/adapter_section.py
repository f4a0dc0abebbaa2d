"""The card's account of a LoRA adapter (``[peft]``): its settings, and how much of the model trained.

None for a study without ``[peft]``, so that card reads as it always has.
"""

from __future__ import annotations

from typing import Any

from hpsearch import schema
from hpsearch.card.facts import CardFacts
from hpsearch.config import PEFT_PREFIX


def adapter_facts(facts: CardFacts) -> dict[str, Any] | None:
    """The adapter's hyperparameters (the ``[peft]`` table with the trial's searched values),
    its trainable and total parameter counts, and the labels a Hub user must pass."""
    table = facts.config.get("peft")
    if not table:
        return None
    searched = {k.removeprefix(PEFT_PREFIX): v for k, v in facts.trial.params.items() if k.startswith(PEFT_PREFIX)}
    settings = {**table, **searched}
    modules = settings.get("target_modules")
    hyperparameters = [
        ("peft_method", str(settings["method"])),
        ("lora_r", str(settings["r"])),
        ("lora_alpha", str(settings["lora_alpha"])),
        ("lora_dropout", str(settings["lora_dropout"])),
        ("lora_target_modules", ", ".join(modules) if modules else "peft's default for the architecture"),
    ]
    counts = schema.parameters(facts.run)
    share = f"{100 * counts['trainable'] / counts['total']:.2f}%" if counts and counts["total"] else None
    return dict(
        hyperparameters=hyperparameters,
        trainable=f"{counts['trainable']:,}" if counts else None,
        total=f"{counts['total']:,}" if counts else None,
        share=share,
        num_labels=len(facts.label_names),
        id2label=repr(dict(enumerate(facts.label_names))),
    )
