"""Training: :class:`TrainConfig`, the :class:`Trainer` loop, and background jobs."""
