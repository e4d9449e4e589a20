"""What the window knows of the live training run — learnt from the worker's signals only.

Why a record of its own: the worker's trainer and dataset live in the worker's thread and change
under a running batch; the GUI thread must not read them (docs/architecture.md, "Threading"). Everything
the window needs — is a model loaded, its config, device and data, how many batches it trained
and how many of those are saved — arrives as signal payloads and is kept here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from energy_flow.config import EnergyConfig


@dataclass
class LiveRun:
    config: EnergyConfig
    loaded: bool = False           # a model is built (``loaded`` was received)
    device: str = ""               # the device in words, as the worker described it
    data: dict[str, Any] = field(default_factory=dict)   # the dataset's provenance
    batches_trained: int = 0
    saved_at: int = 0              # batches_trained when the model was built, opened or last saved
    checkpoint: str | None = None  # where it was last saved or opened from

    def on_loaded(self, info: dict[str, Any]) -> None:
        """A model was (re)built or opened: nothing of it is unsaved yet."""
        self.loaded = True
        self.config = info["config"]
        self.device = info["device"]
        self.data = dict(info["data"])
        self.batches_trained = self.saved_at = int(info["step"])

    def on_saved(self, path: str, batches: int) -> None:
        self.checkpoint = path
        self.saved_at = batches

    @property
    def unsaved_batches(self) -> int:
        """Batches trained since the model was built, opened or saved (what a close would lose)."""
        return max(self.batches_trained - self.saved_at, 0)

    def provenance(self) -> dict[str, Any]:
        """What an export records of where the live batch came from."""
        data = self.data
        prov: dict[str, Any] = {"model": "energy_flow.FlowProcessor"}
        if data:
            prov.update(teacher=data["teacher"], data_source=data["source"], num_pairs=data["num_pairs"])
        if self.loaded:
            prov["device"] = self.device
        return prov
