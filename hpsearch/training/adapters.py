"""LoRA adapters through peft: the model each trial trains with ``[peft]``, and what is kept of it.

With ``[peft]`` a trial wraps its copy of the base model (after any ``model_init``) in
``get_peft_model(model, LoraConfig(task_type=SEQ_CLS, ...))``: the low-rank updates train, and
so does the classifier head, which SEQ_CLS lists in ``modules_to_save``; every other weight
stays frozen. The kept model is then an adapter: ``adapter_config.json`` and
``adapter_model.safetensors`` (the head included), with the tokenizer.

An adapter names its base model (``base_model_name_or_path``), and ``from_pretrained`` builds
that base from the base's own config. The base named on the command line has no head for the
task's labels (the packaged default is a bare ``BertModel``), so each study writes, once, the
base model with the task's head configuration (``num_labels``, ``id2label``) to
``studies/<study>/base-model/``, and every adapter it keeps names that folder. Then
``pipeline("text-classification", model="studies/<study>/best-model")`` loads the adapter with
the task's labels. :func:`export_merged` writes a full model for those who run without peft.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import uuid
from pathlib import Path
from typing import Any

from hpsearch.config import PeftConfig
from hpsearch.errors import ConfigError, ModelError, first_line
from hpsearch.training.space import adapter_values

ADAPTER_CONFIG = "adapter_config.json"  # peft's: what marks a folder as an adapter
INSTALL = "install peft: pip install 'hpsearch[peft]'"


def check_peft(peft: PeftConfig | None) -> None:
    """Refuse ``[peft]`` (``--peft lora``) where peft is not installed, before any work."""
    if peft is not None and importlib.util.find_spec("peft") is None:
        raise ConfigError(f"[peft] (--peft lora) trains adapters with the peft package, which is missing; {INSTALL}")


def with_adapter(model: Any, peft: PeftConfig | None, values: dict[str, Any]) -> tuple[Any, dict[str, int]]:
    """The model a trial trains, and its parameter counts: ``{"trainable": n, "total": m}``.

    ``total`` counts the model's own weights (what a merged export holds), not the adapter's
    extra ones; ``trainable`` counts what the optimiser updates: every weight without
    ``[peft]``, the low-rank updates and the head with it.
    """
    total = sum(p.numel() for p in model.parameters())
    if peft is not None:
        from peft import LoraConfig, TaskType, get_peft_model

        settings = adapter_values(peft, values)
        modules = settings["target_modules"]
        lora = LoraConfig(
            task_type=TaskType.SEQ_CLS,
            r=int(settings["r"]),
            lora_alpha=int(settings["lora_alpha"]),
            lora_dropout=float(settings["lora_dropout"]),
            target_modules=list(modules) if modules is not None else None,
        )
        model = get_peft_model(model, lora)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return model, {"trainable": int(trainable), "total": int(total)}


def is_adapter(folder: Path) -> bool:
    return (Path(folder) / ADAPTER_CONFIG).is_file()


def name_base_model(folder: Path, base_model: Any, tokenizer: Any, base_dir: Path) -> None:
    """Make the adapter just saved in ``folder`` name ``base_dir``, writing that folder first if
    it is missing: ``base_model`` (the head configured for the task's labels) and the tokenizer.

    The folder is written beside its place and renamed into it, so workers that race to write
    it leave one whole copy. peft's own README.md in ``folder`` goes: the card is hpsearch's.
    """
    base_dir = Path(base_dir).resolve()
    if not (base_dir / "config.json").is_file():
        tmp = base_dir.with_name(f".{base_dir.name}.tmp-{uuid.uuid4().hex[:8]}")
        try:
            base_model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            tmp.rename(base_dir)
        except OSError:
            if not (base_dir / "config.json").is_file():  # not another worker's copy: a real failure
                raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    path = Path(folder) / ADAPTER_CONFIG
    config = json.loads(path.read_text(encoding="utf-8"))
    config["base_model_name_or_path"] = str(base_dir)
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    (Path(folder) / "README.md").unlink(missing_ok=True)


def export_merged(folder: Path, target: Path) -> Path:
    """Write the adapter in ``folder`` merged into its base model, as a full model, to ``target``.

    Raises:
        ModelError: ``folder`` holds no model, or a full model rather than an adapter, or its
            base model cannot be loaded.
        ConfigError: ``target`` exists and is not an empty folder, or peft is not installed.
    """
    folder, target = Path(folder), Path(target)
    if not folder.is_dir():
        raise ModelError(f"{folder} does not exist: run `hpsearch run` first")
    if not is_adapter(folder):
        raise ModelError(f"{folder} holds a full model, not an adapter; it loads without peft as it is")
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ConfigError(f"--merge {str(target)!r} exists and is not empty; pass a new or empty folder")
    if importlib.util.find_spec("peft") is None:
        raise ConfigError(f"loading an adapter needs the peft package, which is missing; {INSTALL}")
    from peft import AutoPeftModelForSequenceClassification
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # stderr keeps to one line: the result goes to stdout
    try:
        try:
            model = AutoPeftModelForSequenceClassification.from_pretrained(str(folder))
        except (OSError, ValueError) as e:
            raise ModelError(f"the adapter in {folder} or its base model cannot be loaded: {first_line(e)}") from None
        model.merge_and_unload().save_pretrained(target)
        AutoTokenizer.from_pretrained(str(folder)).save_pretrained(target)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    return target
