"""Pickle refusal reads the same wherever a pickle is met (lorahub.adapters.pickles), and nothing unpickles."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from lorahub.adapters.pickles import PICKLE_SUFFIXES, REASON, is_pickle_name
from lorahub.errors import PickleRefusedError


class _Boom:
    def __reduce__(self):  # noqa: ANN204 - runs only if something unpickles the file
        return (Path.touch, (Path(__file__).with_name("_unpickled_marker"),))


@pytest.fixture
def evil(tmp_path: Path) -> Path:
    p = tmp_path / "evil.ckpt"
    p.write_bytes(pickle.dumps(_Boom()))
    return p


def _refusals(evil: Path, tmp_path: Path) -> dict[str, PickleRefusedError]:
    from lorahub.adapters.header import read_header
    from lorahub.base.resolve import resolve_base
    from lorahub.pipeline.resolver import Resolver

    sneaky = tmp_path / "sneaky.safetensors"
    sneaky.write_bytes(evil.read_bytes())
    out = {}
    for where, call in {
        "header, by bytes": lambda: read_header(sneaky),
        "resolver, by name": lambda: Resolver().resolve(str(evil)),
        "base model, by name": lambda: resolve_base(str(evil)),
    }.items():
        with pytest.raises(PickleRefusedError) as err:
            call()
        out[where] = err.value
    return out


def test_every_refusal_gives_the_one_reason(evil: Path, tmp_path: Path) -> None:
    for where, exc in _refusals(evil, tmp_path).items():
        assert f"({REASON})" in str(exc) and "refused: " in str(exc), where
    assert not Path(__file__).with_name("_unpickled_marker").exists()


def test_the_space_and_push_refuse_with_it_too(evil: Path, tmp_path: Path) -> None:
    pytest.importorskip("huggingface_hub")
    from lorahub.hub.push import push
    from lorahub.space import callbacks

    with pytest.raises(PickleRefusedError, match=REASON) as err:
        callbacks.add_file([], evil)
    assert str(tmp_path) not in str(err.value)  # the Space names an upload by its name only
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    from lorahub.base.synthetic import make_adapter

    make_adapter(pkg / "pytorch_lora_weights.safetensors", rank=2, seed=0)
    (pkg / "extra.pt").write_bytes(evil.read_bytes())
    with pytest.raises(PickleRefusedError, match=REASON) as err:
        push(pkg, repo="a/b", endpoint="http://127.0.0.1:9", token=False, dry_run=True)
    assert "extra.pt" in str(err.value)


def test_pickle_names() -> None:
    assert all(is_pickle_name(f"x{s.upper()}") for s in PICKLE_SUFFIXES)
    assert not is_pickle_name("x.safetensors") and not is_pickle_name("ckpt")
