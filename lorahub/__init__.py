"""lorahub: train, fingerprint, search, share, hot-swap and blend Stable Diffusion LoRA adapters.

The library is importable without torch. Heavy dependencies (torch, diffusers,
gradio) are imported only inside the functions that need them.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
