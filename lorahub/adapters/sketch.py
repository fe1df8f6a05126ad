"""A sketch of what an adapter does: its weight change ΔW, module by module, in a few bytes (numpy only).

For a LoRA module ``ΔW = up · down · (alpha / rank)`` (a convolution's factors flattened to
``[out, r]`` and ``[r, in·kh·kw]``) the sketch is ``Lᵀ · ΔW · R`` computed as ``(Lᵀ·up) · (down·R)``,
never forming ΔW: ``L`` (``[out, K]``) and ``R`` (``[in, K]``) are Gaussian matrices seeded by the
side's width alone, so every adapter of every layout, dtype and rank is projected the same way. By
Johnson-Lindenstrauss the inner product of two sketches estimates the Frobenius inner product of the two
ΔW. The exact Frobenius norm of each module (``trace((upᵀup)(down·downᵀ))``, a rank x rank product) is
kept beside it: the **energy** that weights each module in :func:`compare`.

Module names are normalised to one spelling (:func:`module_key`): the kohya spelling of the diffusers
module path (``unet`` ``down_blocks_0_attentions_0_..._to_q``), whatever the file's layout (kohya,
diffusers, PEFT prefixed or raw, the old attention-processor keys, LyCORIS). LyCORIS LoHa modules become
exact LoRA factors (Khatri-Rao products), LoKr and full (``diff``) modules are projected from the dense
update; Tucker cores (``lora_mid``, ``hada_t1``, ``lokr_t2``) and modules that do not add a weight change
((IA)^3, OFT, norms) are left out and counted in :attr:`Sketch.skipped`.

A sketch serialises to ``len(modules) * 40 + 146`` bytes (fp16 sketches): 10.5 KiB for a full SD 1.5
LoRA (264 modules). :attr:`Sketch.vector` is a 64-value summary of the whole adapter (each module's sketch projected by a
matrix seeded by its name, summed): its cosine with another adapter's estimates the cosine of the two
concatenated ΔW, which is what a registry compares first across many adapters.
"""

from __future__ import annotations

import hashlib
import math
import os
import struct
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from ..errors import LorahubError
from .formats import Module, analyze
from .header import SafetensorsHeader, read_header

#: Bumped when the projection or the serialisation changes (stored sketches of another version are ignored).
VERSION = 1
#: Columns of the projections on each side: a module's sketch has K x K values.
K = 4
#: Values of the adapter-wide vector.
VECTOR_DIM = 64
_MAGIC = b"LHS1"
_HEAD = struct.Struct("<4sHHHI")  # magic, version, K, vector dim, modules
_SEED = 0x10AA_5EED

_NP_DTYPES = {"F32": "<f4", "F16": "<f2", "F64": "<f8"}


class SketchError(LorahubError):
    """The adapter's weights cannot be sketched (unreadable tensors, no LoRA module)."""


# --------------------------------------------------------------------------- module names

_PREFIXES = (
    ("lora_unet_", "unet"),
    ("lora_te1_", "text_encoder"),
    ("lora_te2_", "text_encoder_2"),
    ("lora_te3_", "text_encoder_3"),
    ("lora_te_", "text_encoder"),
    ("lora_transformer_", "transformer"),
    ("text_encoder_2.", "text_encoder_2"),
    ("text_encoder_3.", "text_encoder_3"),
    ("text_encoder.", "text_encoder"),
    ("unet.", "unet"),
    ("transformer.", "transformer"),
    ("base_model.model.", "unet"),
    ("diffusion_model.", "transformer"),
)


@lru_cache(maxsize=65536)
def module_key(name: str) -> str:
    """One spelling of a module's name for every layout: ``component/path_with_underscores``.

    ``lora_unet_down_blocks_0_..._to_out_0``, ``unet.down_blocks.0....to_out.0`` and the old
    ``unet.down_blocks.0....processor.to_out_lora`` are all ``unet/down_blocks_0_..._to_out_0``;
    ``lora_te_text_model_encoder_layers_0_self_attn_q_proj`` and
    ``text_encoder.encoder.layers.0.self_attn.q_proj`` are ``text_encoder/text_model_encoder_...``.
    """
    component, rest = "unet", name
    for prefix, comp in _PREFIXES:
        if name.startswith(prefix):
            component, rest = comp, name[len(prefix):]
            break
    if ".processor." in rest or rest.endswith("_lora"):
        rest = _attnproc(rest, component)
    for suffix in (".lora_linear_layer", ".lora"):
        if rest.endswith(suffix):
            rest = rest[: -len(suffix)]
    flat = rest.replace(".", "_")
    if component.startswith("text_encoder") and flat.startswith(("encoder_", "embeddings_", "final_layer_norm")):
        flat = "text_model_" + flat
    return f"{component}/{flat}"


def _attnproc(rest: str, component: str) -> str:
    """The old diffusers attention-processor spellings as module paths."""
    rest = rest.replace(".processor.", ".")
    names = {"to_q_lora": "to_q", "to_k_lora": "to_k", "to_v_lora": "to_v", "to_out_lora": "to_out.0"}
    if component != "unet":
        names = {"to_q_lora": "q_proj", "to_k_lora": "k_proj", "to_v_lora": "v_proj", "to_out_lora": "out_proj"}
    head, _, last = rest.rpartition(".")
    if last in names:
        return f"{head}.{names[last]}" if head else names[last]
    return rest


@lru_cache(maxsize=65536)
def key_hash(key: str) -> int:
    """32 bits of a module key (how the serialised sketch names its modules)."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=4).digest(), "little")


# --------------------------------------------------------------------------- projections


@lru_cache(maxsize=256)
def _side(width: int, side: int) -> np.ndarray:
    """The ``[width, K]`` Gaussian projection of one side (0: output, 1: input) of every layer that wide."""
    rng = np.random.default_rng([_SEED, side, width])
    return rng.standard_normal((width, K)).astype(np.float64) / math.sqrt(K)


@lru_cache(maxsize=8192)
def _mixer(h: int) -> np.ndarray:
    """The ``[K*K, VECTOR_DIM]`` matrix that places the sketch of the module with key hash ``h`` in the vector."""
    rng = np.random.default_rng([_SEED, 2, h])
    return (rng.standard_normal((K * K, VECTOR_DIM)) / math.sqrt(VECTOR_DIM)).astype(np.float32)


@lru_cache(maxsize=64)
def _mixers(order: tuple[int, ...]) -> np.ndarray:
    """The mixers of the modules of key hashes ``order``, stacked ``[n * K*K, VECTOR_DIM]`` in float64 (the
    adapters of one layout share it)."""
    return np.concatenate([_mixer(h) for h in order]).astype(np.float64)


def project_factors(up: np.ndarray, down: np.ndarray, scale: float = 1.0) -> tuple[np.ndarray, float]:
    """``(Lᵀ·up·down·R·scale as K*K values, ‖up·down·scale‖_F)`` without forming ``up·down``.

    ``up`` is ``[out, r]`` (or ``[out, r, 1, 1]``), ``down`` ``[r, in]`` or ``[r, in, kh, kw]``.
    """
    up = np.asarray(up, dtype=np.float64).reshape(up.shape[0], -1)
    down = np.asarray(down, dtype=np.float64).reshape(down.shape[0], -1)
    if up.shape[1] != down.shape[0]:
        raise SketchError(f"factors do not chain: up {tuple(up.shape)}, down {tuple(down.shape)}")
    left = _side(up.shape[0], 0).T @ up  # [K, r]
    right = down @ _side(down.shape[1], 1)  # [r, K]
    s = (left @ right) * scale
    energy = float(np.einsum("ij,ij->", up.T @ up, down @ down.T)) * scale * scale
    return s.reshape(-1), math.sqrt(max(energy, 0.0))


def project_dense(delta: np.ndarray, scale: float = 1.0) -> tuple[np.ndarray, float]:
    """The same for an update given whole (``[out, in, ...]``)."""
    d = np.asarray(delta, dtype=np.float64).reshape(delta.shape[0], -1)
    s = (_side(d.shape[0], 0).T @ d @ _side(d.shape[1], 1)) * scale
    return s.reshape(-1), float(np.linalg.norm(d)) * abs(scale)


# --------------------------------------------------------------------------- the sketch


@dataclass
class Sketch:
    """Per module (sorted by key hash): key hash, Frobenius norm of ΔW, unit sketch; and the unit vector."""

    hashes: np.ndarray  # uint32 [n]
    norms: np.ndarray  # float32 [n]
    units: np.ndarray  # float16 [n, K*K]
    vector: np.ndarray  # float16 [VECTOR_DIM], unit (zero for an adapter with no weight change)
    skipped: int = 0

    @property
    def modules(self) -> int:
        return int(self.hashes.shape[0])

    @property
    def energy(self) -> float:
        return float(np.sum(self.norms.astype(np.float64) ** 2))

    def to_bytes(self) -> bytes:
        n = self.modules
        return b"".join([
            _HEAD.pack(_MAGIC, VERSION, K, VECTOR_DIM, n),
            struct.pack("<I", self.skipped),
            self.vector.astype("<f2").tobytes(),
            self.hashes.astype("<u4").tobytes(),
            self.norms.astype("<f4").tobytes(),
            self.units.astype("<f2").tobytes(),
        ])

    @classmethod
    def from_bytes(cls, raw: bytes) -> Sketch:
        if len(raw) < _HEAD.size + 4:
            raise SketchError("stored sketch is truncated")
        magic, version, k, dim, n = _HEAD.unpack_from(raw)
        if magic != _MAGIC or version != VERSION or k != K or dim != VECTOR_DIM:
            raise SketchError("stored sketch is of another version")
        if len(raw) != _HEAD.size + 4 + 2 * dim + n * (4 + 4 + 2 * k * k):
            raise SketchError("stored sketch has the wrong length")
        (skipped,) = struct.unpack_from("<I", raw, _HEAD.size)
        pos = _HEAD.size + 4
        vector = np.frombuffer(raw, "<f2", dim, pos)
        pos += 2 * dim
        hashes = np.frombuffer(raw, "<u4", n, pos)
        pos += 4 * n
        norms = np.frombuffer(raw, "<f4", n, pos)
        pos += 4 * n
        units = np.frombuffer(raw, "<f2", n * k * k, pos).reshape(n, k * k)
        return cls(hashes=hashes, norms=norms, units=units, vector=vector, skipped=skipped)


#: Modules picked per adapter for the candidates of ``dupes --near`` (min-hashing over module names).
PICKS = 8
_PICK_SEEDS = np.random.default_rng([_SEED, 3]).integers(1, 2**63, PICKS, dtype=np.uint64)


def _mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser (a bijection of uint64 that scrambles every bit into every other)."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))
#: Bytes of a summary: the vector, then the picks' key hashes (uint32) and unit sketches (fp16).
SUMMARY_BYTES = 2 * VECTOR_DIM + PICKS * (4 + 2 * K * K)


def picks(s: Sketch) -> tuple[np.ndarray, np.ndarray]:
    """``(key hashes uint32 [PICKS], unit sketches fp16 [PICKS, K*K])``: for each of :data:`PICKS` hash
    functions of the module key hashes, the module with the least value among those with a weight change.

    Min-hashing: two adapters of which one holds a share ``J`` of the other's modules (a module subset)
    pick the same module with probability ``J`` for each function, and there their unit sketches agree
    (the same weights); two unrelated adapters of one layout pick the same modules with other sketches.
    An adapter with no weight change picks nothing (zeros)."""
    live = np.nonzero(s.norms > 0)[0]
    if not live.size:
        return np.zeros(PICKS, np.uint32), np.zeros((PICKS, K * K), np.float16)
    h = s.hashes[live].astype(np.uint64)
    scores = _mix64(h[None, :] ^ _PICK_SEEDS[:, None])  # [PICKS, live]
    chosen = live[np.argmin(scores, axis=1)]
    return s.hashes[chosen].astype(np.uint32), s.units[chosen].astype(np.float16)


def summary(s: Sketch) -> bytes:
    """What a registry keeps beside a serialised sketch, read alone for ``dupes --near`` candidates
    (:data:`SUMMARY_BYTES`): the unit vector, then the :func:`picks`."""
    ph, pu = picks(s)
    return s.vector.astype("<f2").tobytes() + ph.astype("<u4").tobytes() + pu.astype("<f2").tobytes()


def summary_parts(raw: bytes) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """``(vector, pick hashes or None, pick units or None)`` of a stored summary (rows written before picks
    existed hold the vector alone)."""
    vector = np.frombuffer(raw, "<f2", VECTOR_DIM)
    if len(raw) != SUMMARY_BYTES:
        return vector, None, None
    pos = 2 * VECTOR_DIM
    hashes = np.frombuffer(raw, "<u4", PICKS, pos)
    units = np.frombuffer(raw, "<f2", PICKS * K * K, pos + 4 * PICKS).reshape(PICKS, K * K)
    return vector, hashes, units


def stored_parts(raw: bytes) -> tuple[int, int, bytes]:
    """``(version, modules, summary bytes)`` of a serialised sketch (what a registry row keeps beside it:
    :func:`summary`)."""
    if len(raw) < _HEAD.size + 4 + 2 * VECTOR_DIM:
        raise SketchError("sketch is truncated")
    magic, version, _k, dim, n = _HEAD.unpack_from(raw)
    if magic != _MAGIC:
        raise SketchError("not a lorahub sketch")
    if version != VERSION:
        start = _HEAD.size + 4
        return version, n, raw[start : start + 2 * dim]
    return version, n, summary(Sketch.from_bytes(raw))


def vector_of(raw: bytes) -> np.ndarray:
    """The adapter-wide unit vector of a serialised sketch, without reading the modules."""
    magic, version, k, dim, _n = _HEAD.unpack_from(raw)
    if magic != _MAGIC or version != VERSION or dim != VECTOR_DIM:
        raise SketchError("stored sketch is of another version")
    return np.frombuffer(raw, "<f2", dim, _HEAD.size + 4)


def build(projected: dict[str, tuple[np.ndarray, float]], skipped: int = 0) -> Sketch:
    """A :class:`Sketch` from ``{module key: (K*K sketch, Frobenius norm)}``."""
    by_hash: dict[int, tuple[np.ndarray, float]] = {}
    for key, (s, norm) in projected.items():
        h = key_hash(key)
        if h in by_hash:  # two keys of one adapter on the same 32 bits: keep the first (vanishingly rare)
            skipped += 1
            continue
        by_hash[h] = (s, norm)
    order = sorted(by_hash)
    n = len(order)
    units = np.zeros((n, K * K), dtype=np.float64)
    norms = np.zeros(n, dtype=np.float64)
    if n:
        raw = np.stack([np.asarray(by_hash[h][0], dtype=np.float64).reshape(-1) for h in order])
        given = np.asarray([by_hash[h][1] for h in order], dtype=np.float64)
        lengths = np.linalg.norm(raw, axis=1)
        live = (lengths > 0) & (given > 0)
        units[live] = raw[live] / lengths[live, None]
        norms[live] = given[live]
        mixers = _mixers(tuple(order))  # [n * K*K, VECTOR_DIM]
        vector = (norms[:, None] * units).reshape(-1) @ mixers
    else:
        vector = np.zeros(VECTOR_DIM)
    length = float(np.linalg.norm(vector))
    if length > 0:
        vector /= length
    return Sketch(
        hashes=np.asarray(order, dtype=np.uint32),
        norms=norms.astype(np.float32),
        units=units.astype(np.float16),
        vector=vector.astype(np.float16),
        skipped=skipped,
    )


# --------------------------------------------------------------------------- reading files

#: Bytes per read when a file is sketched on its own (:func:`sketch_header`).
READ_CHUNK = 1 << 20
#: A LyCORIS or full module is sketched only when its tensors hold at most this many bytes.
_OTHER_MAX = 256 * 1024 * 1024
_FLOATS = frozenset(["F16", "BF16", "F32", "F64"])
_ITEM = {"F16": 2, "BF16": 2, "F32": 4, "F64": 8}
_F16_SCALE = np.float32(2.0**112)
_F16_MASK = np.int32(~0x70000000)
#: A batch's Gram trace from which it may hold a value of at least 2^16: no finite F16 value is that large.
_F16_SUSPECT = float(2**32)
_UP, _DOWN, _KEEP = 0, 1, 2
#: Bytes a :class:`StreamSketch` gathers before it reduces the tensors they hold.
WINDOW = 16 << 20
#: Values converted and reduced at once (tensors of one role and shape): a float32 batch stays in cache.
_BATCH = 1 << 18


def floats(buf: Any, offset: int, count: int, dtype: str, *, check: bool = True) -> np.ndarray:
    """``count`` little-endian values of the safetensors ``dtype`` at byte ``offset`` of ``buf`` as float32
    (F32: a view of ``buf``, no copy).

    F16 is converted by its bits, exactly: sign-extended to 32 bits and shifted into float32's place, the
    three extra copies of the sign masked off, then multiplied by 2^112, which rebiases the exponent and
    places subnormals too (3-4x numpy's ``astype``, which converts value by value). Infinities and NaN
    (which would come out as values of at least 65536) go through ``astype``; ``check=False`` leaves that
    to the caller (:class:`StreamSketch` looks at the Grams it computes anyway).
    """
    if dtype == "F32":
        return np.frombuffer(buf, "<f4", count, offset)
    if dtype == "F16":
        v = np.frombuffer(buf, "<i2", count, offset).astype(np.int32)
        v <<= 13
        v &= _F16_MASK
        f = v.view(np.float32)
        f *= _F16_SCALE
        if check and count and (f.max() >= 65536 or f.min() <= -65536):
            return np.frombuffer(buf, "<f2", count, offset).astype(np.float32)
        return f
    if dtype == "BF16":
        u = np.frombuffer(buf, "<u2", count, offset).astype(np.uint32)
        u <<= 16
        return u.view(np.float32)
    if dtype == "F64":
        return np.frombuffer(buf, "<f8", count, offset).astype(np.float32)
    raise SketchError(f"dtype {dtype} is not a float")


@lru_cache(maxsize=256)
def _side32(width: int, side: int) -> np.ndarray:
    """:func:`_side` in float32; the output side transposed (``[K, width]``), both contiguous."""
    s = _side(width, side).astype(np.float32)
    return np.ascontiguousarray(s.T) if side == 0 else s


class _Planned:
    """One tensor the sketch reads: its byte range in the data region, dtype, 2-D shape, module slot, role."""

    __slots__ = ("name", "begin", "end", "dtype", "shape", "slot", "role")

    def __init__(self, t: Any, shape: tuple[int, int] | None, slot: int, role: int) -> None:
        self.name = t.name
        self.begin, self.end, self.dtype = t.begin, t.end, t.dtype
        self.shape = shape
        self.slot = slot
        self.role = role


def _reduce(x: np.ndarray, role: int, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """``(projections, Grams)`` of a batch of factors: ups ``[g, out, r]`` to ``Lᵀ·up`` ``[g, K, r]`` and
    ``upᵀ·up``; downs ``[g, r, in]`` to ``down·R`` ``[g, r, K]`` and ``down·downᵀ``."""
    if role == _UP:
        return np.matmul(_side32(shape[0], 0), x), np.matmul(x.transpose(0, 2, 1), x)
    return np.matmul(x, _side32(shape[1], 1)), np.matmul(x, x.transpose(0, 2, 1))


class StreamSketch:
    """The sketch of an adapter computed from its data region, fed in order in slices of any size.

    This is how ``lorahub index`` sketches a file inside its fingerprint pass
    (:func:`lorahub.adapters.fingerprint.fingerprint_record` ``sink=``): the bytes read once for the
    hashes are also the sketch's, no second read. The slices are gathered in a window of up to
    :data:`WINDOW` bytes (a whole 10 MB SD 1.5 LoRA is one window); then, for the tensors of one role and
    shape at once, in cache-sized batches, each LoRA factor is converted to float32 and reduced: ``up`` to
    ``Lᵀ·up`` and its Gram ``upᵀ·up``, ``down`` to ``down·R`` and ``down·downᵀ``; :meth:`result` chains
    them. LyCORIS and full modules keep their tensors' bytes and are projected at the end. :meth:`update`
    never raises: a failure is kept and raised by :meth:`result`.
    """

    def __init__(self, header: SafetensorsHeader, analysis: Any = None) -> None:
        analysis = analysis or analyze(header)
        self.path = header.path
        self.data_len = header.data_len
        self.pos = 0
        self.error: str | None = None
        self._order: list[tuple[str, str, Any]] = []
        self._scales: list[float] = []
        self._kept: dict[str, bytes] = {}
        self._out: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]] = []  # (role, slots, projections, Grams)
        plan: list[_Planned] = []
        data_len = self.data_len

        def flat(t: Any) -> tuple[int, int] | None:
            """The 2-D shape of a readable float tensor of at least 2 dimensions, else None."""
            shape = t.shape
            if t.dtype not in _FLOATS or len(shape) < 2 or not 0 <= t.begin <= t.end <= data_len:
                return None
            rest = math.prod(shape[1:])
            if shape[0] * rest * _ITEM[t.dtype] != t.end - t.begin:
                return None
            return shape[0], rest

        for mod in analysis.modules.values():
            if mod.kind in ("orphan", "set"):
                continue
            key = module_key(mod.name)
            p = mod.parts
            if mod.kind in ("lora", "cloneofsimo") and "mid" not in p and "up" in p and "down" in p:
                us, ds = flat(p["up"]), flat(p["down"])
                if us is not None and ds is not None and us[1] == ds[0]:
                    slot = len(self._scales)
                    self._scales.append(mod.scale if mod.scale is not None else 1.0)
                    plan += [_Planned(p["up"], us, slot, _UP), _Planned(p["down"], ds, slot, _DOWN)]
                    self._order.append((key, "lora", slot))
                else:
                    self._order.append((key, "skip", None))
            elif mod.kind in ("loha", "lokr", "full") and sum(t.nbytes for t in p.values()) <= _OTHER_MAX:
                plan += [_Planned(t, None, -1, _KEEP) for t in p.values()
                         if t.dtype in _FLOATS and t.expected_nbytes == t.nbytes and 0 <= t.begin <= t.end <= data_len]
                self._order.append((key, "other", mod))
            else:
                self._order.append((key, "skip", None))
        plan.sort(key=lambda t: t.begin)
        self._plan = plan
        self._next = 0
        self._buf = bytearray()
        self._base = 0  # data-region offset of self._buf[0]

    @property
    def wanted(self) -> bool:
        """Whether any tensor is to be read (an adapter with none has nothing to sketch)."""
        return bool(self._plan)

    @property
    def complete(self) -> bool:
        """Fed the whole data region."""
        return self.pos >= self.data_len

    def update(self, view: Any) -> None:
        """The next ``len(view)`` bytes of the data region."""
        n = len(view)
        if self.error is None:
            try:
                if self._next < len(self._plan):
                    if not self._buf:  # skip bytes before the next tensor wanted
                        skip = min(n, max(0, self._plan[self._next].begin - self.pos))
                        self._base = self.pos + skip
                        view = view[skip:]
                    self._buf += view
                    if len(self._buf) >= WINDOW:
                        self._flush()
            except Exception as exc:  # noqa: BLE001 - kept for result()
                self.error = str(exc) or type(exc).__name__
        self.pos += n

    def _flush(self) -> None:
        """Reduce every planned tensor the window holds whole; keep the bytes from the first one it does not."""
        buf, base = self._buf, self._base
        end = base + len(buf)
        plan = self._plan
        i = self._next
        groups: dict[tuple[int, str, tuple[int, int] | None], list[_Planned]] = {}
        while i < len(plan) and plan[i].end <= end:
            t = plan[i]
            if t.role == _KEEP:
                self._kept[t.name] = bytes(buf[t.begin - base : t.end - base])
            else:
                groups.setdefault((t.role, t.dtype, t.shape), []).append(t)
            i += 1
        self._next = i
        if groups:
            raw = np.frombuffer(buf, np.uint8)
            for (role, dtype, shape), members in groups.items():
                size = shape[0] * shape[1]
                per = max(1, _BATCH // size)
                for s in range(0, len(members), per):
                    batch = members[s : s + per]
                    if len(batch) == 1:
                        flat_ = raw[batch[0].begin - base : batch[0].end - base]
                    else:
                        flat_ = np.concatenate([raw[t.begin - base : t.end - base] for t in batch])
                    x = floats(flat_, 0, len(batch) * size, dtype, check=False).reshape(len(batch), *shape)
                    proj, gram = _reduce(x, role, shape)
                    if dtype == "F16" and np.einsum("gii->", gram) >= _F16_SUSPECT:
                        # a value of at least 2^16 (an F16 infinity or NaN by bits): numpy's conversion, exactly
                        x = np.frombuffer(flat_, "<f2").astype(np.float32).reshape(len(batch), *shape)
                        proj, gram = _reduce(x, role, shape)
                    slots = np.fromiter((t.slot for t in batch), np.int64, len(batch))
                    self._out.append((role, slots, proj, gram))
                    del x, flat_
            del raw
        keep_from = plan[i].begin if i < len(plan) else end
        cut = min(max(0, keep_from - base), len(buf))
        del buf[:cut]
        self._base = base + cut

    def result(self) -> Sketch:
        """The sketch (raises :class:`SketchError` when the adapter cannot be sketched)."""
        if self.error is None and self._plan and self.complete:
            try:
                self._flush()
            except Exception as exc:  # noqa: BLE001 - reported below
                self.error = str(exc) or type(exc).__name__
        if self.error is not None:
            raise SketchError(f"{self.path}: {self.error}")
        if self._plan and not self.complete:
            raise SketchError(f"{self.path}: the sketch was fed {self.pos} of {self.data_len} bytes")
        lora = self._chain()
        projected: dict[str, tuple[np.ndarray, float]] = {}
        skipped = 0
        reader = _Kept(self._kept)
        for key, kind, ref in self._order:
            if key in projected:
                skipped += 1
                continue
            got = None
            if kind == "lora":
                got = lora.get(ref)
            elif kind == "other":
                try:
                    got = _module(reader, ref)
                except (ValueError, SketchError):
                    got = None
            if got is None:
                skipped += 1
                continue
            projected[key] = got
        if not projected:
            raise SketchError(f"{self.path}: no LoRA module to sketch")
        return build(projected, skipped)

    def _chain(self) -> dict[int, tuple[np.ndarray, float]]:
        """``{slot: (K*K sketch, norm)}`` of the LoRA modules: ``(Lᵀ·up)·(down·R)`` and ``trace(Gu·Gd)``."""
        by_rank: dict[tuple[int, int], list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}
        for role, slots, proj, gram in self._out:
            by_rank.setdefault((role, gram.shape[1]), []).append((slots, proj, gram))
        out: dict[int, tuple[np.ndarray, float]] = {}
        scales = np.asarray(self._scales, dtype=np.float64)
        for (role, r), ups in by_rank.items():
            if role != _UP or (_DOWN, r) not in by_rank:
                continue
            with np.errstate(invalid="ignore", over="ignore"):  # a NaN module weighs nothing (build)
                self._chain_rank(ups, by_rank[(_DOWN, r)], scales, out)
        return out

    @staticmethod
    def _chain_rank(ups: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
                    downs: list[tuple[np.ndarray, np.ndarray, np.ndarray]], scales: np.ndarray,
                    out: dict[int, tuple[np.ndarray, float]]) -> None:
        """:meth:`_chain` for the factors of one rank."""
        su = np.concatenate([u[0] for u in ups])
        sd = np.concatenate([d[0] for d in downs])
        common, iu, id_ = np.intersect1d(su, sd, assume_unique=True, return_indices=True)
        if not common.size:
            return
        left = np.concatenate([u[1] for u in ups])[iu]
        right = np.concatenate([d[1] for d in downs])[id_]
        gu = np.concatenate([u[2] for u in ups])[iu].astype(np.float64)
        gd = np.concatenate([d[2] for d in downs])[id_].astype(np.float64)
        sc = scales[common]
        sk_ = np.matmul(left, right).astype(np.float64).reshape(common.size, -1) * sc[:, None]
        norms = np.sqrt(np.maximum(np.einsum("gij,gij->g", gu, gd) * sc * sc, 0.0))
        for g, slot in enumerate(common.tolist()):
            out[slot] = (sk_[g], float(norms[g]))


class _Kept:
    """The tensors of LyCORIS and full modules, kept as bytes while the data region streamed past."""

    def __init__(self, kept: dict[str, bytes]) -> None:
        self.kept = kept

    def get(self, mod: Module, part: str) -> np.ndarray:
        t = mod.parts[part]
        raw = self.kept.get(t.name)
        if raw is None:
            raise SketchError(f"tensor '{t.name}' cannot be read")
        return floats(raw, 0, t.numel, t.dtype).reshape(t.shape)


def _module(r: _Kept, mod: Module) -> tuple[np.ndarray, float] | None:
    """LyCORIS and full modules (plain LoRA modules are reduced factor by factor as they stream)."""
    p = mod.parts
    scale = mod.scale if mod.scale is not None else 1.0
    if mod.kind == "loha":
        if "hada_t1" in p or "hada_t2" in p:
            return None
        w1a, w1b, w2a, w2b = (r.get(mod, n) for n in ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b"))
        w1a, w2a = w1a.reshape(w1a.shape[0], -1), w2a.reshape(w2a.shape[0], -1)
        w1b, w2b = w1b.reshape(w1b.shape[0], -1), w2b.reshape(w2b.shape[0], -1)
        # (w1a·w1b) ⊙ (w2a·w2b) = Σ_ij (w1a_i ⊙ w2a_j)(w1b_i ⊙ w2b_j)ᵀ: exact factors of rank r1·r2
        up = (w1a[:, :, None] * w2a[:, None, :]).reshape(w1a.shape[0], -1)
        down = (w1b[:, None, :] * w2b[None, :, :]).reshape(-1, w1b.shape[1])
        return project_factors(up, down, scale)
    if mod.kind == "lokr":
        if "lokr_t2" in p:
            return None

        def side(name: str) -> np.ndarray:
            if f"lokr_{name}" in p:
                return r.get(mod, f"lokr_{name}")
            a, b = r.get(mod, f"lokr_{name}_a"), r.get(mod, f"lokr_{name}_b")
            return a.reshape(a.shape[0], -1) @ b.reshape(b.shape[0], -1)

        w1, w2 = side("w1"), side("w2")
        w1 = w1.reshape(w1.shape[0], -1)
        w2 = w2.reshape(w2.shape[0], -1)
        if w1.size * w2.size > 64_000_000:
            return None
        return project_dense(np.kron(w1, w2), scale)
    if mod.kind == "full" and "diff" in p:
        d = r.get(mod, "diff")
        if d.ndim < 2 or d.size > 64_000_000:
            return None
        return project_dense(d)
    return None


def sketch_header(header: SafetensorsHeader, analysis: Any = None) -> Sketch:
    """The sketch of the adapter whose header is ``header`` (its weights read from ``header.path``);
    ``analysis``: :func:`lorahub.adapters.formats.analyze` of it, when the caller has it already."""
    stream = StreamSketch(header, analysis)
    if stream.wanted:
        try:
            fd = os.open(header.path, os.O_RDONLY)
        except OSError as exc:
            raise SketchError(f"{header.path}: {exc.strerror or exc}") from None
        try:
            buf = bytearray(min(READ_CHUNK, max(1, header.data_len)))
            view = memoryview(buf)
            pos = 0
            while pos < header.data_len:
                want = min(len(buf), header.data_len - pos)
                got = os.preadv(fd, [view[:want]], header.data_start + pos)
                if got <= 0:
                    raise SketchError(f"{header.path}: the file ends before its tensors do")
                stream.update(view[:got])
                pos += got
            view.release()
        except OSError as exc:
            raise SketchError(f"{header.path}: {exc.strerror or exc}") from None
        finally:
            os.close(fd)
    return stream.result()


def sketch_file(path: str | os.PathLike[str]) -> Sketch:
    """The sketch of the adapter file ``path``."""
    return sketch_header(read_header(path))


# --------------------------------------------------------------------------- comparing


@dataclass(frozen=True)
class Comparison:
    """How the ΔW of two adapters agree.

    ``similarity``: cosine of the two ΔW over their common modules, each module weighted by its energy
    (``Σ ‖a‖‖b‖ cos / sqrt(Σ‖a‖² Σ‖b‖²)``); ``coverage_a``/``coverage_b``: the share of each adapter's
    energy in the common modules; ``scale``: ``‖b‖ / ‖a‖`` over the common modules.
    """

    similarity: float
    common: int
    coverage_a: float
    coverage_b: float
    scale: float

    @property
    def covered(self) -> float:
        """The larger coverage: 1 when one adapter's modules are all in the other."""
        return max(self.coverage_a, self.coverage_b)


def compare(a: Sketch, b: Sketch) -> Comparison:
    common, ia, ib = np.intersect1d(a.hashes, b.hashes, assume_unique=True, return_indices=True)
    na, nb = a.norms.astype(np.float64), b.norms.astype(np.float64)
    ea, eb = float(np.sum(na**2)), float(np.sum(nb**2))
    if common.size == 0 or ea <= 0 or eb <= 0:
        return Comparison(0.0, 0, 0.0, 0.0, 0.0)
    fa, fb = na[ia], nb[ib]
    cos = np.einsum("ij,ij->i", a.units[ia].astype(np.float64), b.units[ib].astype(np.float64))
    ca, cb = float(np.sum(fa**2)), float(np.sum(fb**2))
    if ca <= 0 or cb <= 0:
        return Comparison(0.0, int(common.size), 0.0, 0.0, 0.0)
    sim = float(np.sum(fa * fb * cos)) / math.sqrt(ca * cb)
    return Comparison(
        similarity=max(-1.0, min(1.0, sim)),
        common=int(common.size),
        coverage_a=ca / ea,
        coverage_b=cb / eb,
        scale=math.sqrt(cb / ca),
    )


#: Relation names, strongest first.
RELATIONS = ("identical-tensors", "module-subset", "rank-reduction", "scaled-copy", "layout-conversion",
             "dtype-change", "same-weights", "similar")


@dataclass(frozen=True)
class Facts:
    """What the registry knows of a file beside its sketch (any may be unknown)."""

    format: str | None = None
    dtype: str | None = None
    rank: int | None = None
    tensor_sha256: str | None = None


def relations(cmp: Comparison, a: Facts, b: Facts) -> list[str]:
    """Name how ``b`` relates to ``a`` (see :data:`RELATIONS`), from their comparison and facts."""
    if a.tensor_sha256 and a.tensor_sha256 == b.tensor_sha256:
        return ["identical-tensors"]
    out: list[str] = []
    if min(cmp.coverage_a, cmp.coverage_b) < 0.98:
        out.append("module-subset")
    if a.rank and b.rank and a.rank != b.rank:
        out.append("rank-reduction")
    if cmp.similarity >= 0.995 and abs(cmp.scale - 1.0) > 0.02:
        out.append("scaled-copy")
    if a.format and b.format and a.format != b.format:
        out.append("layout-conversion")
    if a.dtype and b.dtype and a.dtype != b.dtype:
        out.append("dtype-change")
    if not out:
        out.append("same-weights" if cmp.similarity >= 0.995 else "similar")
    return out


__all__ = [
    "K",
    "RELATIONS",
    "VECTOR_DIM",
    "VERSION",
    "Comparison",
    "Facts",
    "Sketch",
    "SketchError",
    "StreamSketch",
    "build",
    "compare",
    "floats",
    "key_hash",
    "module_key",
    "project_dense",
    "project_factors",
    "relations",
    "sketch_file",
    "sketch_header",
    "PICKS",
    "SUMMARY_BYTES",
    "picks",
    "stored_parts",
    "summary",
    "summary_parts",
    "vector_of",
]
