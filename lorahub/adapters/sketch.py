"""A sketch of what an adapter does: its weight change ΔW, module by module, in a few bytes (numpy only).

For a LoRA module ``ΔW = up · down · (alpha / rank)`` (a convolution's factors flattened to
``[out, r]`` and ``[r, in·kh·kw]``) the sketch is ``Lᵀ · ΔW[S, T] · R``: ``S`` and ``T`` are a seeded
sample of :data:`SAMPLE` of the output rows and input columns (all of a side no wider), ``L`` and ``R``
Gaussian projections of them to :data:`K` columns, all seeded by the side's width alone, so every adapter of
every layout, dtype and rank is sketched the same way. The block ``ΔW[S, T] = up[S] · down[:, T]`` is
formed from the sampled rows of ``up`` and columns of ``down`` alone: a sketch reads about
``SAMPLE / width`` of each factor (a few percent of an SD 1.5 or SDXL LoRA), never the whole, which is what
lets ``lorahub index`` sketch a file beside its hashes at almost no cost. By Johnson-Lindenstrauss the inner
product of two sketches estimates the Frobenius inner product of the two blocks, and the block's norm,
scaled by ``sqrt(out·in / (|S|·|T|))``, estimates ``‖ΔW‖_F``: the **energy** that weights each module in
:func:`compare`. Copies of one ΔW (another dtype, layout or alpha, a rank padded or cut, a module subset)
read the same rows and columns, so their sketches agree as their ΔW do; the sample makes the energies
estimates (exact for modules no wider than :data:`SAMPLE`), the same estimate for every copy.

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
import threading
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from .._readbuf import read_buffers
from ..errors import LorahubError
from .formats import Module, analyze
from .header import SafetensorsHeader, read_header

#: Bumped when the projection or the serialisation changes (stored sketches of another version are ignored).
VERSION = 2
#: Columns of the projections on each side: a module's sketch has K x K values.
K = 4
#: Rows and columns of each module's ΔW a sketch reads: a seeded sample of this many of each side (all of
#: a side no wider).
SAMPLE = 64
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


@lru_cache(maxsize=512)
def _side(width: int, side: int) -> tuple[np.ndarray, np.ndarray]:
    """``(indices [m], projection [m, K] float64)`` of one side (0: output rows, 1: input columns) of every
    layer that wide: a seeded sample of ``m = min(width, SAMPLE)`` sorted indices and a Gaussian
    projection of them, scaled by ``sqrt(width / m) / sqrt(K)`` so that a sketch's squared norm estimates
    the whole ΔW's without bias."""
    rng = np.random.default_rng([_SEED, side, width])
    m = min(width, SAMPLE)
    idx = np.arange(width) if m == width else np.sort(rng.choice(width, m, replace=False))
    proj = rng.standard_normal((m, K)) * math.sqrt(width / m / K)
    idx.flags.writeable = False
    proj.flags.writeable = False
    return idx, proj


def _area(out: Any, inp: Any) -> Any:
    """``sqrt(out·in / (m_out·m_in))``: how the sampled block's norm scales to the whole ΔW's (of widths given as
    numbers or as arrays of them)."""
    return np.sqrt(out * inp / (np.minimum(out, SAMPLE) * np.minimum(inp, SAMPLE)))


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


def _block(block: np.ndarray, out: int, inp: int, scale: float) -> tuple[np.ndarray, float]:
    """The sketch and estimated norm of ΔW from its sampled block ``ΔW[rows, cols]`` (unscaled)."""
    left = _side(out, 0)[1]
    right = _side(inp, 1)[1]
    s = (left.T @ block @ right) * scale
    return s.reshape(-1), float(np.linalg.norm(block) * _area(out, inp)) * abs(scale)


def project_factors(up: np.ndarray, down: np.ndarray, scale: float = 1.0) -> tuple[np.ndarray, float]:
    """``(Lᵀ·ΔW[S, T]·R·scale as K*K values, estimated ‖ΔW·scale‖_F)`` for ``ΔW = up·down``, reading only the
    sampled rows ``S`` of ``up`` and columns ``T`` of ``down`` (never forming ``up·down``).

    ``up`` is ``[out, r]`` (or ``[out, r, 1, 1]``), ``down`` ``[r, in]`` or ``[r, in, kh, kw]``.
    """
    up = np.asarray(up, dtype=np.float64).reshape(up.shape[0], -1)
    down = np.asarray(down, dtype=np.float64).reshape(down.shape[0], -1)
    if up.shape[1] != down.shape[0]:
        raise SketchError(f"factors do not chain: up {tuple(up.shape)}, down {tuple(down.shape)}")
    out, inp = up.shape[0], down.shape[1]
    block = up[_side(out, 0)[0]] @ down[:, _side(inp, 1)[0]]
    return _block(block, out, inp, scale)


def project_dense(delta: np.ndarray, scale: float = 1.0) -> tuple[np.ndarray, float]:
    """The same for an update given whole (``[out, in, ...]``)."""
    d = np.asarray(delta).reshape(delta.shape[0], -1)
    out, inp = d.shape
    block = np.asarray(d[_side(out, 0)[0]][:, _side(inp, 1)[0]], dtype=np.float64)
    return _block(block, out, inp, scale)


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
    """``(vector, pick hashes or None, pick units or None)`` of a stored summary (a row of another sketch
    version holds the vector alone)."""
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
    n = len(projected)
    hashes = np.fromiter((key_hash(k) for k in projected), np.uint32, n)
    raw = np.zeros((n, K * K)) if not n else np.stack([np.asarray(s, np.float64).reshape(-1) for s, _ in projected.values()])
    given = np.fromiter((norm for _, norm in projected.values()), np.float64, n)
    return _assemble(hashes, raw, given, skipped)


def _assemble(hashes: np.ndarray, raw: np.ndarray, given: np.ndarray, skipped: int = 0) -> Sketch:
    """A :class:`Sketch` from the key hashes, K*K sketches and norms of modules, first come first kept: a
    later module on the same 32 bits (two keys of one adapter that collide: vanishingly rare) is skipped."""
    order = np.argsort(hashes, kind="stable")
    hashes, raw, given = hashes[order], raw[order], given[order]
    first = np.ones(hashes.size, bool)
    first[1:] = hashes[1:] != hashes[:-1]
    skipped += int(hashes.size - np.count_nonzero(first))
    return _finish(hashes[first], raw[first], given[first], skipped)


def _finish(hashes: np.ndarray, raw: np.ndarray, given: np.ndarray, skipped: int,
            mixer_key: tuple[int, ...] | None = None) -> Sketch:
    """:func:`_assemble` of modules already in key-hash order, one per hash (``mixer_key``: the hashes as a
    tuple, where the caller has them)."""
    n = int(hashes.size)
    units = np.zeros((n, K * K), dtype=np.float64)
    norms = np.zeros(n, dtype=np.float64)
    if n:
        with np.errstate(invalid="ignore"):
            lengths = np.linalg.norm(raw, axis=1)
            live = (lengths > 0) & (given > 0)  # NaN is neither: a module of NaN weighs nothing
        units[live] = raw[live] / lengths[live, None]
        norms[live] = given[live]
        mixers = _mixers(tuple(hashes.tolist()) if mixer_key is None else mixer_key)  # [n * K*K, VECTOR_DIM]
        vector = (norms[:, None] * units).reshape(-1) @ mixers
    else:
        vector = np.zeros(VECTOR_DIM)
    length = float(np.linalg.norm(vector))
    if length > 0:
        vector /= length
    return Sketch(
        hashes=hashes.astype(np.uint32),
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
#: How the values of each dtype are read before conversion (BF16 as its bits).
_CODE = {"F16": "<f2", "BF16": "<u2", "F32": "<f4", "F64": "<f8"}
_UP, _DOWN, _KEEP = 0, 1, 2


_F16_SCALE = np.float32(2.0**112)
_F16_MASK = np.int32(~0x70000000)


def _convert(raw: np.ndarray, dtype: str, to: Any = np.float64) -> np.ndarray:
    """Values read with :data:`_CODE` as float64 (exactly: every float16, bfloat16 and float32 is one) or
    ``to``.

    float16 to float32 goes by the bits, exactly: sign-extended to 32 bits and shifted into float32's place,
    the three extra copies of the sign masked off, then multiplied by 2^112, which rebiases the exponent
    and places subnormals too (3-4x numpy's ``astype``, which converts value by value); infinities and NaN,
    which come out as values of at least 2^16, go through ``astype``."""
    with np.errstate(invalid="ignore", over="ignore"):  # NaN stays NaN (its module then weighs nothing)
        if dtype == "F16" and to is np.float32 and raw.size:
            v = raw.view(np.int16).astype(np.int32)
            v <<= 13
            v &= _F16_MASK
            f = v.view(np.float32)
            f *= _F16_SCALE
            if f.max() < 65536 and f.min() > -65536:
                return f
        if dtype == "BF16":
            return (raw.astype(np.uint32) << 16).view(np.float32).astype(to, copy=False)
        return raw.astype(to, copy=False)


def floats(buf: Any, offset: int, count: int, dtype: str) -> np.ndarray:
    """``count`` little-endian values of the safetensors ``dtype`` at byte ``offset`` of ``buf`` as float64."""
    if dtype not in _CODE:
        raise SketchError(f"dtype {dtype} is not a float")
    return _convert(np.frombuffer(buf, _CODE[dtype], count, offset), dtype)


@lru_cache(maxsize=1024)
def _wanted(role: int, rows: int, cols: int) -> np.ndarray:
    """The element indices (row-major, sorted) a sketch reads of a ``[rows, cols]`` factor: the sampled rows
    of an ``up`` (``role`` _UP, ``rows`` = out), the sampled columns of a ``down`` (``cols`` = in)."""
    if role == _UP:
        idx = (_side(rows, 0)[0][:, None] * cols + np.arange(cols)[None, :]).reshape(-1)
    else:
        idx = (np.arange(rows)[:, None] * cols + _side(cols, 1)[0][None, :]).reshape(-1)
    idx.flags.writeable = False
    return idx


def _project_blocks(ups: np.ndarray, downs: np.ndarray, widths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The sketches ``[g, K*K]`` and estimated norms ``[g]`` (float64) of ``g`` modules from their sampled
    factors (float32): ``ups`` ``[g, m_out, r]`` (``up[S]``), ``downs`` ``[g, r, m_in]`` (``down[:, T]``);
    ``widths`` ``[g, 2]``: each module's output and input width (which seed its projections).

    ``Lᵀ·up[S]`` ``[K, r]`` and ``down[:, T]·R`` ``[r, K]`` are chained per module (K x r x K); the block's
    squared norm is ``trace((up[S]ᵀ·up[S])·(down[:, T]·down[:, T]ᵀ))`` where the two r x r Grams cost less
    than forming the m_out x m_in block (low ranks), else the block's own."""
    g, m_out, r = ups.shape
    m_in = downs.shape[2]
    left = np.matmul(_projections(widths[:, 0], 0).transpose(0, 2, 1), ups)  # [g, K, r]
    right = np.matmul(downs, _projections(widths[:, 1], 1))  # [g, r, K]
    sketches = np.matmul(left, right).reshape(g, K * K).astype(np.float64)
    if r * (m_out + m_in) < m_out * m_in:
        gu = np.matmul(ups.transpose(0, 2, 1), ups)
        gd = np.matmul(downs, downs.transpose(0, 2, 1))
        energy = np.einsum("grs,grs->g", gu, gd, dtype=np.float64)
    else:
        block = np.matmul(ups, downs)
        energy = np.einsum("gij,gij->g", block, block, dtype=np.float64)
    return sketches, np.sqrt(np.maximum(energy, 0.0)) * _area(widths[:, 0], widths[:, 1])


def _projections(widths: np.ndarray, side: int) -> np.ndarray:
    """The float32 projections ``[g, m, K]`` of one side of modules of these widths (all sampling ``m``)."""
    first = int(widths[0])
    if np.all(widths == first):
        return np.broadcast_to(_side32(first, side), (widths.size, *_side32(first, side).shape))
    return _mixed_projections(np.ascontiguousarray(widths, np.int64).tobytes(), side)


@lru_cache(maxsize=32)
def _mixed_projections(widths: bytes, side: int) -> np.ndarray:
    """:func:`_projections` of modules of several widths (``widths``: their int64 bytes), kept: the adapters of
    one family and layout share them (an SD 1.5 LoRA's 264 modules: 270 KB a side)."""
    unique, inverse = np.unique(np.frombuffer(widths, np.int64), return_inverse=True)
    out = np.stack([_side32(int(w), side) for w in unique])[inverse]
    out.flags.writeable = False
    return out


@lru_cache(maxsize=512)
def _side32(width: int, side: int) -> np.ndarray:
    """:func:`_side`'s projection in float32."""
    proj = _side(width, side)[1].astype(np.float32)
    proj.flags.writeable = False
    return proj


#: A lane of more values keeps their positions as int32 (below :data:`_INT32_TOP`, so that a search for it finds
#: them all): half the memory, for about a fifth more time a gather (the indices are widened as they are taken).
_INT64_VALUES = 1 << 20
_INT32_TOP = 2**31 - 1


@dataclass(frozen=True)
class _Lane:
    """The values a sketch reads of the LoRA factors of one dtype that begin at one byte phase (as good as always
    every factor of a file: one lane). Value ``j`` is the element at byte ``phase + pos[j] * item`` of the data
    region (``pos`` ascending), read as the slice that holds it streams past: one gather a slice for all the
    factors, whatever their shapes."""

    dtype: str
    item: int
    phase: int
    pos: np.ndarray  # int64 (int32 in large lanes) [values], ascending, read only
    base: int  # where the lane's values begin among all lanes' (concatenated in lane order)


@dataclass(frozen=True)
class _Batch:
    """The LoRA modules of one sampled shape ``(m_out, rank, m_in)``, chained at once: their slots and widths, and
    where each one's sampled factors begin among the lanes' values (a factor's ``m_out*r`` or ``r*m_in`` values
    are one block there, row-major: the batch's factors are read as rows of a strided view, no index a value)."""

    shape: tuple[int, int, int]
    slots: np.ndarray
    widths: np.ndarray  # [n, 2]
    ups: np.ndarray  # [n]: where each module's up[S] begins
    downs: np.ndarray  # [n]: where each module's down[:, T] begins


@dataclass(frozen=True)
class _Plan:
    """What :class:`StreamSketch` reads of a file, worked out from its tensor table alone: the modules in file
    order, each LoRA module's slot, the element of the data region of every value the sketch reads (the lanes)
    and where each module's values go (the batches). The same for every file of the table (a library's adapters
    share a few tables: one trainer, one configuration), so it is kept (:data:`_PLANS`); a file's own scales (its
    alphas) are read from its analysis each time."""

    order: tuple[tuple[str, str, Any], ...]  # (module key, "lora" | "other" | "skip", slot or module)
    slot_modules: tuple[str, ...]  # per slot: its module's name (for its scale)
    lanes: tuple[_Lane, ...]
    batches: tuple[_Batch, ...]
    slot_at: np.ndarray  # per slot: its module's place in order
    slot_hash: np.ndarray  # per slot: its module key's hash
    kept: tuple[tuple[int, int, str], ...]  # the tensors of LyCORIS and full modules kept whole (sorted)
    #: Where each value (in the order the batches count) is among the lanes' values, where factors overlap (a
    #: file whose modules share tensors); None: the same place (as good as always).
    moved: np.ndarray | None = None
    others: tuple[int, ...] = ()  # the places in order of the LyCORIS and full modules
    #: Without those, the sketch's modules are the batches' in an order the table decides: which of the batches'
    #: rows (concatenated) it keeps, in key-hash order (the first module of a key, in file order), their hashes
    #: (also as a tuple, the mixers' key), and how many modules it leaves out.
    final: np.ndarray | None = None
    final_hashes: np.ndarray | None = None
    final_key: tuple[int, ...] = ()
    left_out: int = 0

    @property
    def nbytes(self) -> int:
        """The bytes of its index arrays (what keeping it costs, besides its key)."""
        return sum(lane.pos.nbytes for lane in self.lanes) + (0 if self.moved is None else self.moved.nbytes)


#: Plans of the tensor tables sketched lately, by table (:func:`_plan_key`), oldest first; at most
#: :data:`PLANS_KEPT` of them (a key holds its table: about 0.7 MB for an SDXL LoRA's 3,000 tensors) and
#: :data:`PLAN_BYTES_KEPT` bytes of index arrays (8 bytes a value read, 4 in lanes over a million values: 2.2 MB
#: for an SD 1.5 LoRA of rank 8, 12 MB for an SDXL LoRA of rank 32; a larger plan is not kept).
_PLANS: dict[tuple[Any, ...], _Plan] = {}
_PLANS_LOCK = threading.Lock()
PLANS_KEPT = 16
PLAN_BYTES_KEPT = 64 << 20


def _plan_key(header: SafetensorsHeader) -> tuple[Any, ...]:
    """Every entry of a header's tensor table (name, dtype, shape, offsets: :class:`TensorInfo` is a tuple) and
    its data region's length."""
    return (header.data_len, *header.tensors.values())


def _plan(header: SafetensorsHeader, analysis: Any) -> _Plan:
    """The :class:`_Plan` of a file (kept by its tensor table unless it has LyCORIS or full modules, whose
    :class:`~lorahub.adapters.formats.Module` the plan holds)."""
    key = _plan_key(header)
    plan = _PLANS.get(key)
    if plan is not None:
        return plan
    plan = _make_plan(header, analysis)
    size = plan.nbytes
    if not plan.kept and size <= PLAN_BYTES_KEPT:
        with _PLANS_LOCK:  # the index sketches files side by side
            while _PLANS and (len(_PLANS) >= PLANS_KEPT or sum(p.nbytes for p in _PLANS.values()) + size > PLAN_BYTES_KEPT):
                del _PLANS[next(iter(_PLANS))]
            _PLANS[key] = plan
    return plan


def _make_plan(header: SafetensorsHeader, analysis: Any) -> _Plan:
    order: list[tuple[str, str, Any]] = []
    slot_modules: list[str] = []
    by_sample: dict[tuple[int, int, int], list[int]] = {}
    widths: list[tuple[int, int]] = []
    slot_at: list[int] = []
    slot_hash: list[int] = []
    factors: dict[tuple[int, str, tuple[int, int]], tuple[list[int], list[int]]] = {}
    kept: list[tuple[int, int, str]] = []
    data_len = header.data_len

    def flat(t: Any) -> tuple[int, int] | None:
        """The 2-D shape of a readable, non-empty float tensor of at least 2 dimensions, else None."""
        shape = t.shape
        item = _ITEM.get(t.dtype)
        if item is None or not 0 <= t.begin <= t.end <= data_len:
            return None
        if len(shape) == 2:
            rows, rest = shape
        elif len(shape) > 2:
            rows, rest = shape[0], math.prod(shape[1:])
        else:
            return None
        if not rows * rest or rows * rest * item != t.end - t.begin:
            return None
        return rows, rest

    for mod in analysis.modules.values():
        kind = mod.kind
        if kind == "orphan" or kind == "set":
            continue
        key = module_key(mod.name)
        p = mod.parts
        if (kind == "lora" or kind == "cloneofsimo") and "up" in p and "down" in p and "mid" not in p:
            up, down = p["up"], p["down"]
            us, ds = flat(up), flat(down)
            if us is not None and ds is not None and us[1] == ds[0]:
                slot = len(slot_modules)
                slot_modules.append(mod.name)
                sample = (us[0] if us[0] < SAMPLE else SAMPLE, us[1], ds[1] if ds[1] < SAMPLE else SAMPLE)
                in_sample = by_sample.get(sample)
                if in_sample is None:
                    by_sample[sample] = [slot]
                else:
                    in_sample.append(slot)
                widths.append((us[0], ds[1]))
                slot_at.append(len(order))
                slot_hash.append(key_hash(key))
                for t, role, shape in ((up, _UP, us), (down, _DOWN, ds)):
                    group = factors.get((role, t.dtype, shape))
                    if group is None:
                        factors[(role, t.dtype, shape)] = ([t.begin], [slot])
                    else:
                        group[0].append(t.begin)
                        group[1].append(slot)
                order.append((key, "lora", slot))
                continue
        elif kind in ("loha", "lokr", "full") and sum(t.nbytes for t in p.values()) <= _OTHER_MAX:
            kept += [(t.begin, t.end, t.name) for t in p.values()
                     if t.dtype in _FLOATS and t.expected_nbytes == t.nbytes and 0 <= t.begin <= t.end <= data_len]
            order.append((key, "other", mod))
            continue
        order.append((key, "skip", None))
    kept.sort()
    lanes, batches, moved = _lay_out(factors, by_sample, np.asarray(widths, np.int64).reshape(-1, 2))
    at = _read_only(np.asarray(slot_at, np.int64))
    hashes = _read_only(np.asarray(slot_hash, np.uint32))
    others = tuple(i for i, (_key, kind, _ref) in enumerate(order) if kind == "other")
    final = final_hashes = None
    left_out = 0
    if not others and batches:  # as result() orders them, once for every file of the table
        rows = np.concatenate([b.slots for b in batches])
        first = np.argsort(at[rows], kind="stable")
        by_hash = np.argsort(hashes[rows][first], kind="stable")
        final, final_hashes = first[by_hash], hashes[rows][first][by_hash]
        keep = np.ones(final.size, bool)
        keep[1:] = final_hashes[1:] != final_hashes[:-1]
        final, final_hashes = _read_only(final[keep]), _read_only(final_hashes[keep])
        left_out = len(order) - int(final.size)
    return _Plan(
        order=tuple(order),
        slot_modules=tuple(slot_modules),
        lanes=lanes,
        batches=batches,
        slot_at=at,
        slot_hash=hashes,
        kept=tuple(kept),
        moved=moved,
        others=others,
        final=final,
        final_hashes=final_hashes,
        final_key=() if final_hashes is None else tuple(final_hashes.tolist()),
        left_out=left_out,
    )


def _lay_out(factors: dict[tuple[int, str, tuple[int, int]], tuple[list[int], list[int]]],
             by_sample: dict[tuple[int, int, int], list[int]],
             widths: np.ndarray) -> tuple[tuple[_Lane, ...], tuple[_Batch, ...], np.ndarray | None]:
    """The lanes and batches of a plan from its LoRA factors (``{(role, dtype, 2-D shape): (begins, slots)}``) and
    its modules by sampled shape: the values each factor's sample reads (:func:`_wanted`), factor after factor in
    file order, in the lane of the factor's dtype and byte phase; then, per sampled shape, where each module's
    values begin among all the lanes' (and, where factors overlap, where each value went: :attr:`_Plan.moved`)."""
    members: dict[tuple[str, int], list[tuple[int, int, int, tuple[int, int]]]] = {}
    for (role, dtype, shape), (begins, slots) in factors.items():
        item = _ITEM[dtype]
        for begin, slot in zip(begins, slots, strict=True):
            members.setdefault((dtype, begin % item), []).append((begin, role, slot, shape))
    lanes: list[_Lane] = []
    first: dict[tuple[int, int], int] = {}  # (role, slot) -> where its factor's values begin, in lane order
    moved: list[np.ndarray] = []  # per lane: where each value in lane order is kept (sorted), plus the lane's base
    base = 0
    for (dtype, phase), group in sorted(members.items()):
        item = _ITEM[dtype]
        group.sort()
        blocks = []
        at = base
        for begin, role, slot, shape in group:
            wanted = _wanted(role, *shape)
            blocks.append(wanted + (begin - phase) // item)
            first[(role, slot)] = at
            at += wanted.size
        pos = np.concatenate(blocks)
        if pos.size > _INT64_VALUES and int(pos.max()) < _INT32_TOP:  # half the memory of a large plan
            pos = pos.astype(np.int32)
        where = np.arange(base, at)
        if pos.size > 1 and not bool(np.all(pos[1:] >= pos[:-1])):  # factors that overlap (shared tensors)
            order = np.argsort(pos, kind="stable")
            pos = pos[order]
            where[order] = np.arange(base, at)
        moved.append(where)
        lanes.append(_Lane(dtype, item, phase, _read_only(pos), base))
        base = at
    kept_at = np.concatenate(moved) if moved else np.zeros(0, np.int64)
    shuffled = bool(kept_at.size) and not bool(np.array_equal(kept_at, np.arange(kept_at.size)))
    batches = []
    for shape, slots in by_sample.items():
        idx = np.asarray(slots, np.int64)
        ups = np.asarray([first[(_UP, s)] for s in slots], np.int64)
        downs = np.asarray([first[(_DOWN, s)] for s in slots], np.int64)
        batches.append(_Batch(shape, _read_only(idx), _read_only(widths[idx]), _read_only(ups), _read_only(downs)))
    return tuple(lanes), tuple(batches), (_read_only(kept_at) if shuffled else None)


def _read_only(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


class StreamSketch:
    """The sketch of an adapter computed from its data region, fed in order in slices of any size.

    This is how ``lorahub index`` sketches a file inside its fingerprint pass
    (:func:`lorahub.adapters.fingerprint.fingerprint_record` ``sink=``): the bytes read once for the
    hashes are also the sketch's, no second read. Of each LoRA factor only the values the sketch reads are
    gathered (the sampled rows of ``up``, columns of ``down``: :data:`SAMPLE` of each side), straight from
    the slice that holds them, every factor of one dtype at once (:class:`_Lane`); nothing else is copied.
    :meth:`result` chains them, the modules of one sampled shape at once (:class:`_Batch`). LyCORIS and full modules keep their
    tensors' bytes and are projected at the end. :meth:`update` never raises: a failure is kept and raised
    by :meth:`result`.
    """

    def __init__(self, header: SafetensorsHeader, analysis: Any = None) -> None:
        analysis = analysis or analyze(header)
        self.path = header.path
        self.data_len = header.data_len
        self.pos = 0
        self.error: str | None = None
        plan = _plan(header, analysis)
        modules = analysis.modules
        scales = [modules[name].scale for name in plan.slot_modules]
        self._plan = plan
        self._lanes = plan.lanes
        self._values = [np.empty(lane.pos.size, _CODE[lane.dtype]) for lane in plan.lanes]  # as read, lane order
        self._next = [0] * len(plan.lanes)  # per lane: its first value not read yet
        self._carry: list[bytearray | None] = [None] * len(plan.lanes)  # per lane: a value cut across slices
        self._scales = np.asarray([1.0 if sc is None else sc for sc in scales], np.float64)
        self._kept_plan = plan.kept
        self._kept_next = 0  # the kept tensors before it (sorted by begin) were fed whole
        self._kept: dict[str, bytearray] = {}

    @property
    def wanted(self) -> bool:
        """Whether any tensor is to be read (an adapter with none has nothing to sketch)."""
        return bool(self._lanes or self._kept_plan)

    @property
    def complete(self) -> bool:
        """Fed the whole data region."""
        return self.pos >= self.data_len

    def update(self, view: Any) -> None:
        """The next ``len(view)`` bytes of the data region."""
        lo = self.pos
        hi = lo + len(view)
        if self.error is None:
            try:
                for i, lane in enumerate(self._lanes):
                    if self._next[i] < lane.pos.size:
                        self._feed(i, lane, view, lo, hi)
                kept = self._kept_plan
                while self._kept_next < len(kept) and kept[self._kept_next][1] <= lo:  # fed whole already
                    self._kept_next += 1
                for i in range(self._kept_next, len(kept)):
                    begin, end, name = kept[i]
                    if begin >= hi:
                        break
                    a, b = max(begin, lo), min(end, hi)
                    if a < b:
                        self._kept.setdefault(name, bytearray()).extend(view[a - lo : b - lo])
            except Exception as exc:  # noqa: BLE001 - kept for result()
                self.error = str(exc) or type(exc).__name__
        self.pos = hi

    def result(self) -> Sketch:
        """The sketch (raises :class:`SketchError` when the adapter cannot be sketched)."""
        if self.error is not None:
            raise SketchError(f"{self.path}: {self.error}")
        if self.wanted and not self.complete:
            raise SketchError(f"{self.path}: the sketch was fed {self.pos} of {self.data_len} bytes")
        try:
            slots, sketches, lora_norms = self._chain()
        except Exception as exc:  # noqa: BLE001 - one line for the caller
            raise SketchError(f"{self.path}: {exc or type(exc).__name__}") from None
        plan = self._plan
        if plan.final is not None and plan.final_hashes is not None:  # LoRA modules alone: ordered by the plan
            return _finish(plan.final_hashes, sketches[plan.final], lora_norms[plan.final], plan.left_out,
                           plan.final_key)
        at, hashes, raws, norms = [plan.slot_at[slots]], [plan.slot_hash[slots]], [sketches], [lora_norms]
        reader = _Kept({name: bytes(b) for name, b in self._kept.items()})
        for i in plan.others:
            key, _kind, ref = plan.order[i]
            try:
                got = _module(reader, ref)
            except (ValueError, SketchError):
                got = None
            if got is not None:
                at.append(np.asarray([i]))
                hashes.append(np.asarray([key_hash(key)], np.uint32))
                raws.append(np.asarray(got[0], np.float64).reshape(1, -1))
                norms.append(np.asarray([got[1]]))
        where = np.concatenate(at)
        if not where.size:
            raise SketchError(f"{self.path}: no LoRA module to sketch")
        first = np.argsort(where, kind="stable")  # in the file's module order: the first of a key is kept
        return _assemble(np.concatenate(hashes)[first], np.concatenate(raws)[first], np.concatenate(norms)[first],
                         len(plan.order) - int(where.size))

    def _feed(self, i: int, lane: _Lane, view: Any, lo: int, hi: int) -> None:
        """Lane ``i``'s values in bytes ``[lo, hi)`` of the data region: those whole in the slice in one gather,
        one cut across slices byte by byte."""
        pos, item, phase, code = lane.pos, lane.item, lane.phase, _CODE[lane.dtype]
        out = self._values[i]
        k, n = self._next[i], pos.size
        carry = self._carry[i]
        if carry is not None:  # a value begun in an earlier slice
            carry += view[: item - len(carry)]
            if len(carry) < item:
                return
            self._carry[i] = None
            e = pos[k]
            value = np.frombuffer(bytes(carry), code)[0]
            while k < n and pos[k] == e:  # (shared tensors read it more than once)
                out[k] = value
                k += 1
        e_lo = -((phase - lo) // item)  # the first element that begins in the slice
        e_hi = (hi - phase) // item  # the first that does not end in it
        # (searched as the array's own type: another would have it converted whole, each time)
        k1 = int(pos.searchsorted(pos.dtype.type(min(e_hi, _INT32_TOP)) if pos.dtype == np.int32 else e_hi)) if k < n else k
        if k1 > k:
            if pos[k] < e_lo:
                raise SketchError("the data region was not fed in order")
            skew = phase + e_lo * item - lo
            values = np.frombuffer(view, code, (len(view) - skew) // item, skew)
            values.take(np.subtract(pos[k:k1], e_lo, dtype=np.intp), out=out[k:k1], mode="clip")  # in range: e_lo <= pos < e_hi
            k = k1
        if k < n:
            begin = phase + int(pos[k]) * item
            if begin < hi:  # begun in this slice, going on in the next
                self._carry[i] = bytearray(view[begin - lo :])
        self._next[i] = k

    def _chain(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(slots, K*K sketches, estimated norms)`` of the LoRA modules: the sampled block ``up[S]·down[:, T]``
        projected, the modules of one sampled shape (``m_out``, rank, ``m_in``) at once whatever their widths (an
        SD 1.5 LoRA is one such batch)."""
        plan = self._plan
        if not plan.batches:
            return np.zeros(0, np.int64), np.zeros((0, K * K)), np.zeros(0)
        converted = [_convert(v, lane.dtype, np.float32) for v, lane in zip(self._values, self._lanes, strict=True)]
        values = converted[0] if len(converted) == 1 else np.concatenate(converted)
        out_slots: list[np.ndarray] = []
        out_sk: list[np.ndarray] = []
        out_norms: list[np.ndarray] = []
        for batch in plan.batches:
            m_out, r, m_in = batch.shape
            n = batch.slots.size
            sc = self._scales[batch.slots]
            ups = _blocks(values, batch.ups, m_out * r, plan.moved).reshape(n, m_out, r)
            downs = _blocks(values, batch.downs, r * m_in, plan.moved).reshape(n, r, m_in)
            with np.errstate(invalid="ignore", over="ignore"):  # a NaN module weighs nothing (build)
                sk_, norms = _project_blocks(ups, downs, batch.widths)
                sk_ *= sc[:, None]
                norms *= np.abs(sc)
            out_slots.append(batch.slots)
            out_sk.append(sk_)
            out_norms.append(norms)
        return np.concatenate(out_slots), np.concatenate(out_sk), np.concatenate(out_norms)


def _blocks(values: np.ndarray, starts: np.ndarray, length: int, moved: np.ndarray | None) -> np.ndarray:
    """``[len(starts), length]``: the ``length`` values from each of ``starts``, copied a row at a time from a
    strided view (``moved``: where each value went, when factors overlap)."""
    if moved is not None:
        return values[moved[starts[:, None] + np.arange(length)]]
    rows = np.lib.stride_tricks.as_strided(values, (values.size - length + 1, length), (values.itemsize,) * 2,
                                           writeable=False)
    return rows[starts]


class _Kept:
    """The tensors of LyCORIS and full modules, kept as bytes while the data region streamed past."""

    def __init__(self, kept: dict[str, bytes]) -> None:
        self.kept = kept

    def get(self, mod: Module, part: str) -> np.ndarray:
        t = mod.parts[part]
        raw = self.kept.get(t.name)
        if raw is None or len(raw) != t.nbytes:
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
            with read_buffers(1, min(READ_CHUNK, header.data_len)) as (buf,), memoryview(buf) as view:
                pos = 0
                while pos < header.data_len:
                    want = min(READ_CHUNK, header.data_len - pos)
                    got = os.preadv(fd, [view[:want]], header.data_start + pos)
                    if got <= 0:
                        raise SketchError(f"{header.path}: the file ends before its tensors do")
                    stream.update(view[:got])
                    pos += got
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
