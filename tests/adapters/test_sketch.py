"""The ΔW sketch (lorahub.adapters.sketch): module names of every layout, projections equal to the dense
ones (linear and conv), invariance to dtype, rank padding and layout, serialisation, and independent
adapters far apart."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from lorahub.adapters import sketch as sk
from lorahub.adapters.writer import write_safetensors


def test_module_keys_agree_across_layouts() -> None:
    unet = "unet/down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_out_0"
    for name in ("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_out_0",
                 "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0",
                 "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor.to_out_lora",
                 "base_model.model.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0",
                 "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0.lora_linear_layer"):
        assert sk.module_key(name) == unet, name
    te = "text_encoder/text_model_encoder_layers_3_self_attn_q_proj"
    for name in ("lora_te_text_model_encoder_layers_3_self_attn_q_proj",
                 "text_encoder.text_model.encoder.layers.3.self_attn.q_proj",
                 "text_encoder.encoder.layers.3.self_attn.q_proj",
                 "lora_te1_text_model_encoder_layers_3_self_attn_q_proj"):
        assert sk.module_key(name) == te, name
    assert sk.module_key("lora_te2_text_model_encoder_layers_3_self_attn_q_proj").startswith("text_encoder_2/")
    assert sk.module_key("lora_unet_mid_block_attentions_0_proj_in") != sk.module_key("lora_unet_mid_block_attentions_0_proj_out")


@pytest.mark.parametrize("conv", [False, True])
def test_projection_of_factors_is_the_dense_projection(conv: bool) -> None:
    """Factors and their dense product give the same sketch and norm (the same sampled rows and columns);
    a module no wider than the sample is read whole and its norm is exact."""
    rng = np.random.default_rng(1)
    out, inp, r = 40, 24, 6
    down = rng.standard_normal((r, inp, 3, 3) if conv else (r, inp))
    up = rng.standard_normal((out, r, 1, 1) if conv else (out, r))
    s, norm = sk.project_factors(up, down, 0.25)
    dense = (up.reshape(out, r) @ down.reshape(r, -1)) * 0.25
    s2, norm2 = sk.project_dense(dense)
    assert np.allclose(s, s2) and math.isclose(norm, norm2, rel_tol=1e-9)
    exact = float(np.linalg.norm(dense))
    if conv:  # 24 x 3 x 3 = 216 inputs: 64 sampled, the norm an estimate
        assert dense.shape[1] > sk.SAMPLE and 0.8 < norm / exact < 1.2
    else:
        assert math.isclose(norm, exact, rel_tol=1e-9)
    # a rank padded with zeros is the same ΔW, hence the same sketch
    pad_up = np.concatenate([up.reshape(out, r), np.zeros((out, 3))], axis=1)
    pad_down = np.concatenate([down.reshape(r, -1), rng.standard_normal((3, down.reshape(r, -1).shape[1]))])
    assert np.allclose(sk.project_factors(pad_up, pad_down, 0.25)[0], s)


def test_sampled_norm_estimates_the_norm_of_wide_modules() -> None:
    """Of SD 1.5's widest modules (1280 x 5120, trained-like decaying spectra) the sketch reads 64 rows and
    64 columns; its norm estimates ‖ΔW‖ with a spread of about 8% (measured 0.82-1.12 of the norm over these
    20 modules), without bias over them."""
    rng = np.random.default_rng(7)
    ratios = []
    for _ in range(20):
        u, _ = np.linalg.qr(rng.standard_normal((1280, 16)))
        v, _ = np.linalg.qr(rng.standard_normal((5120, 16)))
        up = u * 0.7 ** np.arange(16)
        ratios.append(sk.project_factors(up, v.T)[1] / float(np.linalg.norm(up @ v.T)))
    assert max(abs(x - 1) for x in ratios) < 0.25 and float(np.std(ratios)) < 0.12, ratios
    assert abs(float(np.mean(ratios)) - 1) < 0.05, ratios


def _encode(a: np.ndarray, dtype: str) -> tuple[str, bytes]:
    a = np.asarray(a, dtype="<f4")
    if dtype == "BF16":
        return "BF16", (a.view("<u4") >> 16).astype("<u2").tobytes()
    return dtype, a.astype({"F16": "<f2", "F32": "<f4"}[dtype]).tobytes()


def _kohya(path: Path, mods: dict[str, tuple[np.ndarray, np.ndarray]], dtype: str = "F32", alpha: float | None = None) -> Path:
    t = {}
    for name, (up, down) in mods.items():
        t[f"{name}.lora_up.weight"] = (*_encode(up, dtype)[:1], list(up.shape), _encode(up, dtype)[1])
        t[f"{name}.lora_down.weight"] = (*_encode(down, dtype)[:1], list(down.shape), _encode(down, dtype)[1])
        t[f"{name}.alpha"] = ("F32", [], np.float32(alpha if alpha is not None else down.shape[0]).tobytes())
    return write_safetensors(path, t, {"ss_base_model_version": "sd_v1"})


def _mods(seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    mods = {}
    for i in range(12):
        inp, out = (320, 768)[i % 2], (320, 640)[i % 2]
        mods[f"lora_unet_down_blocks_0_attentions_0_transformer_blocks_{i}_attn2_to_k"] = (
            rng.standard_normal((out, 4)) * 0.01, rng.standard_normal((4, inp)) / math.sqrt(inp))
    mods["lora_unet_down_blocks_0_attentions_0_proj_in"] = (
        rng.standard_normal((320, 4, 1, 1)) * 0.01, rng.standard_normal((4, 320, 1, 1)) / math.sqrt(320))
    return mods


def test_file_sketch_is_independent_of_dtype_and_layout_and_roundtrips(tmp_path: Path) -> None:
    mods = _mods(0)
    a = sk.sketch_file(_kohya(tmp_path / "a.safetensors", mods))
    assert a.modules == 13 and a.skipped == 0
    for dtype in ("F16", "BF16"):
        b = sk.sketch_file(_kohya(tmp_path / f"{dtype}.safetensors", mods, dtype))
        c = sk.compare(a, b)
        assert c.similarity > 0.999 and abs(c.scale - 1) < 0.01 and c.coverage_a == c.coverage_b == 1.0
    # diffusers/peft keys, alpha folded into B (no alpha tensor): the same ΔW
    peft = {}
    for name, (up, down) in mods.items():
        key = "unet." + sk.module_key(name).split("/", 1)[1]
        peft[f"{key}.lora_B.weight"] = ("F32", list(up.shape), up.astype("<f4").tobytes())
        peft[f"{key}.lora_A.weight"] = ("F32", list(down.shape), down.astype("<f4").tobytes())
    # module_key flattens dots, so the peft names above use underscores: still one key per module
    p = sk.sketch_file(write_safetensors(tmp_path / "peft.safetensors", peft))
    assert sk.compare(a, p).similarity > 0.999
    # half the alpha: the same directions at half the norm
    h = sk.compare(a, sk.sketch_file(_kohya(tmp_path / "half.safetensors", mods, alpha=2.0)))
    assert h.similarity > 0.999 and abs(h.scale - 0.5) < 1e-3
    back = sk.Sketch.from_bytes(a.to_bytes())
    assert len(a.to_bytes()) == 13 * 40 + 146
    assert sk.compare(a, back).similarity > 0.999 and np.array_equal(back.hashes, a.hashes)
    with pytest.raises(sk.SketchError):
        sk.Sketch.from_bytes(a.to_bytes()[:-1])


def test_independent_adapters_and_subsets(tmp_path: Path) -> None:
    a = sk.sketch_file(_kohya(tmp_path / "a.safetensors", _mods(0)))
    b = sk.sketch_file(_kohya(tmp_path / "b.safetensors", _mods(1)))
    assert abs(sk.compare(a, b).similarity) < 0.5
    some = dict(list(_mods(0).items())[:6])
    s = sk.compare(a, sk.sketch_file(_kohya(tmp_path / "s.safetensors", some)))
    assert s.similarity > 0.999 and s.coverage_b == 1.0 and s.coverage_a < 0.9
    assert "module-subset" in sk.relations(s, sk.Facts(), sk.Facts())


def test_loha_sketch_is_its_dense_update(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    w1a, w1b, w2a, w2b = (rng.standard_normal(s) for s in ((64, 4), (4, 32), (64, 4), (4, 32)))
    t = {f"lora_unet_mid_block_attentions_0_transformer_blocks_0_attn1_to_q.{n}": ("F32", list(v.shape), v.astype("<f4").tobytes())
         for n, v in (("hada_w1_a", w1a), ("hada_w1_b", w1b), ("hada_w2_a", w2a), ("hada_w2_b", w2b))}
    t["lora_unet_mid_block_attentions_0_transformer_blocks_0_attn1_to_q.alpha"] = ("F32", [], np.float32(2).tobytes())
    got = sk.sketch_file(write_safetensors(tmp_path / "loha.safetensors", t))
    dense = (w1a @ w1b) * (w2a @ w2b) * 0.5
    s, norm = sk.project_dense(dense)
    want = sk.build({sk.module_key("lora_unet_mid_block_attentions_0_transformer_blocks_0_attn1_to_q"): (s, norm)})
    c = sk.compare(want, got)
    assert c.similarity > 0.999 and abs(c.scale - 1) < 1e-4
    # streamed in odd slices, its tensors kept across them: the same sketch
    from lorahub.adapters.header import read_header

    path = tmp_path / "loha.safetensors"
    header = read_header(path)
    data = path.read_bytes()[header.data_start :]
    st = sk.StreamSketch(header)
    for i in range(0, len(data), 777):
        st.update(memoryview(data)[i : i + 777])
    assert st.result().to_bytes() == got.to_bytes()


def test_floats_reads_every_float_dtype_exactly() -> None:
    bits = np.arange(65536, dtype="<u2")
    f16 = sk.floats(bits.tobytes(), 0, bits.size, "F16")
    assert np.array_equal(f16, bits.view("<f2").astype(np.float64), equal_nan=True)
    # float32 by the bits (how the sketch converts what it gathers): every finite value exactly, and a
    # batch holding an infinity or NaN as numpy converts it
    finite = bits[np.isfinite(bits.view("<f2"))]
    fast = sk._convert(finite.view("<f2"), "F16", np.float32)
    assert fast.dtype == np.float32 and np.array_equal(fast.view(np.uint32), finite.view("<f2").astype(np.float32).view(np.uint32))
    every = sk._convert(bits.view("<f2"), "F16", np.float32)
    assert np.array_equal(every.view(np.uint32), bits.view("<f2").astype(np.float32).view(np.uint32))
    b = np.arange(0, 65536, 7, dtype="<u2")
    with np.errstate(invalid="ignore"):  # the NaN patterns
        want = (b.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    assert np.array_equal(sk.floats(b.tobytes(), 0, b.size, "BF16"), want, equal_nan=True)
    assert sk.floats(np.float32(1.5).tobytes() * 2, 4, 1, "F32").tolist() == [1.5]
    with pytest.raises(sk.SketchError, match="not a float"):
        sk.floats(b"\0\0", 0, 1, "I16")


@pytest.mark.parametrize("narrow", [False, True], ids=["int64-positions", "int32-positions"])
def test_stream_sketch_equals_the_file_sketch_in_any_slices(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            narrow: bool) -> None:
    """The streamed sketch is the in-memory projection of each module's factors; fed in slices of any size
    (odd sizes cut values across slices) it is the file's sketch; an F16 infinity in a sampled row makes its
    module weigh nothing and leaves the others as they were. Both ways a lane keeps its positions (int32 in
    large lanes) read the same values."""
    from lorahub.adapters.header import read_header

    sk._PLANS.clear()
    if narrow:
        monkeypatch.setattr(sk, "_INT64_VALUES", 0)
    mods = _mods(2)
    path = _kohya(tmp_path / "a.safetensors", mods, "F16")
    header = read_header(path)
    whole = sk.sketch_file(path)
    f16 = {sk.module_key(n): sk.project_factors(u.astype(np.float16), d.astype(np.float16), 1.0) for n, (u, d) in mods.items()}
    want = sk.build(f16)
    assert np.array_equal(whole.hashes, want.hashes)
    assert np.allclose(whole.norms, want.norms, rtol=1e-6)
    assert np.abs(whole.units.astype(np.float64) - want.units.astype(np.float64)).max() <= 1e-3
    data = path.read_bytes()[header.data_start :]
    for step in (1, 777, 4096, len(data)):
        st = sk.StreamSketch(header)
        assert {lane.pos.dtype for lane in st._lanes} == {np.dtype(np.int32 if narrow else np.int64)}
        for i in range(0, len(data), step):
            st.update(memoryview(data)[i : i + step])
        assert st.complete and st.result().to_bytes() == whole.to_bytes(), step
    half = sk.StreamSketch(header)
    half.update(data[: len(data) // 2])
    with pytest.raises(sk.SketchError, match="fed"):
        half.result()

    name = next(iter(mods))
    bad = dict(mods)
    up = mods[name][0].copy()
    up[sk._side(up.shape[0], 0)[0][0], 0] = np.inf  # a row the sketch reads
    bad[name] = (up, mods[name][1])
    got = sk.sketch_file(_kohya(tmp_path / "inf.safetensors", bad, "F16"))
    h = sk.key_hash(sk.module_key(name))
    i = int(np.searchsorted(got.hashes, h))
    assert got.norms[i] == 0 and not got.units[i].any()
    others = np.arange(got.modules) != i
    assert np.array_equal(got.units[others], whole.units[others])


def test_modules_of_mixed_dtypes_in_one_file(tmp_path: Path) -> None:
    """Factors of one shape in two dtypes (F16 and F32 modules in one file) are gathered apart and chained
    together: the sketch is the all-F32 file's."""
    mods = _mods(3)
    t = {}
    for j, (name, (up, down)) in enumerate(mods.items()):
        dtype = "F16" if j % 2 else "F32"
        for part, v in (("lora_up", up), ("lora_down", down)):
            code, raw = _encode(v, dtype)
            t[f"{name}.{part}.weight"] = (code, list(v.shape), raw)
        t[f"{name}.alpha"] = _encode(np.float32(down.shape[0]), dtype)[:1] + ([], _encode(np.float32(down.shape[0]), dtype)[1])
    path = write_safetensors(tmp_path / "mixed.safetensors", t)
    # the 2-byte F16 alphas leave F32 factors at two byte phases: gathered in a lane each, F16 in a third
    from lorahub.adapters.header import read_header

    lanes = sk.StreamSketch(read_header(path))._lanes
    assert sorted(lane.dtype for lane in lanes) == ["F16", "F32", "F32"] and len({lane.phase for lane in lanes}) == 2
    mixed = sk.sketch_file(path)
    plain = sk.sketch_file(_kohya(tmp_path / "f32.safetensors", mods))
    c = sk.compare(plain, mixed)
    assert mixed.modules == plain.modules == len(mods) and c.similarity > 0.999 and abs(c.scale - 1) < 1e-3


def test_fingerprint_feeds_a_sink_the_data_region_from_its_one_read(tmp_path: Path) -> None:
    """The fingerprint's read hands the data region to a sink in order (threaded: a file over 8 MiB), and
    lorahub index's sketch from it is the file's."""
    from lorahub.adapters.fingerprint import THREADED_MIN_SIZE, fingerprint_record
    from lorahub.adapters.header import read_header

    rng = np.random.default_rng(5)
    mods = {f"lora_unet_down_blocks_1_attentions_0_transformer_blocks_{i}_ff_net_2": (
        rng.standard_normal((640, 8)) * 0.01, rng.standard_normal((8, 2560)) * 0.05) for i in range(84)}
    path = _kohya(tmp_path / "big.safetensors", mods, "F32")
    assert path.stat().st_size > THREADED_MIN_SIZE
    header = read_header(path)

    class Recorder:
        def __init__(self) -> None:
            self.parts: list[bytes] = []

        def update(self, view: memoryview) -> None:
            self.parts.append(bytes(view))

    rec = Recorder()
    plain = fingerprint_record(path, use_cache=False)
    got = fingerprint_record(path, use_cache=False, header=header, sink=rec, _chunk=1 << 16)
    assert got == plain
    assert b"".join(rec.parts) == path.read_bytes()[header.data_start :] and len(rec.parts) > 1
    stream = sk.StreamSketch(header)
    fingerprint_record(path, use_cache=False, header=header, sink=stream)
    assert stream.complete and stream.result().to_bytes() == sk.sketch_file(path).to_bytes()


def test_picks_agree_on_every_module_a_subset_kept(tmp_path: Path) -> None:
    """Min-hashing: a subset picks what the original picked wherever it kept that module, with the same unit
    sketch; the summary a registry row keeps is the vector and the picks."""
    full = sk.sketch_file(_kohya(tmp_path / "full.safetensors", _mods(4)))
    some = sk.sketch_file(_kohya(tmp_path / "some.safetensors", dict(list(_mods(4).items())[:7])))
    fh, fu = sk.picks(full)
    sh, su = sk.picks(some)
    kept = set(some.hashes.tolist())
    assert len(set(fh.tolist())) > 2  # the functions pick different modules
    for t in range(sk.PICKS):
        if int(fh[t]) in kept:
            assert sh[t] == fh[t] and np.array_equal(su[t], fu[t])
        else:
            assert sh[t] != fh[t]
    vector, hashes, units = sk.summary_parts(sk.summary(full))
    assert np.array_equal(vector, full.vector) and np.array_equal(hashes, fh) and np.array_equal(units, fu)
    assert sk.summary_parts(full.vector.astype("<f2").tobytes())[1] is None  # a row stored before picks


def test_files_of_one_tensor_table_share_a_plan_and_keep_their_own_scales(tmp_path: Path) -> None:
    """What a sketch reads of a file is planned from its tensor table and kept (a library's adapters share a
    few tables); each file's scales are still its own. Files of one table (other weights, other alphas, other
    metadata) share the plan and get the sketch a fresh plan gives; a table that differs in one offset or shape
    gets a plan of its own."""
    from lorahub.adapters.header import read_header

    mods = _mods(5)
    a = _kohya(tmp_path / "a.safetensors", mods)
    b = _kohya(tmp_path / "b.safetensors", _mods(6), alpha=2.0)  # same names, shapes, offsets; alpha 2 of rank 4
    wider = dict(mods)
    name = next(iter(wider))
    wider[name] = (np.zeros((wider[name][0].shape[0], 8)), np.zeros((8, wider[name][1].shape[1])))
    c = _kohya(tmp_path / "c.safetensors", wider)  # one module of rank 8: other shapes and offsets
    fresh = {}
    for p in (a, b, c):  # each planned anew
        sk._PLANS.clear()
        fresh[p.name] = sk.sketch_file(p).to_bytes()
    sk._PLANS.clear()
    ha, hb, hc = (read_header(p) for p in (a, b, c))
    assert sk._plan_key(ha) == sk._plan_key(hb) != sk._plan_key(hc)
    shared = None
    streams = {}
    for p, h in ((a, ha), (b, hb), (c, hc)):
        stream = sk.StreamSketch(h)
        with open(p, "rb") as fh:
            fh.seek(h.data_start)
            stream.update(memoryview(fh.read()))
        streams[p.name] = stream.result().to_bytes()
        if p is a:
            shared = sk._PLANS[sk._plan_key(ha)]
    assert len(sk._PLANS) == 2 and sk._PLANS[sk._plan_key(hb)] is shared
    assert streams == fresh
    assert sk.Sketch.from_bytes(streams["a.safetensors"]).to_bytes() != sk.Sketch.from_bytes(streams["b.safetensors"]).to_bytes()
    # b's alpha (2 of rank 4) halves its ΔW against alpha = rank, though its plan is a's (alpha = rank):
    halved = _kohya(tmp_path / "halved.safetensors", {k: (u * 0.5, d) for k, (u, d) in _mods(6).items()})
    same = sk.compare(sk.sketch_file(halved), sk.sketch_file(b))
    assert same.similarity > 0.999 and same.scale == pytest.approx(1.0, rel=1e-3)
    unscaled = _kohya(tmp_path / "unscaled.safetensors", _mods(6))
    assert sk.compare(sk.sketch_file(b), sk.sketch_file(unscaled)).scale == pytest.approx(2.0, rel=1e-3)


def _raw_safetensors(path: Path, entries: dict[str, tuple[str, list[int], int, int]], data: bytes) -> Path:
    """A file with exactly these tensor entries (name: dtype, shape, begin, end) over ``data``: offsets that may
    overlap or leave gaps, which no writer makes."""
    import json
    import struct

    header = {name: {"dtype": d, "shape": shape, "data_offsets": [b, e]} for name, (d, shape, b, e) in entries.items()}
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


def test_modules_whose_tensors_share_bytes_are_each_sketched(tmp_path: Path) -> None:
    """Two modules whose entries point at the same bytes (a hand-made file; no writer shares tensors) read them
    twice, fed in slices of any size and at an odd byte phase: the sketch is that of the file holding a copy for
    each (the values the sketch reads are planned in file order; overlapping factors are read where they are)."""
    from lorahub.adapters.header import read_header

    rng = np.random.default_rng(9)
    up, down = (rng.standard_normal((320, 4)) * 0.01).astype("<f2"), (rng.standard_normal((4, 768)) * 0.05).astype("<f2")
    a, b = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k", \
        "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_v"
    pad = b"\0"  # every factor at an odd byte
    u0, d0 = len(pad), len(pad) + up.nbytes
    shared = _raw_safetensors(tmp_path / "shared.safetensors", {
        f"{n}.lora_{part}.weight": ("F16", list(arr.shape), o, o + arr.nbytes)
        for n in (a, b) for part, arr, o in (("up", up, u0), ("down", down, d0))}, pad + up.tobytes() + down.tobytes())
    copies = _raw_safetensors(tmp_path / "copies.safetensors", {
        f"{n}.lora_{part}.weight": ("F16", list(arr.shape), o + j * (up.nbytes + down.nbytes),
                                    o + j * (up.nbytes + down.nbytes) + arr.nbytes)
        for j, n in enumerate((a, b)) for part, arr, o in (("up", up, u0), ("down", down, d0))},
        pad + (up.tobytes() + down.tobytes()) * 2)
    want = sk.sketch_file(copies)
    assert want.modules == 2
    header = read_header(shared)
    data = shared.read_bytes()[header.data_start :]
    for step in (1, 3, 777, len(data)):
        st = sk.StreamSketch(header)
        assert st._plan.moved is not None  # the overlapping factors' values were sorted into file order
        for i in range(0, len(data), step):
            st.update(memoryview(data)[i : i + step])
        assert st.result().to_bytes() == want.to_bytes(), step


def test_plans_kept_are_bounded_in_count_and_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The plans kept (one per tensor table) hold index arrays (4 or 8 bytes a value the sketch reads): the oldest
    go when another would pass :data:`PLAN_BYTES_KEPT` or :data:`PLANS_KEPT`, a plan larger than the budget is
    not kept, and every sketch is the same kept or not."""
    from lorahub.adapters.header import read_header

    files = []
    for rank in (2, 4, 8):
        rng = np.random.default_rng(rank)
        mods = {f"lora_unet_down_blocks_0_attentions_0_transformer_blocks_{i}_attn2_to_k":
                (rng.standard_normal((320, rank)), rng.standard_normal((rank, 768))) for i in range(6)}
        files.append(_kohya(tmp_path / f"r{rank}.safetensors", mods))
    sk._PLANS.clear()
    alone = [sk.sketch_file(f).to_bytes() for f in files]
    sizes = [sk._PLANS[sk._plan_key(read_header(f))].nbytes for f in files]
    assert sizes == sorted(sizes) and sizes[0] > 0 and len(sk._PLANS) == 3
    sk._PLANS.clear()
    monkeypatch.setattr(sk, "PLAN_BYTES_KEPT", sizes[0] + sizes[1])
    got = [sk.sketch_file(f).to_bytes() for f in files[:2]]
    assert len(sk._PLANS) == 2
    got.append(sk.sketch_file(files[2]).to_bytes())  # larger than the budget: not kept, and nothing dropped for it
    assert got == alone and len(sk._PLANS) == 2 and sk._plan_key(read_header(files[2])) not in sk._PLANS
    monkeypatch.setattr(sk, "PLAN_BYTES_KEPT", sizes[1] + sizes[2])
    sk.sketch_file(files[2])  # the oldest (rank 2) goes, rank 4 stays
    assert [sk._plan_key(read_header(f)) in sk._PLANS for f in files] == [False, True, True]
    monkeypatch.setattr(sk, "PLANS_KEPT", 1)
    sk.sketch_file(files[0])
    assert list(sk._PLANS) == [sk._plan_key(read_header(files[0]))]
    sk._PLANS.clear()
