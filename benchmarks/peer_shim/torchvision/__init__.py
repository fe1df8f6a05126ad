"""A minimal stand-in for ``torchvision``, only for running diffusers' example training script in
``benchmarks/bench_train.py``.

The real torchvision wheel on the package index is CUDA-linked and fails to import beside
torch 2.13+cpu (``operator torchvision::nms does not exist``). The example script needs only
``torchvision.transforms`` (Resize, CenterCrop, RandomCrop, RandomHorizontalFlip, Lambda,
ToTensor, Normalize, Compose, InterpolationMode), which are re-implemented here with PIL and
torch following torchvision's semantics. This folder is put on the peer's ``PYTHONPATH`` only; it
is not part of lorahub.
"""

from . import transforms  # noqa: F401

__version__ = "0.0.0+lorahub-bench-shim"
