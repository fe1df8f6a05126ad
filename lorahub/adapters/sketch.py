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


def stored_parts(raw: bytes) -> tuple[int, int, bytes]:
    """``(version, modules, vector bytes)`` of a serialised sketch (what a registry row keeps beside it)."""
    if len(raw) < _HEAD.size + 4 + 2 * VECTOR_DIM:
        raise SketchError("sketch is truncated")
    magic, version, _k, dim, n = _HEAD.unpack_from(raw)
    if magic != _MAGIC:
        raise SketchError("not a lorahub sketch")
    start = _HEAD.size + 4
    return version, n, raw[start : start + 2 * dim]


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
    for i, h in enumerate(order):
        sk_, norm = by_hash[h]
        length = float(np.linalg.norm(sk_))
        if length > 0 and norm > 0:
            units[i] = sk_ / length
            norms[i] = norm
    if n:
        mixers = np.stack([_mixer(h) for h in order])  # [n, K*K, VECTOR_DIM]
        vector = np.einsum("n,nk,nkd->d", norms, units, mixers.astype(np.float64))
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

#: Files whose tensor data is at most this big are read in one call; larger ones tensor by tensor.
WHOLE_READ = 256 * 1024 * 1024


class _Reader:
    def __init__(self, header: SafetensorsHeader) -> None:
        self.header = header
        self.fd = os.open(header.path, os.O_RDONLY)
        self.data: bytes | None = None
        if 0 < header.data_len <= WHOLE_READ:
            data = os.pread(self.fd, header.data_len, header.data_start)
            self.data = data if len(data) == header.data_len else None

    def close(self) -> None:
        os.close(self.fd)

    def get(self, mod: Module, part: str) -> np.ndarray:
        """The tensor ``part`` of ``mod`` as float32 (2-D tensors stay views where the dtype allows)."""
        t = mod.parts[part]
        if t.expected_nbytes != t.nbytes or t.end > self.header.data_len:
            raise SketchError(f"tensor '{t.name}' does not fit its shape")
        if self.data is not None:
            buf, offset = self.data, t.begin
        else:
            buf, offset = os.pread(self.fd, t.nbytes, self.header.data_start + t.begin), 0
            if len(buf) != t.nbytes:
                raise SketchError(f"tensor '{t.name}' is cut short")
        n = t.numel
        if t.dtype == "BF16":
            a = (np.frombuffer(buf, "<u2", n, offset).astype(np.uint32) << 16).view(np.float32)
        elif t.dtype == "F32":
            a = np.frombuffer(buf, "<f4", n, offset)
        elif t.dtype in _NP_DTYPES:
            a = np.frombuffer(buf, _NP_DTYPES[t.dtype], n, offset).astype(np.float32)
        else:
            raise SketchError(f"tensor '{t.name}' has dtype {t.dtype}, not a float")
        return a.reshape(t.shape)


def _lora_factors(r: _Reader, mod: Module) -> tuple[np.ndarray, np.ndarray] | None:
    p = mod.parts
    if mod.kind not in ("lora", "cloneofsimo") or "mid" in p or "up" not in p or "down" not in p:
        return None
    up, down = r.get(mod, "up"), r.get(mod, "down")
    if up.ndim < 2 or down.ndim < 2:
        return None
    up, down = up.reshape(up.shape[0], -1), down.reshape(down.shape[0], -1)
    if up.shape[1] != down.shape[0]:
        return None
    return up, down


def _module(r: _Reader, mod: Module) -> tuple[np.ndarray, float] | None:
    """LyCORIS and full modules, one by one (plain LoRA modules are projected in batches)."""
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


def _project_batch(ups: list[np.ndarray], downs: list[np.ndarray], scales: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """:func:`project_factors` of modules of one shape at once: ``([g, K*K] sketches, [g] norms)``."""
    U = np.stack(ups).astype(np.float32, copy=False)  # [g, out, r]
    D = np.stack(downs).astype(np.float32, copy=False)  # [g, r, in]
    sc = np.asarray(scales, dtype=np.float64)
    left = np.matmul(_side(U.shape[1], 0).T.astype(np.float32), U)  # [g, K, r]
    right = np.matmul(D, _side(D.shape[2], 1).astype(np.float32))  # [g, r, K]
    s = np.matmul(left, right).astype(np.float64).reshape(len(ups), -1) * sc[:, None]
    gu = np.matmul(U.transpose(0, 2, 1), U).astype(np.float64)
    gd = np.matmul(D, D.transpose(0, 2, 1)).astype(np.float64)
    energy = np.einsum("gij,gij->g", gu, gd) * sc * sc
    return s, np.sqrt(np.maximum(energy, 0.0))


def sketch_header(header: SafetensorsHeader, analysis: Any = None) -> Sketch:
    """The sketch of the adapter whose header is ``header`` (its weights read from ``header.path``);
    ``analysis``: :func:`lorahub.adapters.formats.analyze` of it, when the caller has it already."""
    analysis = analysis or analyze(header)
    projected: dict[str, tuple[np.ndarray, float]] = {}
    batches: dict[tuple[Any, ...], tuple[list[str], list[np.ndarray], list[np.ndarray], list[float]]] = {}
    seen: set[str] = set()
    skipped = 0
    try:
        r = _Reader(header)
    except OSError as exc:
        raise SketchError(f"{header.path}: {exc.strerror or exc}") from None
    try:
        for mod in analysis.modules.values():
            if mod.kind in ("orphan", "set"):
                continue
            key = module_key(mod.name)
            if key in seen:
                skipped += 1
                continue
            try:
                factors = _lora_factors(r, mod)
                if factors is not None:
                    up, down = factors
                    b = batches.setdefault((up.shape, down.shape), ([], [], [], []))
                    b[0].append(key)
                    b[1].append(up)
                    b[2].append(down)
                    b[3].append(mod.scale if mod.scale is not None else 1.0)
                    seen.add(key)
                    continue
                got = _module(r, mod)
            except (ValueError, SketchError):
                got = None
            if got is None:
                skipped += 1
                continue
            seen.add(key)
            projected[key] = got
    finally:
        r.close()
    for keys, ups, downs, scales in batches.values():
        s, norms = _project_batch(ups, downs, scales)
        for i, key in enumerate(keys):
            projected[key] = (s[i], float(norms[i]))
    if not projected:
        raise SketchError(f"{header.path}: no LoRA module to sketch")
    return build(projected, skipped)


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
    "build",
    "compare",
    "key_hash",
    "module_key",
    "project_dense",
    "project_factors",
    "relations",
    "sketch_file",
    "sketch_header",
    "stored_parts",
    "vector_of",
]
