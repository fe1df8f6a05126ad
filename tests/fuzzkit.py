"""Seeds and mutators of the hostile-input suites: mutated real and synthetic safetensors files.

Shared by the CLI's suite (``tests/adapters/test_hostile.py``: ``validate_file``/``inspect_file``
on every case) and the server's (``tests/server/test_server_hostile.py``: every case uploaded
through the Hub API of a running ``lorahub serve``). Everything here is deterministic for a given
``random.Random``: :func:`draw_case` makes the same case sequence for the same seed.
"""

from __future__ import annotations

import json
import random
import struct
from collections.abc import Callable
from pathlib import Path

from testkit import FIXTURES

from lorahub.adapters.formats import _SUFFIXES
from lorahub.adapters.header import DTYPE_BITS
from lorahub.adapters.writer import write_safetensors, write_safetensors_zeros

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


#: The file suffixes a case is saved under, drawn uniformly (mostly safetensors; pickle names too).
SUFFIXES = [".safetensors"] * 12 + [".bin", ".pt", ".ckpt"]

Mutator = Callable[[random.Random, Seed], bytes]


def draw_case(
    rng: random.Random, synth: list[Seed], excerpts: list[Seed], real: list[Seed], *, p_real: float = 0.04
) -> tuple[Seed, Mutator, bytes, str]:
    """One case: ``(seed, mutator, file bytes, suffix)``. Whole real files are drawn ``p_real`` of
    the time (they are slow: ~1750 tensors), real excerpts up to 45%, synthetic seeds the rest."""
    pick = rng.random()
    if real and pick < p_real:
        seed = rng.choice(real)
    elif excerpts and pick < 0.45:
        seed = rng.choice(excerpts)
    else:
        seed = rng.choice(synth)
    mutate = rng.choice(MUTATORS)
    data = mutate(rng, seed)
    suffix = rng.choice(SUFFIXES)
    return seed, mutate, data, suffix
