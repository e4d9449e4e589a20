"""Shared fixtures for the library tests (GUI fixtures live in tests/gui/conftest.py)."""

from __future__ import annotations

import subprocess
from contextlib import contextmanager
from typing import Iterator

import pytest
import torch
import torch.nn.functional as F


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``cuda`` run only where torch sees a GPU; elsewhere they are skipped, named."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device: torch.cuda.is_available() is False here")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


def unit_rows(n: int, dim: int = 384, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, dim, generator=g), dim=1)


@pytest.fixture
def pairs8() -> tuple[torch.Tensor, torch.Tensor]:
    return unit_rows(8, seed=1), unit_rows(8, seed=2)


@contextmanager
def killed_at_exit(args: list[str], **popen_kwargs) -> Iterator[subprocess.Popen]:
    """A process with text pipes for stdout and stderr; on leaving the block, however it is
    left, it is SIGKILLed (if still running), reaped and its pipes are closed."""
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen_kwargs)
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait(timeout=60)
        proc.stdout.close()
        proc.stderr.close()
