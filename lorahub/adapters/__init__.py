"""The adapter-file layer: read, check, fingerprint and rewrite LoRA files.

Everything above it (training output, push, registry indexing, pipeline
compatibility checks) calls these functions. No torch here.
"""

from .header import SafetensorsHeader, TensorInfo, read_header

__all__ = ["SafetensorsHeader", "TensorInfo", "read_header"]
