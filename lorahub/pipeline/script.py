"""Several prompts and weight sets against one loaded pipeline: ``--interactive`` and ``--script``.

Line syntax (interactive input, or a text script):

- a line that does not start with ``:`` is a prompt (``<lora:NAME:W>`` tags work)
  and makes one image;
- ``:weight NAME W``, ``:weight NAME TE UNET`` or ``:weight NAME TE UNET TE2`` (SDXL's second
  text encoder); ``:add NAME [SOURCE] [W]``;
  ``:swap NAME SOURCE`` (hot-swap); ``:remove NAME``; ``:enable NAME``;
  ``:disable NAME``;
- ``:seed N``, ``:steps N``, ``:size WxH``, ``:guidance G``, ``:negative TEXT``
  (``:negative`` alone clears it);
- ``:list``, ``:stats``, ``:quit``; blank lines and ``#`` comments are skipped.

JSON scripts are a list of steps (or ``{"defaults": {...}, "steps": [...]}``);
each step may have ``add`` (``{name: source}`` or ``{name: {"source", "weight"}}``),
``swap`` (``{name: source}``), ``remove``/``enable``/``disable`` (lists of names),
``weights`` (``{name: w | [te, unet] | [te, unet, te2]}``), ``seed``, ``steps``, ``size``,
``guidance``, ``negative``, ``prompt`` (render) and ``out`` (file name), applied
in that order.
"""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import LorahubError, UsageError


@dataclass
class Settings:
    seed: int = 0
    steps: int = 20
    width: int = 64
    height: int = 64
    guidance: float | None = None  # the base's own default (LivePipeline.default_guidance)
    negative: str | None = None


def parse_size(text: str) -> tuple[int, int]:
    t = str(text).lower().strip()
    w, sep, h = t.partition("x")
    try:
        width, height = int(w), int(h if sep else w)
    except ValueError:
        raise UsageError(f"size '{text}': use WIDTHxHEIGHT, e.g. 64x64") from None
    if width <= 0 or height <= 0 or width % 8 or height % 8:
        raise UsageError(f"size '{text}': width and height must be positive multiples of 8")
    return width, height


@dataclass
class Event:
    kind: str  # "render", "swap", "add", "weight", "remove", "enable", "disable", "setting", "info", "error"
    message: str
    seconds: float = 0.0
    render: Any = None
    out: str | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = {"kind": self.kind, "message": self.message, "seconds": round(self.seconds, 4)}
        if self.render is not None:
            d["render"] = self.render.to_dict()
        if self.out:
            d["out"] = self.out
        d.update(self.data)
        return d


class Session:
    """Runs script steps or interactive lines against a :class:`~lorahub.pipeline.live.LivePipeline`."""

    def __init__(self, live: Any, settings: Settings | None = None,
                 on_event: Callable[[Event], None] | None = None) -> None:
        self.live = live
        self.settings = settings or Settings()
        self.on_event = on_event or (lambda _e: None)
        self.events: list[Event] = []
        self.quit = False

    def _emit(self, event: Event) -> Event:
        self.events.append(event)
        self.on_event(event)
        return event

    # -------------------------------------------------------------- lines

    def run_lines(self, lines: Iterable[str], *, stop_on_error: bool = False) -> None:
        for raw in lines:
            if self.quit:
                break
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            try:
                self.line(line)
            except LorahubError as exc:
                if stop_on_error:
                    raise
                self._emit(Event("error", str(exc)))

    def line(self, line: str) -> Event | None:
        if not line.startswith(":"):
            return self.render(line)
        try:
            parts = shlex.split(line[1:])
        except ValueError as exc:
            raise UsageError(f"cannot parse '{line}': {exc}") from None
        if not parts:
            raise UsageError("an empty command")
        cmd, args = parts[0].lower(), parts[1:]
        live = self.live
        if cmd in ("quit", "q", "exit"):
            self.quit = True
            return None
        if cmd in ("weight", "w"):
            if len(args) not in (2, 3, 4):
                raise UsageError(":weight NAME W  or  :weight NAME TE UNET [TE2]")
            nums = [_float(a) for a in args[1:]]
            started = time.perf_counter()
            if len(nums) == 1:
                live.set_weight(args[0], nums[0])
            else:
                live.set_weight(args[0], te=nums[0], unet=nums[1], te2=nums[2] if len(nums) == 3 else None)
            return self._emit(Event("weight", f"{live.adapter(args[0]).label()}", time.perf_counter() - started))
        if cmd == "swap":
            if len(args) != 2:
                raise UsageError(":swap NAME SOURCE")
            started = time.perf_counter()
            ad = live.swap(args[0], args[1])
            return self._emit(Event("swap", f"{args[0]} <- {ad.source}", time.perf_counter() - started,
                                    data={"adapter": ad.to_dict()}))
        if cmd == "add":
            if not 1 <= len(args) <= 3:
                raise UsageError(":add NAME [SOURCE] [W]")
            source = args[1] if len(args) > 1 else None
            weight = _float(args[2]) if len(args) > 2 else None
            started = time.perf_counter()
            ad = live.add(args[0], source, weight=weight)
            return self._emit(Event("add", f"{ad.label()} from {ad.source}", time.perf_counter() - started,
                                    data={"adapter": ad.to_dict()}))
        if cmd in ("remove", "rm"):
            _need(args, 1, ":remove NAME")
            live.remove(args[0])
            return self._emit(Event("remove", args[0]))
        if cmd in ("enable", "disable"):
            _need(args, 1, f":{cmd} NAME")
            live.enable(args[0], cmd == "enable")
            return self._emit(Event(cmd, live.adapter(args[0]).label()))
        if cmd == "seed":
            _need(args, 1, ":seed N")
            self.settings.seed = _int(args[0])
            return self._emit(Event("setting", f"seed {self.settings.seed}"))
        if cmd == "steps":
            _need(args, 1, ":steps N")
            self.settings.steps = _int(args[0])
            return self._emit(Event("setting", f"steps {self.settings.steps}"))
        if cmd == "size":
            _need(args, 1, ":size WxH")
            self.settings.width, self.settings.height = parse_size(args[0])
            return self._emit(Event("setting", f"size {self.settings.width}x{self.settings.height}"))
        if cmd in ("guidance", "cfg"):
            _need(args, 1, ":guidance G")
            self.settings.guidance = _float(args[0])
            return self._emit(Event("setting", f"guidance {self.settings.guidance:g}"))
        if cmd in ("negative", "neg"):
            self.settings.negative = " ".join(args) or None
            return self._emit(Event("setting", f"negative {self.settings.negative or '(none)'}"))
        if cmd in ("list", "ls"):
            text = "; ".join(a.label() for a in live.adapters) or "no adapters"
            return self._emit(Event("info", text))
        if cmd == "stats":
            return self._emit(Event("info", json.dumps(live.summary()["stats"]), data={"stats": live.summary()["stats"]}))
        raise UsageError(f"unknown command ':{cmd}'",
                         hint=":weight :add :swap :remove :enable :disable :seed :steps :size :guidance :negative :list :stats :quit")

    def render(self, prompt: str, out: str | None = None) -> Event:
        s = self.settings
        r = self.live.render(prompt, negative=s.negative, seed=s.seed, steps=s.steps, width=s.width,
                             height=s.height, guidance=s.guidance)
        names = ", ".join(f"{a['name']} {a['unet_weight']:g}" for a in r.adapters) or "no adapters"
        return self._emit(Event("render", f"{r.prompt!r} [{names}] seed {r.seed}", r.seconds, render=r, out=out))

    # -------------------------------------------------------------- JSON

    def run_json(self, data: Any, *, stop_on_error: bool = True) -> None:
        if isinstance(data, dict):
            defaults = data.get("defaults") or {}
            steps = data.get("steps")
            self._settings(defaults)
        else:
            steps = data
        if not isinstance(steps, list):
            raise UsageError("a JSON script is a list of steps or {\"steps\": [...]}")
        for i, step in enumerate(steps, 1):
            if self.quit:
                break
            if not isinstance(step, dict):
                raise UsageError(f"script step {i} is not an object")
            unknown = set(step) - {"add", "swap", "remove", "enable", "disable", "weights", "seed", "steps", "size",
                                   "guidance", "negative", "prompt", "out", "quit"}
            if unknown:
                raise UsageError(f"script step {i}: unknown key(s) {', '.join(sorted(unknown))}")
            try:
                self._step(step)
            except LorahubError as exc:
                if stop_on_error:
                    raise UsageError(f"script step {i}: {exc}") from None
                self._emit(Event("error", f"step {i}: {exc}"))

    def _settings(self, d: dict[str, Any]) -> None:
        if "seed" in d:
            self.settings.seed = _int(d["seed"])
        if "steps" in d:
            self.settings.steps = _int(d["steps"])
        if "size" in d:
            self.settings.width, self.settings.height = parse_size(d["size"])
        if "guidance" in d:
            self.settings.guidance = _float(d["guidance"])
        if "negative" in d:
            self.settings.negative = d["negative"] or None

    def _step(self, step: dict[str, Any]) -> None:
        live = self.live
        for name, spec in (step.get("add") or {}).items():
            if isinstance(spec, dict):
                source, weight = spec.get("source"), spec.get("weight")
            else:
                source, weight = spec, None
            started = time.perf_counter()
            te = unet = te2 = None
            if isinstance(weight, list):
                if len(weight) not in (2, 3):
                    raise UsageError(f"add {name}: weight is a number, [te, unet] or [te, unet, te2]")
                parts = [_float(w) for w in weight]
                te, unet, te2, weight = parts[0], parts[1], parts[2] if len(parts) == 3 else None, None
            ad = live.add(name, source, weight=None if weight is None else _float(weight), te=te, unet=unet, te2=te2)
            self._emit(Event("add", f"{ad.label()} from {ad.source}", time.perf_counter() - started))
        for name, source in (step.get("swap") or {}).items():
            started = time.perf_counter()
            ad = live.swap(name, source)
            self._emit(Event("swap", f"{name} <- {ad.source}", time.perf_counter() - started))
        for name in step.get("remove") or []:
            live.remove(name)
            self._emit(Event("remove", name))
        for key in ("enable", "disable"):
            for name in step.get(key) or []:
                live.enable(name, key == "enable")
                self._emit(Event(key, name))
        if step.get("weights"):
            started = time.perf_counter()
            live.set_weights({k: (v if not isinstance(v, list) else tuple(v)) for k, v in step["weights"].items()})
            self._emit(Event("weight", ", ".join(live.adapter(n).label() for n in step["weights"]),
                             time.perf_counter() - started))
        self._settings(step)
        if step.get("prompt"):
            self.render(str(step["prompt"]), out=step.get("out"))
        if step.get("quit"):
            self.quit = True

    # -------------------------------------------------------------- summary

    def summary(self) -> dict[str, Any]:
        renders = [e for e in self.events if e.kind == "render"]
        swaps = [e for e in self.events if e.kind == "swap"]
        weights = [e for e in self.events if e.kind == "weight"]
        stats = self.live.summary()["stats"]

        def mean(xs: list[float]) -> float | None:
            return round(sum(xs) / len(xs), 4) if xs else None

        return {
            "images": len(renders),
            "base_loads": stats["base_loads"],
            "seconds_per_image": mean([e.seconds for e in renders]),
            "seconds_per_swap": mean([e.seconds for e in swaps]),
            "seconds_per_weight_change": mean([e.seconds for e in weights]),
            "errors": sum(1 for e in self.events if e.kind == "error"),
            "stats": stats,
        }


def load_script(path: str | Path) -> tuple[str, Any]:
    """``("json", data)`` or ``("lines", [lines])`` from a script file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{p}: cannot read the script ({exc})") from None
    stripped = text.lstrip()
    if p.suffix.lower() == ".json" or stripped.startswith(("[", "{")):
        try:
            return "json", json.loads(text)
        except ValueError as exc:
            raise UsageError(f"{p}: not valid JSON ({exc})") from None
    return "lines", text.splitlines()


def _float(text: Any) -> float:
    import math

    try:
        v = float(text)
    except (TypeError, ValueError):
        raise UsageError(f"'{text}' is not a number") from None
    if not math.isfinite(v):
        raise UsageError(f"'{text}' is not a finite number")
    return v


def _int(text: Any) -> int:
    try:
        return int(text)
    except (TypeError, ValueError):
        raise UsageError(f"'{text}' is not an integer") from None


def _need(args: list[str], n: int, usage: str) -> None:
    if len(args) != n:
        raise UsageError(usage)
