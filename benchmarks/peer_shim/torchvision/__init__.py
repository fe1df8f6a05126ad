"""A minimal stand-in for ``torchvision``, only for running diffusers' example training scripts in
``benchmarks/bench_train.py`` and ``benchmarks/bench_train_sdxl.py``.

The real torchvision wheel on the package index is CUDA-linked and fails to import beside
torch 2.13+cpu (``operator torchvision::nms does not exist``). The example scripts need only
``torchvision.transforms`` (Resize, CenterCrop, RandomCrop, RandomHorizontalFlip, Lambda,
ToTensor, Normalize, Compose, InterpolationMode) and ``torchvision.transforms.functional.crop``
(the SDXL script), which are re-implemented here with PIL and torch following torchvision's
semantics. ``peer_shim/run_peer.py`` hands this package to the peer script's own imports only; it
is not part of lorahub.
"""

import sys

from . import transforms
from . import transforms_functional as _functional

# ``from torchvision.transforms.functional import crop``: transforms is a module here, so its
# ``functional`` submodule is registered by hand.
transforms.functional = _functional  # type: ignore[attr-defined]
sys.modules[__name__ + ".transforms.functional"] = _functional

__version__ = "0.0.0+lorahub-bench-shim"
