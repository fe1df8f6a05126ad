"""A1111 prompt syntax for LoRAs: ``<lora:NAME:WEIGHT>`` and ``<lora:NAME:TE:UNET>``.

As AUTOMATIC1111's built-in Lora extension reads it
(``extensions-builtin/Lora/extra_networks_lora.py``):

- ``<lora:NAME>`` weight 1; ``<lora:NAME:W>`` text encoder and UNet both ``W``;
  ``<lora:NAME:TE:UNET>`` separate weights (``TE`` for both text encoders of an
  SDXL base, as A1111 applies it); a third number (``DYN``, the dynamic
  LoRA dimension) is accepted and ignored; named forms ``te=``, ``unet=``,
  ``dyn=`` work in any order. ``<lyco:...>`` (the LyCORIS extension) means the same.
- lorahub's one addition: ``te2=W`` gives SDXL's second text encoder its own
  weight (default: ``TE``); A1111 ignores named parameters it does not know.
- Several tags per prompt; the same name twice: the last tag wins.
- The tags are removed from the text the text encoder sees.
- ``NAME`` may itself contain ``:`` (``ns/repo:file.safetensors``): the parts up
  to the first number or ``key=`` belong to the name.

No torch here: the CLI and the Space parse prompts without loading anything.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from ..errors import UsageError

TAG_RE = re.compile(r"<(lora|lyco):([^<>]+)>", re.IGNORECASE)
_NAMED = re.compile(r"^\s*(te2|te|unet|dyn)\s*=\s*(.+?)\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class LoraTag:
    """One adapter request: a name and its text-encoder and UNet weights (``te2``: SDXL's second text
    encoder's, when it differs from ``te``)."""

    name: str
    te: float = 1.0
    unet: float = 1.0
    dyn: int | None = None
    text: str = ""  # the tag as written (prompts) or the spec (CLI)
    te2: float | None = None

    @property
    def weights(self) -> tuple[float, float, float | None]:
        """``(te, unet, te2)`` as :meth:`lorahub.pipeline.live.LivePipeline.set_weights` takes them."""
        return self.te, self.unet, self.te2

    @property
    def weight(self) -> float:
        """One number for displays: the UNet weight."""
        return self.unet

    def label(self) -> str:
        if self.te2 is not None and self.te2 != self.te:
            return f"{self.name}:te={self.te:g}:unet={self.unet:g}:te2={self.te2:g}"
        if self.te == self.unet:
            return f"{self.name}:{self.unet:g}"
        return f"{self.name}:{self.te:g}:{self.unet:g}"


def _number(text: str) -> float | None:
    """The number ``text`` spells (``nan``/``inf`` included: they are refused later), else None."""
    try:
        return float(text)
    except ValueError:
        return None


def _finite(value: float, spec: str, what: str) -> float:
    if not math.isfinite(value):
        raise UsageError(f"{what} '{spec}': weight {value} is not a finite number")
    return value


def parse_spec(spec: str, *, what: str = "adapter") -> LoraTag:
    """``NAME``, ``NAME:W``, ``NAME:TE:UNET`` (or named ``te=``/``unet=``/``dyn=``/``te2=``) -> :class:`LoraTag`."""
    parts = [p for p in spec.split(":")]
    if not parts or not parts[0].strip():
        raise UsageError(f"{what} '{spec}': no name")
    # the name runs up to the first part that is a number or key=value
    cut = len(parts)
    for i in range(1, len(parts)):
        if _number(parts[i].strip()) is not None or _NAMED.match(parts[i]):
            cut = i
            break
    name = ":".join(parts[:cut]).strip()
    rest = parts[cut:]
    positional: list[float] = []
    named: dict[str, float] = {}
    for part in rest:
        m = _NAMED.match(part)
        if m:
            value = _number(m.group(2))
            if value is None:
                raise UsageError(f"{what} '{spec}': {m.group(1)}={m.group(2)} is not a number")
            named[m.group(1).lower()] = value
            continue
        value = _number(part.strip())
        if value is None:
            raise UsageError(f"{what} '{spec}': '{part}' is not a weight", hint="weights are numbers: NAME:0.8 or NAME:TE:UNET")
        positional.append(value)
    if len(positional) > 3:
        raise UsageError(f"{what} '{spec}': at most three numbers (TE, UNET, DYN)")
    te = _finite(named.get("te", positional[0] if positional else 1.0), spec, what)
    unet = _finite(named.get("unet", positional[1] if len(positional) > 1 else te), spec, what)
    dyn_value = named.get("dyn", positional[2] if len(positional) > 2 else None)
    if dyn_value is not None:
        _finite(dyn_value, spec, what)
    dyn = int(dyn_value) if dyn_value is not None else None
    te2 = named.get("te2")
    if te2 is not None:
        te2 = float(_finite(te2, spec, what))
    if not name:
        raise UsageError(f"{what} '{spec}': no name")
    return LoraTag(name=name, te=float(te), unet=float(unet), dyn=dyn, text=spec, te2=te2)


def parse_prompt(prompt: str) -> tuple[str, list[LoraTag]]:
    """Split ``prompt`` into its text (tags removed, spacing tidied) and its LoRA tags (last one per name wins)."""
    tags: dict[str, LoraTag] = {}
    for m in TAG_RE.finditer(prompt):
        tag = parse_spec(m.group(2), what="prompt tag")
        tag = LoraTag(tag.name, tag.te, tag.unet, tag.dyn, m.group(0), tag.te2)
        tags.pop(tag.name, None)
        tags[tag.name] = tag
    text = TAG_RE.sub(" ", prompt)
    text = re.sub(r"[ \t]+", " ", text)
    text = re.sub(r"\s+([,.;])", r"\1", text)
    text = re.sub(r"([,;])(\s*[,;])+", r"\1", text)
    text = text.strip().strip(",;").strip()
    return text, list(tags.values())


def format_tags(tags: list[LoraTag]) -> str:
    """The tags back in A1111 syntax (for infotext and logs)."""
    out = []
    for t in tags:
        if t.te2 is not None and t.te2 != t.te:
            out.append(f"<lora:{t.name}:te={t.te:g}:unet={t.unet:g}:te2={t.te2:g}>")
        elif t.te == t.unet:
            out.append(f"<lora:{t.name}:{t.unet:g}>")
        else:
            out.append(f"<lora:{t.name}:{t.te:g}:{t.unet:g}>")
    return " ".join(out)
