"""Entry point of the Hugging Face Space (``app_file: app.py``) and of ``python -m lorahub.space.app``.

The module-level ``demo`` is what a Space runs. The base model comes from ``$LORAHUB_SPACE_BASE`` (any
``--base`` spec: a Hub id, a diffusers folder, a .safetensors checkpoint) when the machine has a GPU,
else the embedded tiny SD 1.x model that lorahub builds itself (no download).
"""

from __future__ import annotations

from lorahub.space.ui import create_blocks

demo = create_blocks()

if __name__ == "__main__":
    demo.launch()
