"""``validate_file`` / ``lorahub validate``: one test per error and warning class of the spec.

Every file is built here, from the writer helpers or from raw bytes for broken
headers. Each test asserts the verdict, the kind of message (naming the key or
the byte offset) and that every message is a single line.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import pickletools
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from lorahub.adapters.validate import validate_file, validate_paths
from lorahub.adapters.writer import write_numpy, write_safetensors, write_safetensors_zeros
from lorahub.cli.main import cli
from lorahub.schemas.adapters import ValidationReport

# --------------------------------------------------------------------------- helpers

CROSS_K = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k"
TE_Q = "lora_te_text_model_encoder_layers_0_self_attn_q_proj"


def kohya_arrays(rank: int = 4, *, alpha: bool = True, cross: int = 768) -> dict[str, np.ndarray]:
    """A tiny but well-formed kohya SD LoRA: one cross-attention key module, one text-encoder module."""
    rng = np.random.default_rng(0)
    arrays = {
        f"{CROSS_K}.lora_down.weight": rng.standard_normal((rank, cross)).astype(np.float16),
        f"{CROSS_K}.lora_up.weight": rng.standard_normal((320, rank)).astype(np.float16),
        f"{TE_Q}.lora_down.weight": rng.standard_normal((rank, 768)).astype(np.float16),
        f"{TE_Q}.lora_up.weight": rng.standard_normal((768, rank)).astype(np.float16),
    }
    if alpha:
        arrays[f"{CROSS_K}.alpha"] = np.array(rank / 2, dtype=np.float16)
        arrays[f"{TE_Q}.alpha"] = np.array(rank / 2, dtype=np.float16)
    return arrays


def good_file(path: Path, metadata: dict[str, str] | None = None, **kw) -> Path:  # noqa: ANN003
    return write_numpy(path, kohya_arrays(**kw), metadata)


def raw_file(path: Path, header: object, data: bytes = b"", *, length: int | None = None) -> Path:
    """Write ``8-byte length + header + data``; ``header`` is an object (JSON-encoded) or raw bytes."""
    hb = header if isinstance(header, bytes) else json.dumps(header).encode("utf-8")
    n = len(hb) if length is None else length
    path.write_bytes(struct.pack("<Q", n) + hb + data)
    return path


def entry(dtype: str, shape: list[int], begin: int, end: int) -> dict[str, object]:
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


def one_line(report: ValidationReport) -> ValidationReport:
    for msg in report.errors + report.warnings:
        assert isinstance(msg, str) and msg.strip(), report
        assert "\n" not in msg and "\r" not in msg, msg
        assert len(msg) < 500, msg
    return report


def check(path: Path, **kw) -> ValidationReport:  # noqa: ANN003
    report = one_line(validate_file(path, **kw))
    assert report.path == str(path)
    assert report.valid == (not report.errors)
    return report


def only_error(report: ValidationReport, *needles: str) -> str:
    """The report is invalid and some error contains every needle; return that error."""
    assert not report.valid, report
    hits = [e for e in report.errors if all(n in e for n in needles)]
    assert hits, (needles, report.errors)
    return hits[0]


# --------------------------------------------------------------------------- the good file


def test_well_formed_kohya_file_is_valid(tmp_path: Path) -> None:
    r = check(good_file(tmp_path / "ok.safetensors"), deep=True)
    assert r.valid and r.errors == [] and r.warnings == []


def test_other_tools_files_are_valid(lokr_file: Path, legacy_files: list[Path], sd15_kohya_file: Path) -> None:
    """Files written at test time by lycoris-lora, the cloneofsimo layout and the kohya layout."""
    for f in (lokr_file, *legacy_files, sd15_kohya_file):
        r = check(f, deep=True)
        assert r.valid and r.errors == [], (f, r.errors)


def test_real_fixtures_are_valid(shared_fixtures: Path) -> None:
    files = sorted(shared_fixtures.rglob("*.safetensors"))
    assert files
    for f in files:
        r = check(f)
        assert r.valid, (f, r.errors)


# --------------------------------------------------------------------------- errors: the container


def test_not_a_safetensors_file_too_short(tmp_path: Path) -> None:
    p = tmp_path / "tiny.safetensors"
    p.write_bytes(b"hey")
    msg = only_error(check(p), "not a safetensors file")
    assert "3 bytes" in msg


def test_text_file_named_safetensors(tmp_path: Path) -> None:
    p = tmp_path / "readme.safetensors"
    p.write_text("This is not a model, it is a text file with some words in it.\n")
    # the first 8 bytes read as a length far past the end of the file
    only_error(check(p), "header length", "past the end")


def test_empty_file(tmp_path: Path) -> None:
    p = tmp_path / "empty.safetensors"
    p.write_bytes(b"")
    only_error(check(p), "0 bytes")


def test_zero_header_length(tmp_path: Path) -> None:
    only_error(check(raw_file(tmp_path / "z.safetensors", b"{}", length=0)), "header length is 0")


def test_header_length_past_end_of_file(tmp_path: Path) -> None:
    p = raw_file(tmp_path / "trunc.safetensors", {"a": entry("F16", [1], 0, 2)}, b"\0\0", length=5000)
    size = p.stat().st_size
    msg = only_error(check(p), "header length 5000", "byte 0")
    assert f"{size}-byte file" in msg


@pytest.mark.parametrize("claim", [2**63, 2**64 - 1, 2**40])
def test_header_length_claiming_gigabytes(tmp_path: Path, claim: int) -> None:
    p = raw_file(tmp_path / "huge.safetensors", b"{}", length=claim)
    only_error(check(p), f"header length {claim}", "past the end")


def test_file_truncated_in_the_data_region(tmp_path: Path) -> None:
    good = good_file(tmp_path / "ok.safetensors").read_bytes()
    p = tmp_path / "cut.safetensors"
    p.write_bytes(good[:-100])
    msg = only_error(check(p), "past the end of the")
    assert "file byte" in msg and f"{len(good) - 100}-byte file" in msg


def test_header_not_json(tmp_path: Path) -> None:
    p = raw_file(tmp_path / "bad.safetensors", b'{"a": {"dtype": "F16",, }}')
    msg = only_error(check(p), "not valid JSON", "at byte")
    assert "at byte 30" in msg  # 8 + 22, the position of the second comma


def test_header_not_utf8(tmp_path: Path) -> None:
    p = raw_file(tmp_path / "bad.safetensors", b'{"\xff": 1}')
    only_error(check(p), "not UTF-8", "offset 10")


@pytest.mark.parametrize(
    ("header", "kind"), [(b"[1, 2]", "list"), (b'"text"', "str"), (b"12", "int"), (b"null", "NoneType")]
)
def test_header_not_an_object(tmp_path: Path, header: bytes, kind: str) -> None:
    only_error(check(raw_file(tmp_path / "arr.safetensors", header)), "not an object", kind)


def test_duplicate_keys_in_header(tmp_path: Path) -> None:
    hb = b'{"k.lora_down.weight": {"dtype":"F16","shape":[1],"data_offsets":[0,2]}, "k.lora_down.weight": {}}'
    only_error(check(raw_file(tmp_path / "dup.safetensors", hb, b"\0\0")), "'k.lora_down.weight' twice")


# --------------------------------------------------------------------------- errors: tensor entries and layout


def _two(down: dict[str, object], up: dict[str, object]) -> dict[str, object]:
    return {f"{CROSS_K}.lora_down.weight": down, f"{CROSS_K}.lora_up.weight": up}


def test_offsets_past_end_of_file(tmp_path: Path) -> None:
    p = raw_file(
        tmp_path / "o.safetensors", _two(entry("F16", [1, 1], 0, 2), entry("F16", [1, 1], 2, 400)), b"\0" * 4
    )
    msg = only_error(check(p), f"{CROSS_K}.lora_up.weight", "past the end")
    data_start = p.stat().st_size - 4
    assert f"file byte {data_start + 400}" in msg


def test_overlapping_offsets(tmp_path: Path) -> None:
    p = raw_file(
        tmp_path / "o.safetensors", _two(entry("F16", [1, 2], 0, 4), entry("F16", [2, 1], 2, 6)), b"\0" * 6
    )
    data_start = p.stat().st_size - 6
    msg = only_error(check(p), "overlaps", f"{CROSS_K}.lora_up.weight")
    assert f"file byte {data_start + 2}" in msg


def test_gap_between_tensors(tmp_path: Path) -> None:
    p = raw_file(
        tmp_path / "g.safetensors", _two(entry("F16", [1, 1], 0, 2), entry("F16", [1, 1], 4, 6)), b"\0" * 6
    )
    data_start = p.stat().st_size - 6
    only_error(check(p), f"file bytes {data_start + 2}..{data_start + 4}", "gap")


@pytest.mark.parametrize(
    "offsets", [[-1, 2], [0], [0, 2, 4], [0.0, 2.0], [True, 2], ["0", "2"], None, [4, 2]]
)
def test_malformed_offsets(tmp_path: Path, offsets: object) -> None:
    bad = {"dtype": "F16", "shape": [1, 1], "data_offsets": offsets}
    p = raw_file(tmp_path / "o.safetensors", _two(bad, entry("F16", [1, 1], 2, 4)), b"\0" * 4)
    only_error(check(p), f"{CROSS_K}.lora_down.weight", "data_offsets")


@pytest.mark.parametrize(
    ("dtype", "shape", "nbytes", "need"),
    [
        ("F16", [2, 2], 4, 8),
        ("F32", [3], 8, 12),
        ("BF16", [], 4, 2),
        ("F16", [0, 4], 2, 0),
        ("F4", [3], 1, 2),
    ],
)
def test_dtype_shape_length_mismatch(
    tmp_path: Path, dtype: str, shape: list[int], nbytes: int, need: int
) -> None:
    p = raw_file(
        tmp_path / "m.safetensors", {f"{CROSS_K}.alpha": entry(dtype, shape, 0, nbytes)}, b"\0" * nbytes
    )
    msg = only_error(check(p), f"{CROSS_K}.alpha", f"needs {need} bytes", f"span {nbytes}")
    assert dtype in msg


def test_unknown_dtype_and_bad_shapes(tmp_path: Path) -> None:
    header = {
        f"{CROSS_K}.lora_down.weight": entry("F17", [1, 1], 0, 2),
        f"{CROSS_K}.lora_up.weight": {"dtype": "F16", "shape": [-1, 1], "data_offsets": [2, 4]},
        f"{TE_Q}.lora_down.weight": {"dtype": "F16", "shape": [1.5, 1], "data_offsets": [4, 6]},
        f"{TE_Q}.lora_up.weight": {"dtype": "F16", "shape": "1x1", "data_offsets": [6, 8]},
        "lora_te_x.lora_down.weight": {"dtype": "F16", "shape": [2**64, 1], "data_offsets": [8, 10]},
        "lora_te_x.lora_up.weight": {"dtype": "F16", "data_offsets": [10, 12]},
    }
    r = check(raw_file(tmp_path / "d.safetensors", header, b"\0" * 12))
    only_error(r, f"{CROSS_K}.lora_down.weight", "unknown dtype 'F17'")
    only_error(r, f"{CROSS_K}.lora_up.weight", "shape [-1, 1]")
    only_error(r, f"{TE_Q}.lora_down.weight", "shape [1.5, 1]")
    only_error(r, f"{TE_Q}.lora_up.weight", 'shape "1x1"')
    only_error(r, "lora_te_x.lora_down.weight", "2^64")
    only_error(r, "lora_te_x.lora_up.weight", "missing shape")


def test_tensor_entry_not_an_object(tmp_path: Path) -> None:
    r = check(raw_file(tmp_path / "e.safetensors", {f"{CROSS_K}.lora_down.weight": [1, 2, 3]}))
    only_error(r, f"{CROSS_K}.lora_down.weight", "not an object")


# --------------------------------------------------------------------------- errors: metadata


@pytest.mark.parametrize(
    ("value", "kind"),
    [(5, "number"), (True, "boolean"), (None, "null"), ({"a": "b"}, "object"), (["x"], "array")],
)
def test_metadata_value_not_a_string(tmp_path: Path, value: object, kind: str) -> None:
    good = good_file(tmp_path / "ok.safetensors").read_bytes()
    n = struct.unpack("<Q", good[:8])[0]
    header = json.loads(good[8 : 8 + n])
    header["__metadata__"] = {"ss_network_dim": value, "ss_fine": "ok"}
    p = raw_file(tmp_path / "md.safetensors", header, good[8 + n :])
    r = check(p)
    msg = only_error(r, "'ss_network_dim'", f"JSON {kind}", "not a string")
    assert len(r.errors) == 1, r.errors
    assert "ss_fine" not in msg


def test_metadata_not_an_object(tmp_path: Path) -> None:
    header = {"__metadata__": ["a", "b"], **_two(entry("F16", [1, 1], 0, 2), entry("F16", [1, 1], 2, 4))}
    only_error(
        check(raw_file(tmp_path / "md.safetensors", header, b"\0" * 4)), "__metadata__", "not an object"
    )


# --------------------------------------------------------------------------- errors: modules


def test_unpaired_down_weight(tmp_path: Path) -> None:
    arrays = kohya_arrays()
    del arrays[f"{CROSS_K}.lora_up.weight"]
    r = check(write_numpy(tmp_path / "u.safetensors", arrays))
    msg = only_error(r, f"module '{CROSS_K}'", "no up (B) weight")
    assert len(r.errors) == 1, r.errors
    assert TE_Q not in msg


def test_unpaired_up_weight(tmp_path: Path) -> None:
    arrays = kohya_arrays()
    del arrays[f"{TE_Q}.lora_down.weight"]
    only_error(
        check(write_numpy(tmp_path / "u.safetensors", arrays)), f"module '{TE_Q}'", "no down (A) weight"
    )


def test_unpaired_peft_a_b(tmp_path: Path) -> None:
    name = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k"
    p = write_safetensors_zeros(
        tmp_path / "peft.safetensors",
        {
            f"{name}.lora_A.weight": ("float16", [4, 768]),
            "unet.mid_block.attentions.0.proj_in.lora_B.weight": ("float16", [1280, 4]),
            "unet.mid_block.attentions.0.proj_in.lora_A.weight": ("float16", [4, 1280]),
        },
    )
    r = check(p)
    only_error(r, f"module '{name}'", "no up (B) weight")
    assert len(r.errors) == 1


def test_unpaired_loha_and_lokr(tmp_path: Path) -> None:
    p = write_safetensors_zeros(
        tmp_path / "ly.safetensors",
        {
            "lora_unet_a.hada_w1_a": ("float16", [8, 4]),
            "lora_unet_a.hada_w1_b": ("float16", [4, 8]),
            "lora_unet_a.hada_w2_a": ("float16", [8, 4]),
            "lora_unet_b.lokr_w1": ("float16", [4, 4]),
            "lora_unet_b.lokr_w2_a": ("float16", [4, 2]),
        },
    )
    r = check(p)
    only_error(r, "module 'lora_unet_a'", "hada_w2_b", "missing")
    only_error(r, "module 'lora_unet_b'", "lokr_w2_b", "missing")


def test_inconsistent_rank_inside_a_module(tmp_path: Path) -> None:
    arrays = kohya_arrays(rank=4)
    arrays[f"{CROSS_K}.lora_up.weight"] = np.zeros((320, 8), dtype=np.float16)
    r = check(write_numpy(tmp_path / "r.safetensors", arrays))
    msg = only_error(r, f"module '{CROSS_K}'", "inconsistent rank")
    assert "4 rows" in msg and "8 columns" in msg
    assert len(r.errors) == 1


def test_inconsistent_loha_rank(tmp_path: Path) -> None:
    p = write_safetensors_zeros(
        tmp_path / "loha.safetensors",
        {
            "lora_unet_a.hada_w1_a": ("float16", [8, 4]),
            "lora_unet_a.hada_w1_b": ("float16", [4, 8]),
            "lora_unet_a.hada_w2_a": ("float16", [8, 2]),
            "lora_unet_a.hada_w2_b": ("float16", [2, 8]),
            "lora_unet_a.alpha": ("float16", []),
        },
    )
    only_error(check(p), "module 'lora_unet_a'", "inconsistent LoHa ranks")


@pytest.mark.parametrize(("down", "up"), [([], [320, 4]), ([4], [320, 4]), ([4, 768], [0]), ([0, 0], [0, 0])])
def test_odd_shapes_for_up_down(tmp_path: Path, down: list[int], up: list[int]) -> None:
    p = write_safetensors_zeros(
        tmp_path / "odd.safetensors",
        {f"{CROSS_K}.lora_down.weight": ("float16", down), f"{CROSS_K}.lora_up.weight": ("float16", up)},
    )
    r = check(p)
    if len(down) < 2 or len(up) < 2:
        only_error(r, f"module '{CROSS_K}'", "at least 2 dimensions")


def test_no_adapter_weights(tmp_path: Path) -> None:
    p = write_safetensors_zeros(tmp_path / "model.safetensors", {"model.layer.weight": ("float32", [4, 4])})
    r = check(p)
    only_error(r, "no LoRA or LyCORIS weights")


# --------------------------------------------------------------------------- errors: non-finite values (--deep)


def _bits(dtype: str, value: float) -> bytes:
    if dtype == "F16":
        return np.array(value, dtype="<f2").tobytes()
    if dtype == "F32":
        return np.array(value, dtype="<f4").tobytes()
    if dtype == "BF16":  # the top half of the float32
        return np.array(value, dtype="<f4").tobytes()[2:]
    raise AssertionError(dtype)


@pytest.mark.parametrize("dtype", ["F16", "BF16", "F32"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_deep_finds_nonfinite(tmp_path: Path, dtype: str, bad: float) -> None:
    size = {"F16": 2, "BF16": 2, "F32": 4}[dtype]
    one, two = _bits(dtype, 1.0), _bits(dtype, -2.5)
    down = [one, two] * 4 * 4  # [4, 8]
    down[13] = _bits(dtype, bad)
    down[30] = _bits(dtype, bad)
    up = [one] * 8 * 4  # [8, 4]
    p = write_safetensors(
        tmp_path / f"nf-{dtype}.safetensors",
        {
            f"{CROSS_K}.lora_down.weight": (dtype, [4, 8], b"".join(down)),
            f"{CROSS_K}.lora_up.weight": (dtype, [8, 4], b"".join(up)),
            f"{CROSS_K}.alpha": (dtype, [], one),
        },
    )
    assert len(b"".join(down)) == 32 * size
    assert check(p).valid  # without --deep no tensor data is read
    r = check(p, deep=True)
    msg = only_error(r, f"{CROSS_K}.lora_down.weight", "2 non-finite")
    assert len(r.errors) == 1, r.errors
    assert "lora_up" not in msg


def test_deep_clean_values_pass(tmp_path: Path) -> None:
    arrays = {k: v.astype(np.float32) for k, v in kohya_arrays().items()}
    arrays[f"{CROSS_K}.lora_down.weight"][0, 0] = np.finfo(np.float32).max  # large but finite
    assert check(write_numpy(tmp_path / "f.safetensors", arrays), deep=True).valid


def test_deep_skips_integer_tensors(tmp_path: Path) -> None:
    arrays = kohya_arrays()
    arrays["lora_unet_x.scale"] = np.array([0x7C00, 0xFFFF], dtype=np.uint16).view(np.int16)
    r = check(write_numpy(tmp_path / "i.safetensors", arrays), deep=True)
    assert not any("non-finite" in e for e in r.errors), r.errors


# --------------------------------------------------------------------------- errors: pickle files (never loaded)

MARKER_NAME = "UNPICKLED-MARKER"


def _leave_marker(path: str) -> str:  # called only if somebody unpickles the payload below
    Path(path).write_text("the payload ran")
    return "boom"


class _Booby:
    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):  # noqa: ANN204
        return (_leave_marker, (self.marker,))


def _payload(marker: Path, protocol: int) -> bytes:
    data = pickle.dumps({"state_dict": {"w": [1.0, 2.0]}, "hook": _Booby(marker)}, protocol=protocol)
    # prove the payload is live without unpickling it: it calls our function when loaded
    ops = [op.name for op, _, _ in pickletools.genops(data)]
    assert "REDUCE" in ops
    assert b"_leave_marker" in data
    return data


def _torch_zip(payload: bytes) -> bytes:
    """The layout torch.save writes: a zip holding archive/data.pkl (+ version, data/ blobs)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("archive/data.pkl", payload)
        zf.writestr("archive/byteorder", "little")
        zf.writestr("archive/data/0", b"\0" * 64)
        zf.writestr("archive/version", "3\n")
    return buf.getvalue()


@pytest.fixture
def no_unpickling(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*a, **k):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("lorahub tried to unpickle")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("model.ckpt", "raw"),
        ("weights.pt", "raw"),
        ("pytorch_lora_weights.bin", "raw"),
        ("old.pth", "raw"),
        ("weights.pt", "zip"),
        ("pytorch_model.bin", "zip"),
        ("disguised.safetensors", "raw"),
        ("disguised.safetensors", "zip"),
    ],
)
@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_pickle_files_are_refused_and_never_loaded(
    tmp_path: Path, no_unpickling: None, name: str, kind: str, protocol: int
) -> None:
    marker = tmp_path / MARKER_NAME
    payload = _payload(marker, protocol)
    p = tmp_path / name
    p.write_bytes(payload if kind == "raw" else _torch_zip(payload))
    r = check(p)
    msg = only_error(r, "refused", "pickle")
    if kind == "zip":
        assert "zip" in msg
    assert len(r.errors) == 1
    assert not marker.exists(), "the pickle payload ran"


def test_pickle_protocol_0_file_refused_by_suffix(tmp_path: Path, no_unpickling: None) -> None:
    marker = tmp_path / MARKER_NAME
    p = tmp_path / "ancient.ckpt"
    p.write_bytes(pickle.dumps(_Booby(marker), protocol=0))  # text pickle: no \x80 magic byte
    only_error(check(p), "refused", "'.ckpt' file that is not safetensors")
    assert not marker.exists()


def test_pickles_in_a_folder_are_reported_and_never_loaded(tmp_path: Path, no_unpickling: None) -> None:
    marker = tmp_path / MARKER_NAME
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.ckpt").write_bytes(_payload(marker, 4))
    (tmp_path / "b.pt").write_bytes(_torch_zip(_payload(marker, 2)))
    good_file(tmp_path / "ok.safetensors")
    res = CliRunner().invoke(cli, ["validate", str(tmp_path), "--json"])
    assert res.exit_code == 1, res.output
    data = {Path(d["path"]).name: d for d in json.loads(res.stdout)}
    assert set(data) == {"a.ckpt", "b.pt", "ok.safetensors"}
    assert not data["a.ckpt"]["valid"] and not data["b.pt"]["valid"] and data["ok.safetensors"]["valid"]
    assert "refused" in data["a.ckpt"]["errors"][0]
    assert not marker.exists()


def test_safetensors_named_bin_is_read(tmp_path: Path) -> None:
    """A .bin suffix alone does not condemn a file: a real safetensors header is read."""
    p = good_file(tmp_path / "adapter.safetensors")
    q = tmp_path / "adapter_model.bin"
    q.write_bytes(p.read_bytes())
    assert check(q).valid


@pytest.mark.parametrize("n", [640, 896, 1152, 1408])
def test_header_length_that_starts_like_a_pickle(tmp_path: Path, n: int) -> None:
    """N = 640 is the bytes 80 02 00..: a pickle's magic. A '{' at byte 8 says safetensors."""
    p = write_safetensors_zeros(
        tmp_path / "ok.safetensors",
        {
            f"{CROSS_K}.lora_down.weight": ("float16", [2, 768]),
            f"{CROSS_K}.lora_up.weight": ("float16", [320, 2]),
        },
    )
    raw = p.read_bytes()
    old = struct.unpack("<Q", raw[:8])[0]
    assert old < n
    padded = raw[8 : 8 + old] + b" " * (n - old)
    q = tmp_path / f"n{n}.safetensors"
    q.write_bytes(struct.pack("<Q", n) + padded + raw[8 + old :])
    assert q.read_bytes()[:2] in (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")
    r = check(q)
    assert r.valid, r.errors


# --------------------------------------------------------------------------- warnings (valid, exit 0)


def test_missing_alpha_warns(tmp_path: Path) -> None:
    r = check(good_file(tmp_path / "na.safetensors", alpha=False))
    assert r.valid
    hits = [w for w in r.warnings if "no alpha" in w]
    assert len(hits) == 1, r.warnings
    assert "2 module(s)" in hits[0] and "alpha = rank" in hits[0]
    assert CROSS_K in hits[0] or TE_Q in hits[0]


def test_base_mismatch_between_metadata_and_shapes_warns(tmp_path: Path) -> None:
    r = check(good_file(tmp_path / "bm.safetensors", {"ss_base_model_version": "sdxl_base_v1-0"}))
    assert r.valid
    assert any("metadata declares sdxl" in w and "shapes say sd1" in w for w in r.warnings), r.warnings
    # the declared family agrees with the shapes: no warning
    r2 = check(good_file(tmp_path / "ok.safetensors", {"ss_base_model_version": "sd_v1"}))
    assert r2.valid and not any("declares" in w for w in r2.warnings)
    r3 = check(
        good_file(
            tmp_path / "xl.safetensors", {"modelspec.architecture": "stable-diffusion-v1/lora"}, cross=2048
        )
    )
    assert any("metadata declares sd1" in w and "shapes say sdxl" in w for w in r3.warnings), r3.warnings


def _tensor_hash(path: Path) -> str:
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    return hashlib.sha256(raw[8 + n :]).hexdigest()


def test_stale_embedded_sshs_model_hash_warns(tmp_path: Path) -> None:
    p = good_file(tmp_path / "h.safetensors")
    right = _tensor_hash(p)
    wrong = hashlib.sha256(b"something else").hexdigest()
    bad = good_file(tmp_path / "stale.safetensors", {"sshs_model_hash": wrong})
    r = check(bad)
    assert r.valid
    hits = [w for w in r.warnings if "sshs_model_hash" in w]
    assert len(hits) == 1, r.warnings
    assert wrong[:12] in hits[0] and right[:12] in hits[0] and "does not match" in hits[0]
    # the right hash (any case) gives no warning
    fine = good_file(tmp_path / "fresh.safetensors", {"sshs_model_hash": right.upper()})
    assert not any("sshs_model_hash" in w for w in check(fine).warnings)
    # LyCORIS 0x... hashes cannot be recomputed: no warning either
    ly = good_file(tmp_path / "ly.safetensors", {"sshs_model_hash": "0x" + wrong})
    assert not any("sshs_model_hash" in w for w in check(ly).warnings)


def test_embedded_hash_with_a_newline_stays_one_line(tmp_path: Path) -> None:
    r = check(good_file(tmp_path / "nl.safetensors", {"sshs_model_hash": "ab\ncd\nef\ngh" + "0" * 52}))
    assert any("sshs_model_hash" in w for w in r.warnings)


def test_unknown_keys_warn(tmp_path: Path) -> None:
    arrays = kohya_arrays()
    arrays["model.diffusion_model.extra"] = np.zeros((2,), dtype=np.float16)
    arrays["optimizer_state"] = np.zeros((2,), dtype=np.float32)
    r = check(write_numpy(tmp_path / "uk.safetensors", arrays))
    assert r.valid
    hits = [w for w in r.warnings if "unknown key" in w]
    assert len(hits) == 1 and hits[0].startswith("2 unknown key(s)")
    assert "'model.diffusion_model.extra'" in hits[0] and "'optimizer_state'" in hits[0]


def test_unknown_keys_with_newlines_and_huge_names_stay_short(tmp_path: Path) -> None:
    header = {
        "a\nb": entry("F16", [1], 0, 2),
        "x" * 100_000: entry("F16", [1], 2, 4),
        f"{CROSS_K}\n.lora_down.weight": entry("F16", [1, 1], 4, 6),
    }
    r = check(raw_file(tmp_path / "nl.safetensors", header, b"\0" * 6))
    assert any("unknown key" in w and "\\n" in w for w in r.warnings), r.warnings


# --------------------------------------------------------------------------- the command: folders, --json, exit codes


def _tree(root: Path) -> dict[str, Path]:
    (root / "a" / "b").mkdir(parents=True)
    (root / "c").mkdir()
    files = {
        "ok": good_file(root / "ok.safetensors"),
        "warn": good_file(root / "a" / "no_alpha.safetensors", alpha=False),
        "bad": raw_file(root / "a" / "b" / "broken.safetensors", b"{nope", b""),
        "pickle": root / "c" / "legacy.ckpt",
    }
    files["pickle"].write_bytes(pickle.dumps({"w": 1}, protocol=2))
    (root / "a" / "notes.txt").write_text("not an adapter")
    (root / "c" / "README.md").write_text("# card")
    (root / "a" / ".hidden.safetensors").write_bytes(b"junk")
    return files


def test_folders_are_scanned_recursively(tmp_path: Path) -> None:
    files = _tree(tmp_path)
    reports = validate_paths([tmp_path])
    got = {Path(r.path): r for r in reports}
    assert set(got) == set(files.values())  # .txt, README and hidden files skipped
    assert [r.path for r in reports] == sorted(r.path for r in reports)
    assert got[files["ok"]].valid and got[files["warn"]].valid
    assert not got[files["bad"]].valid and not got[files["pickle"]].valid
    assert got[files["warn"]].warnings


def test_cli_json_shape_and_exit_code(tmp_path: Path) -> None:
    files = _tree(tmp_path)
    res = CliRunner().invoke(cli, ["validate", str(tmp_path), "--json"])
    assert res.exit_code == 1
    data = json.loads(res.stdout)  # stdout holds the JSON and nothing else
    assert isinstance(data, list) and len(data) == 4
    for item in data:
        assert set(item) == {"path", "valid", "errors", "warnings"}
        assert isinstance(item["valid"], bool)
        assert all(isinstance(m, str) and "\n" not in m for m in item["errors"] + item["warnings"])
        assert item["valid"] == (not item["errors"])
    by_path = {d["path"]: d for d in data}
    assert by_path[str(files["bad"])]["errors"][0].startswith("header is not valid JSON at byte 9")
    assert "refused" in by_path[str(files["pickle"])]["errors"][0]
    assert by_path[str(files["warn"])]["valid"] and by_path[str(files["warn"])]["warnings"]


def test_cli_exit_0_for_valid_files_with_warnings(tmp_path: Path) -> None:
    ok = good_file(tmp_path / "ok.safetensors")
    warn = good_file(tmp_path / "w.safetensors", {"ss_base_model_version": "sdxl_base_v1-0"}, alpha=False)
    res = CliRunner().invoke(cli, ["validate", str(ok), str(warn)])
    assert res.exit_code == 0, res.output
    assert res.stdout.count("ok  ") == 2 and "INVALID" not in res.stdout
    assert "warning: " in res.stdout
    res = CliRunner().invoke(cli, ["validate", str(ok), str(warn), "--json"])
    assert res.exit_code == 0 and all(d["valid"] for d in json.loads(res.stdout))


def test_cli_exit_1_for_any_invalid_file(tmp_path: Path) -> None:
    ok = good_file(tmp_path / "ok.safetensors")
    bad = raw_file(tmp_path / "bad.safetensors", b"[]")
    res = CliRunner().invoke(cli, ["validate", str(ok), str(bad)])
    assert res.exit_code == 1
    lines = res.stdout.splitlines()
    i = lines.index(next(line for line in lines if "INVALID" in line and str(bad) in line))
    assert lines[i + 1].strip().startswith("error: header is JSON list")
    assert "2 file(s) checked, 1 invalid" in res.stderr


def test_cli_quiet_prints_only_invalid_files(tmp_path: Path) -> None:
    ok = good_file(tmp_path / "ok.safetensors")
    bad = raw_file(tmp_path / "bad.safetensors", b"[]")
    res = CliRunner().invoke(cli, ["validate", "-q", str(ok), str(bad)])
    assert res.exit_code == 1
    assert str(bad) in res.stdout and str(ok) not in res.stdout


def test_cli_deep_flag(tmp_path: Path) -> None:
    arrays = {k: v.astype(np.float32) for k, v in kohya_arrays().items()}
    arrays[f"{TE_Q}.lora_up.weight"][3, 1] = np.nan
    p = write_numpy(tmp_path / "nan.safetensors", arrays)
    assert CliRunner().invoke(cli, ["validate", str(p)]).exit_code == 0
    res = CliRunner().invoke(cli, ["validate", "--deep", str(p), "--json"])
    assert res.exit_code == 1
    (item,) = json.loads(res.stdout)
    assert item["errors"] == [f"tensor '{TE_Q}.lora_up.weight': 1 non-finite value(s) (NaN or Inf)"]


def test_cli_usage_errors_exit_2(tmp_path: Path) -> None:
    res = CliRunner().invoke(cli, ["validate"])
    assert res.exit_code == 2
    assert "Missing argument" in res.output
    res = CliRunner().invoke(cli, ["validate", "--no-such-flag", str(tmp_path)])
    assert res.exit_code == 2


def test_cli_missing_path_and_empty_folder_exit_1(tmp_path: Path) -> None:
    res = CliRunner().invoke(cli, ["validate", str(tmp_path / "nope.safetensors")])
    assert res.exit_code == 1
    assert "no such file" in res.stderr and "Traceback" not in res.output
    (tmp_path / "empty").mkdir()
    res = CliRunner().invoke(cli, ["validate", str(tmp_path / "empty")])
    assert res.exit_code == 1 and "no adapter files found" in res.stderr


def test_training_resolution_metadata_is_checked(tmp_path: Path) -> None:
    ok = check(good_file(tmp_path / "ok.safetensors", {"ss_resolution": "(1024, 1024)", "modelspec.resolution": "1024x1024"}))
    assert ok.valid and not any("resolution" in w for w in ok.warnings)
    clash = check(good_file(tmp_path / "c.safetensors", {"ss_resolution": "(512, 512)", "modelspec.resolution": "1024x1024"}))
    assert clash.valid and any("ss_resolution says 512x512 but modelspec.resolution says 1024x1024" in w
                               for w in clash.warnings), clash.warnings
    junk = check(good_file(tmp_path / "j.safetensors", {"modelspec.resolution": "huge"}))
    assert junk.valid and any("modelspec.resolution 'huge' is not a resolution" in w for w in junk.warnings)
