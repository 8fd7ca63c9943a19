"""Where a trial trains: the device a study file names, and CPU threads per worker."""

from __future__ import annotations

import os


def default_threads(workers: int = 1) -> int:
    """Torch threads per worker so that workers × threads does not exceed the cores."""
    return max(1, (os.cpu_count() or 1) // max(1, workers))


def resolve_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name
