"""Training LoRA adapters: datasets, the training loop, checkpoints and the adapter package it writes.

Nothing here imports torch at import time: :mod:`~lorahub.training.trainer`,
:mod:`~lorahub.training.checkpoint` and the tensor parts of :mod:`~lorahub.training.export`
import it when called. :mod:`~lorahub.training.dataset` and :mod:`~lorahub.training.demo_data`
need Pillow and numpy only.
"""
