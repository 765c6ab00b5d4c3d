"""Training batches as a function of the step: a resumed run sees exactly the batches an
uninterrupted one would have, on one process or under torchrun."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class StepBatches(Sampler[list[int]]):
    """Index batches for steps ``start .. steps - 1``, drawn uniformly with replacement.

    Batch ``step`` of process ``rank`` depends only on ``(seed, rank, step)``, not on how many
    batches were drawn before, so resuming at any step continues the same sequence and each
    torchrun process trains on its own draws.
    """

    def __init__(
        self, num_samples: int, batch_size: int, steps: int, *, seed: int, rank: int = 0, start: int = 0
    ) -> None:
        if num_samples < 1:
            raise ValueError("no training samples")
        self.num_samples, self.batch_size, self.steps = num_samples, batch_size, steps
        self.seed, self.rank, self.start = seed, rank, start

    def __len__(self) -> int:
        return max(0, self.steps - self.start)

    def __iter__(self) -> Iterator[list[int]]:
        generator = torch.Generator()
        for step in range(self.start, self.steps):
            generator.manual_seed(((self.seed * 1_000_003 + self.rank) * 1_000_000_007 + step) % 2**63)
            yield torch.randint(self.num_samples, (self.batch_size,), generator=generator).tolist()
