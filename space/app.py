"""Entry point of the Hugging Face Space (``app_file: app.py``) and of ``python -m lorahub.space.app``.

The module-level ``demo`` is what a Space runs. The base model comes from ``$LORAHUB_SPACE_BASE`` (any
``--base`` spec: a Hub id, a diffusers folder, a .safetensors checkpoint) when the machine has a GPU,
else the embedded tiny SD 1.x model that lorahub builds itself (no download); the SDXL family's from
``$LORAHUB_SPACE_BASE_SDXL`` likewise, else the embedded tiny SDXL model. Run as a script, the page
is served hardened by :func:`lorahub.space.ui.serve` (not ``demo.launch()``) on
``$GRADIO_SERVER_NAME:$GRADIO_SERVER_PORT`` (what Spaces set; default 127.0.0.1:7860). The guard's
settings come from ``$LORAHUB_UI_PUSH_ENDPOINTS``, ``$LORAHUB_UI_MAX_FILE_SIZE`` and
``$LORAHUB_UI_RATE_LIMITS`` (see README.md).
"""

from __future__ import annotations

import os

from lorahub.space.ui import create_blocks, serve

demo = create_blocks()

if __name__ == "__main__":
    serve(os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"), int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
          blocks=demo, on_ready=lambda url: print(f"lorahub space: listening on {url}", flush=True))
