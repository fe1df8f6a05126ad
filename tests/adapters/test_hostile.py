"""Hostile input: mutated real and synthetic adapter files, random JSON headers,
absurd length claims.

For every case ``validate_file`` must return a report (never raise) whose
messages are single lines, ``inspect_file`` may raise only ``LorahubError``
subclasses (and its report must serialise, since ``--json`` prints it), no
case may take more than ``CASE_LIMIT_S`` and memory stays bounded even when a
header claims gigabytes.

The mutation loop is seeded and bounded: it stops after ``LORAHUB_FUZZ_CASES``
cases or ``LORAHUB_FUZZ_SECONDS`` seconds, whichever comes first. Run longer
locally with e.g. ``LORAHUB_FUZZ_SECONDS=600 LORAHUB_FUZZ_CASES=1000000
LORAHUB_FUZZ_SEED=7 pytest tests/adapters/test_hostile.py``. A failing case is
saved under the test's tmp folder and named in the assertion message.
"""

from __future__ import annotations

import json
import os
import random
import resource
import signal
import struct
import subprocess
import sys
import threading
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lorahub.adapters.formats import _SUFFIXES
from lorahub.adapters.header import DTYPE_BITS
from lorahub.adapters.inspect import inspect_file
from lorahub.adapters.validate import validate_file
from lorahub.adapters.writer import write_safetensors, write_safetensors_zeros
from lorahub.cli.commands.inspect import render
from lorahub.errors import LorahubError
from lorahub.schemas.adapters import InspectReport, ValidationReport

SEED = int(os.environ.get("LORAHUB_FUZZ_SEED", "20240611"))
MAX_CASES = int(os.environ.get("LORAHUB_FUZZ_CASES", "4000"))
BUDGET_S = float(os.environ.get("LORAHUB_FUZZ_SECONDS", "15"))
#: No single file may take more CPU time than this (validate + inspect + serialising both).
#: CPU time, not wall time, so that a loaded CI machine (xdist, other processes) does not fail it.
CASE_LIMIT_S = 2.0
#: A case still running after this wall time is a hang: the watchdog interrupts it.
HANG_S = 10.0
#: Fewer cases than this means the loop did not really run (a broken seed or a far too slow machine).
MIN_CASES = 300

FIXTURES = Path(__file__).resolve().parents[2] / ".." / "shared" / "fixtures"

# --------------------------------------------------------------------------- the oracle


class Hang(
    BaseException
):  # BaseException: a broad `except Exception` in the code under test cannot swallow it
    pass


@contextmanager
def watchdog(seconds: float) -> Iterator[None]:
    """Interrupt the block after ``seconds`` (SIGALRM; a no-op where that is unavailable)."""
    if not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_alarm(signum, frame):  # noqa: ANN001, ANN202
        raise Hang(f"still running after {seconds} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _one_line(messages: list[str], where: str) -> str | None:
    for m in messages:
        if not isinstance(m, str) or not m.strip():
            return f"{where}: empty or non-string message {m!r}"
        if "\n" in m or "\r" in m:
            return f"{where}: multi-line message {m[:200]!r}"
        if len(m) > 1000:
            return f"{where}: {len(m)}-character message {m[:200]!r}..."
    return None


def probe(path: Path, *, deep: bool = False) -> str | None:
    """Run validate_file and inspect_file on ``path``; describe the first broken promise, or None."""
    start = time.process_time()
    try:
        with watchdog(HANG_S):
            report = validate_file(path, deep=deep)
            assert isinstance(report, ValidationReport)
            report.model_dump_json()
    except Hang as exc:
        return f"validate_file hung: {exc}"
    except Exception as exc:  # noqa: BLE001
        return f"validate_file raised {type(exc).__name__}: {str(exc)[:300]}"
    if report.valid != (not report.errors):
        return f"valid={report.valid} with errors {report.errors[:3]}"
    bad = _one_line(report.errors + report.warnings, "validate_file")
    if bad:
        return bad
    try:
        with watchdog(HANG_S):
            try:
                ins = inspect_file(path)
            except LorahubError as exc:
                ins = None
                bad = _one_line([str(exc)], "inspect_file error")
                if bad:
                    return bad
            if ins is not None:
                assert isinstance(ins, InspectReport)
                ins.model_dump_json()  # what `inspect --json` prints
                json.dumps(ins.model_dump(mode="json"), ensure_ascii=False).encode("utf-8")
                render(ins, show_modules=True)  # what `inspect` prints
                bad = _one_line(ins.warnings, "inspect_file warnings")
                if bad:
                    return bad
    except Hang as exc:
        return f"inspect_file hung: {exc}"
    except Exception as exc:  # noqa: BLE001
        return f"inspect_file raised {type(exc).__name__}: {str(exc)[:300]}"
    elapsed = time.process_time() - start
    if elapsed > CASE_LIMIT_S:
        return f"took {elapsed:.2f} s of CPU time (limit {CASE_LIMIT_S} s)"
    return None


# --------------------------------------------------------------------------- seeds

CROSS_K = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k"
MODULE_NAMES = [
    CROSS_K,
    "lora_unet_down_blocks_0_resnets_0_conv1",
    "lora_unet_input_blocks_4_1_proj_in",
    "lora_unet_mid_block_attentions_0_proj_out",
    "lora_unet_double_blocks_0_img_attn_qkv",
    "lora_unet_single_blocks_3_linear1",
    "lora_unet_joint_blocks_0_x_block_attn_qkv",
    "lora_te_text_model_encoder_layers_0_self_attn_q_proj",
    "lora_te1_text_model_encoder_layers_0_self_attn_k_proj",
    "lora_te2_text_model_encoder_layers_0_self_attn_v_proj",
    "lora_te3_encoder_block_0_layer_0_SelfAttention_q",
    "lora_transformer_single_transformer_blocks_0_attn_to_q",
    "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k",
    "unet.mid_block.attentions.0.transformer_blocks.0.attn2.processor",
    "text_encoder.text_model.encoder.layers.0.self_attn.q_proj",
    "text_encoder_2.text_model.encoder.layers.0.self_attn.q_proj",
    "transformer.single_transformer_blocks.0.attn.to_q",
    "transformer.transformer_blocks.0.attn.add_q_proj",
    "base_model.model.down_blocks.0.attentions.0.proj_in",
    "diffusion_model.double_blocks.0.img_attn.qkv",
]
PART_SUFFIXES = [s for s, _ in _SUFFIXES]
METADATA_KEYS = [
    "ss_tag_frequency",
    "ss_dataset_dirs",
    "ss_datasets",
    "ss_network_args",
    "ss_network_dim",
    "ss_network_alpha",
    "ss_resolution",
    "ss_base_model_version",
    "ss_v2",
    "ss_output_name",
    "ss_learning_rate",
    "ss_steps",
    "lora_adapter_metadata",
    "modelspec.architecture",
    "modelspec.prediction_type",
    "modelspec.trigger_phrase",
    "modelspec.title",
    "sshs_model_hash",
    "sshs_legacy_hash",
    "instance_prompt",
    "format",
]


def synthetic_seeds(folder: Path) -> list[Path]:
    """Small, well-formed files of every format and with every metadata feature lorahub decodes."""
    folder.mkdir(parents=True, exist_ok=True)
    md = {
        "ss_tag_frequency": json.dumps({"10_sks dog": {"sks dog": 10, "grass": 3}, "5_cat": {"cat": 5}}),
        "ss_dataset_dirs": json.dumps({"10_sks dog": {"n_repeats": 10, "img_count": 10}}),
        "ss_network_args": json.dumps({"conv_dim": "4", "algo": "locon"}),
        "ss_resolution": "(512, 512)",
        "ss_base_model_version": "sd_v1",
        "ss_network_dim": "4",
        "ss_network_alpha": "2.0",
        "ss_learning_rate": "0.0001",
        "ss_v2": "False",
        "ss_output_name": "seed",
        "modelspec.architecture": "stable-diffusion-v1/lora",
        "modelspec.title": "seed",
        "sshs_model_hash": "0" * 64,
    }
    out = []

    def zeros(
        name: str, tensors: dict[str, tuple[str, list[int]]], metadata: dict[str, str] | None = None
    ) -> None:
        out.append(write_safetensors_zeros(folder / f"{name}.safetensors", tensors, metadata))

    kohya: dict[str, tuple[str, list[int]]] = {}
    for m, d_in, d_out in [
        (CROSS_K, 768, 320),
        ("lora_te_text_model_encoder_layers_0_self_attn_q_proj", 768, 768),
    ]:
        kohya[f"{m}.lora_down.weight"] = ("float16", [2, d_in])
        kohya[f"{m}.lora_up.weight"] = ("float16", [d_out, 2])
        kohya[f"{m}.alpha"] = ("float16", [])
    kohya["lora_unet_down_blocks_0_resnets_0_conv1.lora_down.weight"] = ("float16", [2, 4, 3, 3])
    kohya["lora_unet_down_blocks_0_resnets_0_conv1.lora_up.weight"] = ("float16", [8, 2, 1, 1])
    kohya["lora_unet_down_blocks_0_resnets_0_conv1.lora_mid.weight"] = ("float16", [2, 2, 3, 3])
    kohya["lora_unet_down_blocks_0_resnets_0_conv1.dora_scale"] = ("float16", [1, 4])
    zeros("kohya", kohya, md)
    # real alpha values (F32 2.0) so that read_scalars reads bytes
    alpha = struct.pack("<f", 2.0)
    out.append(
        write_safetensors(
            folder / "kohya_alpha.safetensors",
            {
                f"{CROSS_K}.lora_down.weight": ("F32", [1, 4], bytes(16)),
                f"{CROSS_K}.lora_up.weight": ("F32", [4, 1], bytes(16)),
                f"{CROSS_K}.alpha": ("F32", [], alpha),
            },
            {"ss_base_model_version": "sdxl_base_v1-0", "ss_network_alpha": "Dynamic"},
        )
    )
    peft_md = {
        "lora_adapter_metadata": json.dumps(
            {"unet.r": 2, "unet.lora_alpha": 4, "unet.alpha_pattern": {"to_k": 8}, "unet.use_rslora": True}
        ),
        "format": "pt",
    }
    name = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k"
    zeros(
        "peft",
        {
            f"{name}.lora_A.weight": ("bfloat16", [2, 2048]),
            f"{name}.lora_B.weight": ("bfloat16", [320, 2]),
            f"{name}.lora_magnitude_vector": ("bfloat16", [320]),
            "text_encoder_2.text_model.encoder.layers.0.self_attn.q_proj.lora_A.weight": (
                "bfloat16",
                [2, 1280],
            ),
            "text_encoder_2.text_model.encoder.layers.0.self_attn.q_proj.lora_B.weight": (
                "bfloat16",
                [1280, 2],
            ),
        },
        peft_md,
    )
    zeros(
        "diffusers",
        {
            "unet.mid_block.attentions.0.transformer_blocks.0.attn2.processor.to_k_lora.down.weight": (
                "float32",
                [2, 1024],
            ),
            "unet.mid_block.attentions.0.transformer_blocks.0.attn2.processor.to_k_lora.up.weight": (
                "float32",
                [1280, 2],
            ),
            "text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_linear_layer.down.weight": (
                "float32",
                [2, 1024],
            ),
            "text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_linear_layer.up.weight": (
                "float32",
                [1024, 2],
            ),
        },
        {"format": "pt"},
    )
    zeros(
        "lycoris",
        {
            "lora_unet_a.hada_w1_a": ("float16", [8, 2]),
            "lora_unet_a.hada_w1_b": ("float16", [2, 8]),
            "lora_unet_a.hada_w2_a": ("float16", [8, 2]),
            "lora_unet_a.hada_w2_b": ("float16", [2, 8]),
            "lora_unet_a.alpha": ("float16", []),
            "lora_unet_b.lokr_w1": ("float16", [4, 4]),
            "lora_unet_b.lokr_w2_a": ("float16", [4, 2]),
            "lora_unet_b.lokr_w2_b": ("float16", [2, 4]),
            "lora_unet_double_blocks_0_img_attn_qkv.lokr_w1": ("float16", [2, 2]),
            "lora_unet_double_blocks_0_img_attn_qkv.lokr_w2": ("float16", [2, 2]),
            "lora_unet_c.diff": ("float16", [4, 4]),
            "lora_unet_d.on_input": ("float16", [4]),
            "lora_unet_e.oft_blocks": ("float16", [2, 2, 2]),
            "lora_unet_f.w_norm": ("float16", [4]),
            "lora_unet_g.a1.weight": ("float16", [2, 4]),
        },
        {"ss_network_module": "lycoris.kohya", "ss_network_args": json.dumps({"algo": "lokr"})},
    )
    zeros(
        "cloneofsimo",
        {
            "unet:0:down": ("float32", [1, 768]),
            "unet:0:up": ("float32", [320, 1]),
            "text_encoder:0:down": ("float32", [1, 768]),
            "text_encoder:0:up": ("float32", [768, 1]),
            "<s1>": ("float32", [768]),
        },
        {"unet": json.dumps(["CrossAttention"]), "unet:0:rank": "1"},
    )
    return out


def real_seeds() -> list[Path]:
    return sorted(FIXTURES.rglob("*.safetensors")) if FIXTURES.is_dir() else []


def real_excerpts(folder: Path, max_tensors: int = 48) -> list[Path]:
    """Each real fixture cut down to its first tensors (whole modules, real bytes) and its full
    real metadata: the real keys, shapes and ss_* values at a fraction of the cost per case."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for path in real_seeds():
        s = Seed(path)
        tensors = {}
        for name in sorted(s.tensor_names())[:max_tensors]:
            e = s.header[name]
            a, b = e["data_offsets"]
            tensors[name] = (e["dtype"], e["shape"], s.data[a:b])
        out.append(write_safetensors(folder / f"excerpt_{path.name}", tensors, s.header.get("__metadata__")))
    return out


# --------------------------------------------------------------------------- hostile values

RAW = "\x00RAW{}\x00"  # placeholder for raw JSON tokens json.dumps cannot produce
RAW_TOKENS = [
    "NaN",
    "Infinity",
    "-Infinity",
    "1e999",
    "-1e999",
    "1e-400",
    "-0",
    "1" + "0" * 4299,  # the largest integer Python's json accepts
    "1" + "0" * 4300,  # one digit more: refused
    "[" * 990 + "]" * 990,
    "[" * 5000 + "]" * 5000,
    '{"a":' * 900 + "1" + "}" * 900,
    '{"a":' * 3000 + "1" + "}" * 3000,
    '"\\ud800"',
    '"\\udfff\\ud800"',
    '"\\ud83d\\ude00"',
    '"\\u0000"',
]
SCALARS: list[object] = [
    None,
    True,
    False,
    0,
    1,
    -1,
    2,
    3,
    4,
    8,
    768,
    1024,
    2048,
    2**31,
    2**32,
    2**53 + 1,
    2**63,
    2**64 - 1,
    2**64,
    10**30,
    10**400,
    -(2**63),
    0.0,
    -0.0,
    0.5,
    1.5,
    1e308,
    5e-324,
    "",
    "F16",
    "BF16",
    "F32",
    "x",
    "0",
    "1",
    "-1",
    "[]",
    "{}",
    "\n",
    "a\nb",
    "\u202eevil",
    "\x00",
    "\U0001f600",
    "None",
    "True",
    "(512, 512)",
    "e3b0c442" * 8,
]
BOMB_STRINGS = [
    "1" * 40_000 + "x",  # a number that is not one (was quadratic in a regex)
    "1." + "1" * 40_000 + "x",
    "(" * 200 + ")" * 200,
    "(" + "-" * 8000 + "1)",
    "(" + "(1," * 3000 + ")" * 3001,
    "(1+2j)",
    "({1: 2}, ...)",
    "(" + "9" * 4400 + ")",
    "[" * 995 + "]" * 995,
    "[" * 200_000,
    "{" * 100 + "}" * 100,
    json.dumps({"10_x": {"t": 10**400}}),
    json.dumps({"10_x": {"t": float("nan"), "u": True, "v": -5}}),
    json.dumps({"10_x": ["not", "a", "dict"]}),
    json.dumps({"lora_alpha": 10**400, "r": 10**400, "use_rslora": True}),
    json.dumps({"unet.lora_alpha": "8", "unet.alpha_pattern": {"": 10**400, "to_k": float("inf")}}),
    json.dumps(["a"] * 1000),
    "\u202e" * 1000,
    "x" * 200_000,
]


def rand_text(rng: random.Random) -> str:
    pick = rng.random()
    if pick < 0.3:
        return rng.choice([s for s in SCALARS if isinstance(s, str)])
    if pick < 0.6:
        return (
            "".join(
                chr(rng.choice([rng.randint(32, 126), rng.randint(0, 0x2FFFF)]))
                for _ in range(rng.randint(0, 12))
            )
            .encode("utf-8", "replace")
            .decode("utf-8", "replace")
        )
    if pick < 0.8:
        return rng.choice(MODULE_NAMES) + rng.choice(PART_SUFFIXES)
    return rng.choice(BOMB_STRINGS)


def rand_json(rng: random.Random, depth: int = 0) -> object:
    pick = rng.random()
    if depth >= 4 or pick < 0.5:
        return rng.choice(SCALARS) if rng.random() < 0.8 else rand_text(rng)
    if pick < 0.6:
        return RAW.format(rng.randrange(len(RAW_TOKENS)))
    if pick < 0.8:
        return [rand_json(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {rand_text(rng): rand_json(rng, depth + 1) for _ in range(rng.randint(0, 4))}


def rand_shape(rng: random.Random) -> object:
    pick = rng.random()
    if pick < 0.15:
        return rand_json(rng, 2)
    dims = [0, 1, 1, 2, 3, 4, 8, 320, 768, 1280, 2048, 2**32, 2**63, 2**64 - 1, 2**64, -1]
    n = rng.choice([0, 0, 1, 2, 2, 2, 3, 4, 4, 5, 17])
    return [rng.choice(dims) for _ in range(n)]


def rand_offsets(rng: random.Random, size: int) -> object:
    pick = rng.random()
    if pick < 0.15:
        return rand_json(rng, 2)
    ends = [0, 1, 2, size // 2, size - 1, size, size + 1, 2**63, 2**64 - 1, 2**64, -1, 10**30]
    a, b = rng.choice(ends), rng.choice(ends)
    return rng.choice([[a, b], [min(a, b), max(a, b)], [a], [a, b, b], [float(a), b], [True, b]])


def encode(obj: object, *, pad: bool = True) -> bytes:
    """json.dumps with RAW placeholders replaced by their raw tokens (NaN, 1e999, deep nesting, ...)."""
    text = json.dumps(obj, ensure_ascii=False, allow_nan=True)
    for i, tok in enumerate(RAW_TOKENS):
        text = text.replace(json.dumps(RAW.format(i), ensure_ascii=False), tok)
    raw = text.encode("utf-8", "surrogatepass")
    if pad:
        raw += b" " * (-len(raw) % 8)
    return raw


# --------------------------------------------------------------------------- mutators


class Seed:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.raw = path.read_bytes()
        self.n = struct.unpack("<Q", self.raw[:8])[0]
        self.header = json.loads(self.raw[8 : 8 + self.n])
        self.data = self.raw[8 + self.n :]

    def rebuild(self, header: object, *, data: bytes | None = None) -> bytes:
        hb = encode(header)
        return struct.pack("<Q", len(hb)) + hb + (self.data if data is None else data)

    def tensor_names(self) -> list[str]:
        return [k for k in self.header if k != "__metadata__"]


def m_flip(rng: random.Random, s: Seed) -> bytes:
    b = bytearray(s.raw)
    for _ in range(rng.randint(1, 16)):
        i = rng.randrange(8 + s.n) if rng.random() < 0.9 else rng.randrange(8)
        b[i] ^= 1 << rng.randrange(8)
    return bytes(b)


def _span(rng: random.Random, s: Seed) -> int:
    return rng.randrange(8, 8 + s.n) if rng.random() < 0.95 else rng.randrange(8)


def m_insert(rng: random.Random, s: Seed) -> bytes:
    i = _span(rng, s)
    alphabet = b'{}[]",:\\ 0123456789-.eE\x00\xff\xc3\x80tfn'
    chunk = bytes(
        rng.choice(alphabet) if rng.random() < 0.7 else rng.randrange(256) for _ in range(rng.randint(1, 64))
    )
    out = s.raw[:i] + chunk + s.raw[i:]
    if rng.random() < 0.5 and i >= 8:  # keep the header length in step with the edit
        out = struct.pack("<Q", s.n + len(chunk)) + out[8:]
    return out


def m_delete(rng: random.Random, s: Seed) -> bytes:
    i = _span(rng, s)
    k = rng.randint(1, 64)
    out = s.raw[:i] + s.raw[i + k :]
    if rng.random() < 0.5 and i >= 8:
        out = struct.pack("<Q", max(0, s.n - min(k, 8 + s.n - i))) + out[8:]
    return out


def m_length(rng: random.Random, s: Seed) -> bytes:
    size = len(s.raw)
    claim = rng.choice(
        [
            0,
            1,
            2,
            7,
            8,
            s.n - 1,
            s.n + 1,
            s.n - 8,
            s.n + 8,
            size - 7,
            size - 8,
            size - 9,
            size,
            2**32,
            2**40,
            2**63,
            2**64 - 1,
            100_000_001,
            0x0280,
            rng.getrandbits(64),
            rng.getrandbits(20),
        ]
    )
    return struct.pack("<Q", max(0, claim)) + s.raw[8:]


def m_truncate(rng: random.Random, s: Seed) -> bytes:
    where = rng.choice(
        [
            rng.randrange(0, 8),
            rng.randrange(8, 8 + s.n + 1),
            rng.randrange(8 + s.n, len(s.raw) + 1),
            8 + s.n - 1,
            8 + s.n + 1,
        ]
    )
    return s.raw[: max(0, where)]


def m_entry(rng: random.Random, s: Seed) -> bytes:
    header = json.loads(json.dumps(s.header))
    names = s.tensor_names()
    for _ in range(rng.randint(1, 4)):
        if not names:
            break
        name = rng.choice(names)
        e = header[name]
        what = rng.randrange(7)
        if what == 0 or not isinstance(e, dict):
            header[name] = rand_json(rng, 1)
        elif what == 1:
            e["dtype"] = rng.choice([*DTYPE_BITS, "F17", "f16", "", None, 16, ["F16"], "torch.float16"])
        elif what == 2:
            e["shape"] = rand_shape(rng)
        elif what == 3:
            e["data_offsets"] = rand_offsets(rng, len(s.data))
        elif what == 4:
            e.pop(rng.choice(["dtype", "shape", "data_offsets"]), None)
        elif what == 5:
            e[rand_text(rng)] = rand_json(rng, 2)
        else:  # same shape, other dtype width: byte lengths disagree
            e["dtype"] = rng.choice(list(DTYPE_BITS))
    return s.rebuild(header)


def m_keys(rng: random.Random, s: Seed) -> bytes:
    header = dict(s.header)
    names = s.tensor_names()
    for _ in range(rng.randint(1, 6)):
        if not names:
            break
        name = rng.choice(names)
        if name not in header:
            continue
        value = header.pop(name)
        what = rng.randrange(6)
        if what == 0:
            continue  # dropped: unpaired modules
        if what == 1:
            new = rand_text(rng)
        elif what == 2:  # other part of another module, maybe a clash
            new = rng.choice(MODULE_NAMES) + rng.choice(PART_SUFFIXES)
        elif what == 3:
            new = rng.choice(
                [
                    f"unet:{rng.choice([0, 1, 10**30])}:{rng.choice(['up', 'down'])}",
                    "<s1>",
                    "<" + "x" * 70 + ">",
                    ":",
                    "",
                ]
            )
        elif what == 4:
            new = name + rng.choice(["\n", "\x00", "\u202e", " ", ".alpha", ".lora_up.weight", "_" * 10_000])
        else:
            new = RAW.format(13)  # a lone surrogate in a key
        header[new] = value
    out = s.rebuild(header)
    if rng.random() < 0.2 and names:  # a duplicated key, which json.dumps cannot write
        name = json.dumps(rng.choice(names))
        hb = out[8:].rstrip(b" ").rstrip(b"}") + b"," + name.encode() + b": {}}"
        hb += b" " * (-len(hb) % 8)
        out = struct.pack("<Q", len(hb)) + hb + s.data
    return out


def m_metadata(rng: random.Random, s: Seed) -> bytes:
    header = dict(s.header)
    if rng.random() < 0.1:
        header["__metadata__"] = rand_json(rng, 1)
        return s.rebuild(header)
    md = dict(header.get("__metadata__") or {}) if isinstance(header.get("__metadata__"), dict) else {}
    for _ in range(rng.randint(1, 5)):
        key = rng.choice(METADATA_KEYS) if rng.random() < 0.8 else rand_text(rng)
        pick = rng.random()
        if pick < 0.4:
            md[key] = rng.choice(BOMB_STRINGS)
        elif pick < 0.7:
            md[key] = json.dumps(rand_json(rng, 0))
        elif pick < 0.85:
            md[key] = rand_json(rng, 1)  # not a string at all
        else:
            md[key] = rand_text(rng)
    header["__metadata__"] = md
    return s.rebuild(header)


def m_replace(rng: random.Random, s: Seed) -> bytes:
    if rng.random() < 0.3:
        hb = RAW_TOKENS[rng.randrange(len(RAW_TOKENS))].encode()
    else:
        hb = encode(rand_json(rng, rng.randint(0, 2)))
    data = s.data[: rng.choice([0, 8, 64, len(s.data)])]
    return struct.pack("<Q", len(hb)) + hb + data


def m_synthetic(rng: random.Random, s: Seed) -> bytes:
    """A header built from scratch: real module names, odd parts and shapes, offsets that add up."""
    header: dict[str, object] = {}
    blobs = []
    pos = 0
    for _ in range(rng.randint(1, 8)):
        module = rng.choice(MODULE_NAMES) if rng.random() < 0.9 else rand_text(rng)
        for suffix in rng.sample(PART_SUFFIXES, rng.randint(1, 4)):
            shape = (
                rand_shape(rng)
                if rng.random() < 0.5
                else rng.choice([[2, 768], [320, 2], [2, 4, 3, 3], [8, 2, 1, 1], [], [1], [4, 4]])
            )
            dtype = rng.choice(["F16", "BF16", "F32", "F64", "F8_E4M3", "F8_E5M2", "I8", "F4", "BOOL"])
            nbytes = 4
            if isinstance(shape, list) and all(type(d) is int and 0 <= d < 2**64 for d in shape):
                n = 1
                for d in shape:
                    n *= d
                if (n * DTYPE_BITS[dtype] + 7) // 8 <= 8192:
                    nbytes = (n * DTYPE_BITS[dtype] + 7) // 8
            header[module + suffix] = {"dtype": dtype, "shape": shape, "data_offsets": [pos, pos + nbytes]}
            blobs.append(rng.randbytes(nbytes))  # random bits: NaN and Inf for --deep
            pos += nbytes
    if rng.random() < 0.6:
        header["__metadata__"] = {
            rng.choice(METADATA_KEYS): rng.choice(BOMB_STRINGS) for _ in range(rng.randint(1, 4))
        }
    return s.rebuild(header, data=b"".join(blobs))


MUTATORS: list[Callable[[random.Random, Seed], bytes]] = [
    m_flip,
    m_insert,
    m_delete,
    m_length,
    m_truncate,
    m_entry,
    m_entry,
    m_keys,
    m_metadata,
    m_metadata,
    m_replace,
    m_synthetic,
    m_synthetic,
]

# --------------------------------------------------------------------------- the mutation loop


def _maxrss_bytes() -> int:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024


def test_mutation_loop(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    synth = [Seed(p) for p in synthetic_seeds(tmp_path / "seeds")]
    excerpts = [Seed(p) for p in real_excerpts(tmp_path / "excerpts")]
    real = [Seed(p) for p in real_seeds()]  # whole files: ~1750 tensors, ~0.25 s a case
    work = tmp_path / "cases"
    work.mkdir()
    failures: list[str] = []
    counts: Counter[str] = Counter()
    slowest = (0.0, "")
    rss_before = _maxrss_bytes()
    start = time.monotonic()
    case = 0
    while case < MAX_CASES and time.monotonic() - start < BUDGET_S:
        case += 1
        pick = rng.random()
        if real and pick < 0.04:
            seed = rng.choice(real)
        elif excerpts and pick < 0.45:
            seed = rng.choice(excerpts)
        else:
            seed = rng.choice(synth)
        mutate = rng.choice(MUTATORS)
        data = mutate(rng, seed)
        suffix = rng.choice([".safetensors"] * 12 + [".bin", ".pt", ".ckpt"])
        path = work / f"case{case:05d}{suffix}"
        path.write_bytes(data)
        deep = mutate is m_synthetic or rng.random() < 0.2
        t0 = time.perf_counter()
        problem = probe(path, deep=deep)
        took = time.perf_counter() - t0
        if took > slowest[0]:
            slowest = (took, f"{mutate.__name__} on {seed.path.name}")
        counts[mutate.__name__] += 1
        if problem is None:
            path.unlink()
            continue
        kept = tmp_path / f"FAILED-{path.name}"
        path.rename(kept)
        failures.append(
            f"case {case} ({mutate.__name__} on {seed.path.name}, deep={deep}, seed {SEED}): {problem} [{kept}]"
        )
        if len(failures) >= 20:
            break
    elapsed = time.monotonic() - start
    grown = _maxrss_bytes() - rss_before
    print(
        f"\nhostile mutation loop: {case} cases in {elapsed:.1f} s (seed {SEED}, {len(real)} real files, "
        f"{len(excerpts)} real excerpts, {len(synth)} synthetic seeds), slowest {slowest[0] * 1000:.0f} ms ({slowest[1]}), max RSS grew {grown >> 20} MiB; "
        + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
    )
    assert not failures, "\n".join(failures)
    assert case >= MIN_CASES, f"only {case} cases ran in {BUDGET_S} s"
    assert grown < 512 << 20, f"max RSS grew by {grown >> 20} MiB"


# --------------------------------------------------------------------------- hypothesis: random headers

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=20), inner, max_size=5),
    max_leaves=25,
)
names = st.one_of(
    st.text(max_size=30),
    st.builds(lambda m, s: m + s, st.sampled_from(MODULE_NAMES), st.sampled_from(PART_SUFFIXES)),
)
dims = st.one_of(
    st.integers(min_value=0, max_value=8),
    st.sampled_from([768, 2048, 2**63, 2**64 - 1, 2**64]),
    st.integers(),
)
entries = st.fixed_dictionaries(
    {
        "dtype": st.one_of(st.sampled_from(sorted(DTYPE_BITS)), json_values),
        "shape": st.one_of(st.lists(dims, max_size=5), json_values),
        "data_offsets": st.one_of(
            st.lists(st.integers(min_value=-2, max_value=2**65), min_size=2, max_size=2), json_values
        ),
    }
)
metadata = st.dictionaries(
    st.one_of(st.sampled_from(METADATA_KEYS), st.text(max_size=10)),
    st.one_of(st.text(max_size=30), st.sampled_from(BOMB_STRINGS), json_values.map(json.dumps), json_values),
    max_size=6,
)
headers = st.one_of(
    json_values,
    st.dictionaries(names, st.one_of(entries, json_values), max_size=8),
    st.builds(
        lambda t, m: {**t, "__metadata__": m},
        st.dictionaries(names, entries, max_size=8),
        st.one_of(metadata, json_values),
    ),
)

_HYPO = settings(
    max_examples=int(os.environ.get("LORAHUB_FUZZ_EXAMPLES", "250")),
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)


@_HYPO
@given(header=headers, data=st.binary(max_size=96), deep=st.booleans())
def test_random_json_headers(tmp_path: Path, header: object, data: bytes, deep: bool) -> None:
    hb = json.dumps(header, allow_nan=True).encode("utf-8", "surrogatepass")
    path = tmp_path / "h.safetensors"
    path.write_bytes(struct.pack("<Q", len(hb)) + hb + data)
    problem = probe(path, deep=deep)
    assert problem is None, f"{problem}; header {hb[:300]!r}"


@_HYPO
@given(blob=st.binary(max_size=200), suffix=st.sampled_from([".safetensors", ".bin", ".pt", ".ckpt"]))
def test_random_bytes(tmp_path: Path, blob: bytes, suffix: str) -> None:
    path = tmp_path / f"b{suffix}"
    path.write_bytes(blob)
    problem = probe(path)
    assert problem is None, f"{problem}; bytes {blob[:100]!r}"


# --------------------------------------------------------------------------- targeted hostile cases


def _entry(dtype: str, shape: list[int], a: int, b: int) -> dict[str, object]:
    return {"dtype": dtype, "shape": shape, "data_offsets": [a, b]}


def _write(path: Path, header: object, data: bytes = b"", *, length: int | None = None) -> Path:
    hb = header if isinstance(header, bytes) else encode(header)
    path.write_bytes(struct.pack("<Q", len(hb) if length is None else length) + hb + data)
    return path


PAIR = {
    f"{CROSS_K}.lora_down.weight": _entry("F16", [1, 1], 0, 2),
    f"{CROSS_K}.lora_up.weight": _entry("F16", [1, 1], 2, 4),
}

#: name -> (header, data region, expected validity)
TARGETED: dict[str, tuple[object, bytes, bool]] = {
    "16 dims of 2^64-1": (
        {
            f"{CROSS_K}.lora_down.weight": _entry("F16", [2**64 - 1] * 16, 0, 2),
            **{k: v for k, v in PAIR.items() if "up" in k},
        },
        b"\0" * 4,
        False,
    ),
    "rank 2^63": (
        {
            f"{CROSS_K}.lora_down.weight": _entry("F16", [2**63, 1], 0, 2),
            f"{CROSS_K}.lora_up.weight": _entry("F16", [1, 2**63], 2, 4),
        },
        b"\0" * 4,
        False,
    ),
    "dims past u64": ({f"{CROSS_K}.lora_down.weight": _entry("F16", [10**400, 1], 0, 2)}, b"\0\0", False),
    "offsets past u64": (
        {f"{CROSS_K}.lora_down.weight": _entry("F16", [1], 10**400, 10**400 + 2)},
        b"\0\0",
        False,
    ),
    "empty shapes for up/down": (
        {
            f"{CROSS_K}.lora_down.weight": _entry("F16", [], 0, 2),
            f"{CROSS_K}.lora_up.weight": _entry("F16", [], 2, 4),
        },
        b"\0" * 4,
        False,
    ),
    "zero dims": (
        {
            f"{CROSS_K}.lora_down.weight": _entry("F16", [0, 768], 0, 0),
            f"{CROSS_K}.lora_up.weight": _entry("F16", [320, 0], 0, 0),
        },
        b"",
        True,
    ),
    "scalar lokr": (
        {"lora_unet_a.lokr_w1": _entry("F16", [], 0, 2), "lora_unet_a.lokr_w2": _entry("F16", [1], 2, 4)},
        b"\0" * 4,
        False,
    ),
    "scalar loha": (
        {
            f"lora_unet_a.hada_w{i}_{ab}": _entry("F16", [], 2 * j, 2 * j + 2)
            for j, (i, ab) in enumerate([(1, "a"), (1, "b"), (2, "a"), (2, "b")])
        },
        b"\0" * 8,
        False,
    ),
    "number regex bomb": (
        {"__metadata__": {"ss_steps": "1" * 60_000 + "x", "ss_lr": "1." + "1" * 60_000 + "x"}, **PAIR},
        b"\0" * 4,
        True,
    ),
    "deep JSON in ss_datasets": (
        {
            "__metadata__": {
                "ss_datasets": "[" * 995 + "]" * 995,
                "ss_tag_frequency": '{"a":' * 2000 + "1" + "}" * 2000,
            },
            **PAIR,
        },
        b"\0" * 4,
        True,
    ),
    "deep non-string metadata": ({"__metadata__": {"x": RAW.format(9)}, **PAIR}, b"\0" * 4, False),
    "literal_eval bombs": (
        {"__metadata__": {f"ss_{i}": b for i, b in enumerate(BOMB_STRINGS[2:8])}, **PAIR},
        b"\0" * 4,
        True,
    ),
    "huge tag counts": (
        {
            "__metadata__": {
                "ss_tag_frequency": json.dumps({"10_x": {"x": 10**400}}),
                "ss_dataset_dirs": json.dumps({"10_x": {"img_count": 10**400}}),
            },
            **PAIR,
        },
        b"\0" * 4,
        True,
    ),
    "huge peft alpha": (
        {
            "__metadata__": {
                "lora_adapter_metadata": json.dumps({"lora_alpha": 10**400, "use_rslora": True})
            },
            "unet.a.lora_A.weight": _entry("F16", [1, 1], 0, 2),
            "unet.a.lora_B.weight": _entry("F16", [1, 1], 2, 4),
        },
        b"\0" * 4,
        True,
    ),
    "lone surrogate key": (
        b'{"a\\ud800.lora_down.weight": {"dtype":"F16","shape":[1],"data_offsets":[0,2]}}',
        b"\0\0",
        False,
    ),
    "lone surrogate metadata": (b'{"__metadata__": {"ss_output_name": "\\udc00"}, "k": 1}', b"", False),
    "100k-character key with newlines": (
        {("lora_unet_\n" * 10_000) + ".lora_down.weight": _entry("F16", [1, 1], 0, 2)},
        b"\0\0",
        False,
    ),
    "2k unpaired tensors": (
        {f"lora_unet_m{i}.lora_down.weight": _entry("F16", [1, 1], 2 * i, 2 * i + 2) for i in range(2_000)},
        b"\0" * 4_000,
        False,
    ),
    "many overlapping tensors": (
        {f"lora_unet_m{i}.lora_up.weight": _entry("F16", [1, 1], 0, 2) for i in range(2_000)},
        b"\0\0",
        False,
    ),
}


@pytest.mark.parametrize("name", sorted(TARGETED))
def test_targeted_hostile_headers(tmp_path: Path, name: str) -> None:
    header, data, valid = TARGETED[name]
    path = _write(tmp_path / "t.safetensors", header, data)
    for deep in (False, True):
        problem = probe(path, deep=deep)
        assert problem is None, f"{name} (deep={deep}): {problem}"
    report = validate_file(path)
    assert report.valid is valid, report.errors[:3]


def test_billion_laughs_model_card_beside_the_file(tmp_path: Path) -> None:
    """inspect reads README.md beside the adapter: YAML aliases must not explode."""
    lol = ["lol: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, 10):
        lol.append(f"l{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    card = (
        "---\n"
        + "\n".join(lol)
        + "\ntrigger_words: [*a9, *a9]\ntrainedWords: *a9\ntitle: *a9\ninstance_prompt: *a9\n---\n"
    )
    (tmp_path / "README.md").write_text(card)
    path = _write(tmp_path / "pytorch_lora_weights.safetensors", PAIR, b"\0" * 4)
    assert probe(path) is None


@pytest.mark.parametrize(
    "front",
    [
        'title: "\\ud800"\ninstance_prompt: "a \\udfff b"',
        'trigger_words: ["\\ud800", 5, [1, 2], {a: b}, null]\ntitle: 12',
        'trainedWords: "\\ud800"\ntitle: [x]',
        "[just, a, list]",
        "title: !!python/object/apply:os.system [echo owned]",  # safe_load refuses it
    ],
)
def test_hostile_model_card_fields(tmp_path: Path, front: str) -> None:
    (tmp_path / "README.md").write_text(f"---\n{front}\n---\n")
    path = _write(tmp_path / "pytorch_lora_weights.safetensors", PAIR, b"\0" * 4)
    assert probe(path) is None


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes on this platform")
def test_named_pipe_is_refused_not_waited_on(tmp_path: Path) -> None:
    fifo = tmp_path / "adapter.safetensors"
    os.mkfifo(fifo)
    start = time.monotonic()
    with watchdog(HANG_S):
        report = validate_file(fifo)
        with pytest.raises(LorahubError, match="not a regular file"):
            inspect_file(fifo)
    assert time.monotonic() - start < CASE_LIMIT_S
    assert not report.valid and "not a regular file" in report.errors[0]


# --------------------------------------------------------------------------- memory: headers that claim gigabytes


@pytest.mark.parametrize("claim", [2**63, 2**64 - 1, 2**40, 2**32, 100_000_001, "size-7", "size-8"])
def test_huge_header_claims_allocate_nothing(tmp_path: Path, claim: int | str) -> None:
    body = encode(PAIR) + b"\0" * 4
    size = 8 + len(body)
    n = {"size-7": size - 7, "size-8": size - 8}.get(claim, claim)  # type: ignore[call-overload]
    path = _write(tmp_path / "claim.safetensors", body, length=n)
    validate_file(path)  # warm imports outside the measurement
    tracemalloc.start()
    try:
        report = validate_file(path)
        with pytest.raises(LorahubError):
            inspect_file(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert not report.valid and len(report.errors) == 1
    assert str(n) in report.errors[0] or "not valid JSON" in report.errors[0], report.errors
    assert peak < 256 << 10, f"peak {peak} bytes for a header claiming {n} bytes"


def test_header_above_the_limit_in_a_large_sparse_file(tmp_path: Path) -> None:
    """A 300 MB (sparse) file whose header claims 200 MB: refused by the limit, nothing read."""
    path = tmp_path / "sparse.safetensors"
    claim = 200_000_000
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", claim) + b"{")
        fh.truncate(300_000_000)
    tracemalloc.start()
    try:
        report = validate_file(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert not report.valid
    assert "exceeds" in report.errors[0] and str(claim) in report.errors[0]
    assert peak < 256 << 10


def test_mutated_real_header_memory_is_proportional(shared_fixtures: Path) -> None:
    """The biggest real header (~250 KB): validate + inspect peak stays within a small multiple of it."""
    biggest = max(
        shared_fixtures.rglob("*.safetensors"), key=lambda p: struct.unpack("<Q", p.read_bytes()[:8])[0]
    )
    n = struct.unpack("<Q", biggest.read_bytes()[:8])[0]
    validate_file(biggest)
    tracemalloc.start()
    try:
        validate_file(biggest)
        inspect_file(biggest)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 200 * n + (8 << 20), f"peak {peak >> 20} MiB for a {n}-byte header"


# --------------------------------------------------------------------------- the command line, in a subprocess


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "LORAHUB_DEBUG"}
    return subprocess.run(
        [sys.executable, "-m", "lorahub.cli", *args], capture_output=True, text=True, env=env, timeout=120
    )


def test_cli_on_hostile_files_one_line_each_no_traceback(tmp_path: Path) -> None:
    files = [
        _write(tmp_path / "claims_2_63.safetensors", encode(PAIR), b"\0" * 4, length=2**63),
        _write(tmp_path / "truncated.safetensors", encode(PAIR)[:40], length=len(encode(PAIR))),
        _write(tmp_path / "not_json.safetensors", b'{"a": [1, 2,, 3]}   ', b""),
        _write(tmp_path / "deep.safetensors", b"[" * 100_000 + b"]" * 100_000),
        _write(tmp_path / "surrogate.safetensors", b'{"\\ud800": {}}', b""),
        tmp_path / "model.ckpt",
    ]
    files[-1].write_bytes(b"\x80\x04\x95" + b"\0" * 32)
    res = _cli("validate", *map(str, files))
    out = res.stdout + res.stderr
    assert res.returncode == 1, out
    assert "Traceback" not in out
    lines = res.stdout.splitlines()
    for f in files:
        i = lines.index(next(line for line in lines if line.endswith(str(f))))
        assert "INVALID" in lines[i]
        assert lines[i + 1].startswith("    error: "), lines[i : i + 2]
        assert i + 2 == len(lines) or not lines[i + 2].startswith("    error: "), (
            f"more than one error for {f}"
        )
    assert f"{len(files)} file(s) checked, {len(files)} invalid" in res.stderr

    res = _cli("validate", "--json", *map(str, files))
    assert res.returncode == 1 and "Traceback" not in res.stdout + res.stderr
    data = json.loads(res.stdout)
    assert [d["path"] for d in data] == [str(f) for f in files]
    assert all(not d["valid"] and len(d["errors"]) == 1 for d in data)

    for f in files[:3] + files[-1:]:
        res = _cli("inspect", str(f))
        assert res.returncode == 1, res.stdout + res.stderr
        assert "Traceback" not in res.stdout + res.stderr
        assert res.stdout == ""
        err = res.stderr.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("Error: ") and str(f) in err[0], err
