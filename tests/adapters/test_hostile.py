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

The seeds and mutators live in ``tests/fuzzkit.py`` (the server's suite,
``tests/server/test_server_hostile.py``, uploads the same cases through the Hub API).
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
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from fuzzkit import (
    BOMB_STRINGS,
    CROSS_K,
    METADATA_KEYS,
    MODULE_NAMES,
    PART_SUFFIXES,
    RAW,
    Seed,
    draw_case,
    encode,
    m_synthetic,
    real_excerpts,
    real_seeds,
    synthetic_seeds,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lorahub.adapters.header import DTYPE_BITS
from lorahub.adapters.inspect import inspect_file
from lorahub.adapters.validate import validate_file
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
        seed, mutate, data, suffix = draw_case(rng, synth, excerpts, real)
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
    _peak_is_proportional(biggest)


def test_full_sdxl_kohya_header_memory_is_proportional(sdxl_kohya_file: Path) -> None:
    """The same on a full SDXL kohya LoRA's header (2,958 tensors, ~400 KB), written at test time."""
    _peak_is_proportional(sdxl_kohya_file)


def _peak_is_proportional(biggest: Path) -> None:
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


def _tensor_entries() -> Iterator[object]:
    """Well-formed tensor entries of every dtype, and each with one field spoiled in every way the header
    checks: an extra or missing field, an unknown dtype, a dimension or an offset that is negative, 2^64 or
    more, a bool, a float, a string or null, too many dimensions, offsets that are not two or are reversed,
    an entry that is not an object."""
    odd = [-1, 2**64 - 1, 2**64, 2**70, True, 1.0, "1", None]
    for dtype in sorted(DTYPE_BITS):
        yield {"dtype": dtype, "shape": [3, 4], "data_offsets": [8, 8 + 12 * DTYPE_BITS[dtype] // 8]}
    base = {"dtype": "F16", "shape": [3, 4], "data_offsets": [8, 32]}
    yield {"dtype": "F16", "shape": [], "data_offsets": [0, 2]}
    yield {**base, "shape": [2**64 - 1]}
    yield {**base, "data_offsets": [2**64 - 1, 2**64 - 1]}
    for key in ("x", "dtypes", ""):
        yield {**base, key: 1}
    for key in base:
        yield {k: v for k, v in base.items() if k != key}
    for dtype in ("F99", "", "f16", 16, None, [], {}):
        yield {**base, "dtype": dtype}
    for value in odd:
        yield {**base, "shape": [3, value]}
        yield {**base, "shape": value}
        yield {**base, "data_offsets": [value, 32]}
        yield {**base, "data_offsets": [8, value]}
        yield {**base, "data_offsets": value}
        yield value
    yield {**base, "shape": [1] * 16}
    yield {**base, "shape": [1] * 17}
    for offsets in ([], [8], [8, 16, 32], (8, 32), [32, 8]):
        yield {**base, "data_offsets": offsets}
    yield list(base.items())


def test_a_tensor_entry_reads_the_same_on_the_fast_path() -> None:
    """A well-formed tensor entry is accepted by one combined check (lorahub/adapters/header.py), anything else
    goes check by check for its message: whatever the entry, the result and the problems are those of the
    check-by-check reading alone."""
    from lorahub.adapters import header

    for entry in _tensor_entries():
        fast: list[str] = []
        slow: list[str] = []
        assert header._tensor_info("t", entry, fast) == header._tensor_info_checked("t", entry, slow), entry
        assert fast == slow, entry
