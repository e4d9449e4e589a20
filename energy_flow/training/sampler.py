"""Which dataset rows make up optimisation step ``s``: a pure function of (seed, step).

Being stateless is what makes a resumed run draw exactly the batches the original run would
have drawn: the checkpoint only needs the step count.
"""

from __future__ import annotations

import torch


class BatchSampler:
    def __init__(self, num_items: int, batch_size: int, seed: int, shuffle: bool = True):
        if num_items < 1:
            raise ValueError("BatchSampler: the dataset is empty")
        self.num_items = num_items
        self.batch_size = min(batch_size, num_items)
        self.seed = seed
        self.shuffle = shuffle
        self._epoch = -1
        self._perm = torch.arange(num_items)

    @property
    def batches_per_epoch(self) -> int:
        return -(-self.num_items // self.batch_size)

    def indices(self, step: int) -> torch.Tensor:
        """Dataset indices of the batch used at optimisation step ``step`` (0-based)."""
        epoch, k = divmod(step, self.batches_per_epoch)
        if epoch != self._epoch:
            self._epoch = epoch
            if self.shuffle:
                g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
                self._perm = torch.randperm(self.num_items, generator=g)
        return self._perm[k * self.batch_size:(k + 1) * self.batch_size]
