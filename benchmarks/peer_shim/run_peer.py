"""Run diffusers' example script with the torchvision stand-in, visible to that script only.

    python benchmarks/peer_shim/run_peer.py PATH/train_text_to_image_lora.py [its arguments]

The script's own ``from torchvision import transforms`` gets ``benchmarks/peer_shim/torchvision``
(a PIL + torch re-implementation). Nothing else sees it: transformers and diffusers probe for
torchvision with ``importlib.util.find_spec`` and would otherwise route image processing through a
fake package, so the shim is not put on ``sys.path``; an ``__import__`` hook hands it out only to
imports made from the peer script's own module.
"""

from __future__ import annotations

import builtins
import importlib.util
import os
import runpy
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ALIAS = "_bench_torchvision_shim"
# Python put this folder (which holds the torchvision/ stand-in) first on sys.path: take it off,
# or find_spec("torchvision") would find the stand-in for every library.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != HERE]


def _load_shim():  # noqa: ANN202
    init = os.path.join(HERE, "torchvision", "__init__.py")
    spec = importlib.util.spec_from_file_location(ALIAS, init, submodule_search_locations=[os.path.dirname(init)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[ALIAS] = module
    spec.loader.exec_module(module)
    return module


def main() -> None:
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    peer = os.path.abspath(sys.argv[1])
    sys.argv = [peer, *sys.argv[2:]]
    shim = _load_shim()
    real_import = builtins.__import__

    def hooked(name, globals=None, locals=None, fromlist=(), level=0):  # noqa: A002, ANN001, ANN202
        if level == 0 and globals is not None and globals.get("__file__") == peer:
            if name == "torchvision":
                return shim
            if name.startswith("torchvision."):
                sub = sys.modules[ALIAS + name[len("torchvision"):]]
                return sub if fromlist else shim
        return real_import(name, globals, locals, fromlist, level)

    builtins.__import__ = hooked
    timing = os.environ.get("BENCH_PEER_TIMING")
    if timing:
        _time_training_bar(timing)
    sys.path.insert(0, os.path.dirname(peer))
    runpy.run_path(peer, run_name="__main__")


def _time_training_bar(path: str) -> None:
    """Record when the script's training progress bar (``desc="Steps"``) starts and last advances.

    The script creates that bar just before its training loop and advances it once per optimizer
    step, so (steps, seconds) is the loop's own speed, without start-up, loading or saving. Written
    as JSON to ``path`` at exit (the script never closes the bar). The script's code is not touched.
    """
    import atexit
    import json
    import time

    import tqdm.auto

    base = tqdm.auto.tqdm
    record: dict[str, float] = {}

    class TimedBar(base):  # type: ignore[misc, valid-type]
        def __init__(self, *a, **k):  # noqa: ANN002, ANN003
            super().__init__(*a, **k)
            self._bench = k.get("desc") == "Steps"
            if self._bench:
                record.update(t0=time.perf_counter(), steps=0)

        def update(self, n=1):  # noqa: ANN001, ANN202
            if self._bench:
                record["steps"] += n
                record["t_last"] = time.perf_counter()
            return super().update(n)

    def dump() -> None:
        if record.get("steps"):
            with open(path, "w") as fh:
                json.dump({"steps": record["steps"], "seconds": record["t_last"] - record["t0"]}, fh)

    atexit.register(dump)
    tqdm.auto.tqdm = TimedBar


if __name__ == "__main__":
    main()
