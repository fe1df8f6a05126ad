"""Indexing folders of real (synthetic) LoRA files: add, re-index, move, delete, change; hashes; dupes."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from lorahub.adapters.fingerprint import fingerprint_file
from lorahub.errors import UsageError
from lorahub.schemas.registry import SearchQuery


@pytest.fixture
def folder(tmp_path: Path, make_lora) -> Path:  # noqa: ANN001
    root = tmp_path / "loras"
    make_lora(root / "styles" / "ink_style.safetensors", seed=1, fmt="kohya", rank=8, trigger="inkstyle",
              title="Ink Style")
    make_lora(root / "styles" / "neon_glow.safetensors", seed=2, fmt="diffusers", rank=4, trigger="neonglow")
    make_lora(root / "chars" / "robot_knight.safetensors", seed=3, fmt="kohya", rank=16, trigger="robotknight")
    return root


def names(results) -> list[str]:  # noqa: ANN001
    return [r.name for r in results]


def test_index_then_reindex_changes_nothing(registry, folder: Path) -> None:  # noqa: ANN001
    s1 = registry.index_paths([folder])
    assert (s1.scanned, s1.added, s1.failed) == (3, 3, [])
    assert registry.count() == 3
    s2 = registry.index_paths([folder])
    assert (s2.added, s2.updated, s2.unchanged, s2.moved, s2.removed) == (0, 0, 3, 0, 0)
    assert registry.count() == 3
    hit = registry.search(SearchQuery(query="inkstyle"))
    assert names(hit) == ["ink_style"]
    r = hit[0]
    assert (r.source_kind, r.base_family, r.format, r.rank) == ("local", "sd1", "kohya-lora", 8)
    assert r.source == os.path.realpath(folder / "styles" / "ink_style.safetensors")
    assert r.title == "Ink Style" and r.trigger_words == ["inkstyle"]
    fp = fingerprint_file(folder / "styles" / "ink_style.safetensors")
    assert r.sha256 == fp.sha256 and r.autov3 == fp.autov3.upper()


def test_moved_renamed_deleted_and_changed_files_are_noticed(registry, folder: Path, tmp_path: Path,
                                                              make_lora) -> None:  # noqa: ANN001
    registry.index_paths([folder])
    ids = {r.name: r.id for r in registry.search(SearchQuery(limit=50))}

    # Renamed inside the folder: same inode, the adapter keeps its id.
    os.rename(folder / "styles" / "neon_glow.safetensors", folder / "styles" / "neon_glow_v2.safetensors")
    # Moved to a folder that is indexed separately (copy + delete: a new inode, found by SHA-256).
    elsewhere = tmp_path / "archive"
    elsewhere.mkdir()
    shutil.copy2(folder / "chars" / "robot_knight.safetensors", elsewhere / "robot_knight.safetensors")
    (folder / "chars" / "robot_knight.safetensors").unlink()
    # Changed in place: rewritten with other weights.
    time_before = os.stat(folder / "styles" / "ink_style.safetensors").st_mtime_ns
    make_lora(folder / "styles" / "ink_style.safetensors", seed=9, fmt="kohya", rank=32, trigger="inkstyle")
    os.utime(folder / "styles" / "ink_style.safetensors", ns=(time_before + 10**9, time_before + 10**9))

    s = registry.index_paths([elsewhere])
    assert (s.added, s.moved, s.removed) == (0, 1, 0), s
    s = registry.index_paths([folder])
    assert (s.added, s.moved, s.updated, s.removed, s.unchanged) == (0, 1, 1, 0, 0), s
    now = {r.name: r for r in registry.search(SearchQuery(limit=50))}
    assert set(now) == {"neon_glow_v2", "robot_knight", "ink_style"}
    assert now["neon_glow_v2"].id == ids["neon_glow"]
    assert now["robot_knight"].id == ids["robot_knight"]
    assert now["robot_knight"].source == os.path.realpath(elsewhere / "robot_knight.safetensors")
    assert now["ink_style"].id == ids["ink_style"] and now["ink_style"].rank == 32

    (folder / "styles" / "neon_glow_v2.safetensors").unlink()
    s = registry.index_paths([folder])
    assert (s.removed, s.unchanged) == (1, 1)
    assert registry.count() == 2
    assert registry.search(SearchQuery(query="neonglow")) == []


def test_broken_file_is_reported_and_the_rest_indexed(registry, folder: Path) -> None:  # noqa: ANN001
    (folder / "broken.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    s = registry.index_paths([folder])
    assert s.added == 3 and len(s.failed) == 1
    assert s.failed[0].path.endswith("broken.safetensors")
    with pytest.raises(UsageError):
        registry.index_paths([folder / "missing"])


def test_hash_lookup_by_every_fingerprint_and_prefix(registry, folder: Path) -> None:  # noqa: ANN001
    registry.index_paths([folder])
    path = folder / "chars" / "robot_knight.safetensors"
    fp = fingerprint_file(path)
    cases = {
        "sha256": fp.sha256,
        "autov2": fp.autov2,
        "autov3": fp.autov3.upper(),
        "tensor_sha256": fp.tensor_sha256,
        "crc32": fp.crc32.upper(),
        "blake3": fp.blake3,
    }
    for kind, value in cases.items():
        found = registry.by_hash(value)
        assert [r.name for r in found] == ["robot_knight"], kind
        assert kind in found[0].matched_hashes, (kind, found[0].matched_hashes)
    # Prefixes of at least 8 hex, any case.
    assert names(registry.by_hash(fp.blake3[:8].upper())) == ["robot_knight"]
    assert names(registry.by_hash(fp.tensor_sha256[:20])) == ["robot_knight"]
    # A 64-hex tensor hash matches tensor_sha256, not the file SHA-256.
    assert registry.by_hash(fp.tensor_sha256)[0].matched_hashes == ["tensor_sha256"]
    assert registry.by_hash("0" * 64) == []
    with pytest.raises(UsageError):
        registry.by_hash(fp.sha256[:7])
    batch = registry.lookup([fp.sha256[:10], "f" * 12])
    assert [len(b.matches) for b in batch] == [1, 0]


def test_autov1_of_small_files_is_what_a1111_and_kohya_show(registry, folder: Path) -> None:  # noqa: ANN001
    """Files of at most 1 MiB: A1111's and kohya's model_hash read nothing past the end and print e3b0c442;
    a lookup by that value finds them (all of them: it is the same for every small file)."""
    registry.index_paths([folder])
    sizes = [p.stat().st_size for p in folder.rglob("*.safetensors")]
    assert max(sizes) <= 0x100000
    found = registry.by_hash("e3b0c442")
    assert sorted(names(found)) == ["ink_style", "neon_glow", "robot_knight"]
    assert all("autov1" in r.matched_hashes for r in found)
    assert fingerprint_file(folder / "chars" / "robot_knight.safetensors").autov1 == "E3B0C442"


def test_dupes_same_tensors_different_names_or_metadata(registry, folder: Path, make_lora) -> None:  # noqa: ANN001
    # A byte-identical copy, and a re-save of the same weights with other metadata.
    shutil.copy2(folder / "styles" / "ink_style.safetensors", folder / "ink_copy.safetensors")
    make_lora(folder / "renamed_ink.safetensors", seed=1, fmt="kohya", rank=8, trigger="other words", title="Other")
    registry.index_paths([folder])
    groups = registry.dupes()
    assert len(groups) == 1
    g = groups[0]
    assert sorted(m.name for m in g.members) == ["ink_copy", "ink_style", "renamed_ink"]
    assert g.identical_files is False
    assert g.autov3 == fingerprint_file(folder / "ink_copy.safetensors").autov3.upper()
    (folder / "renamed_ink.safetensors").unlink()
    registry.index_paths([folder])
    (g,) = registry.dupes()
    assert g.identical_files is True and len(g.members) == 2


def test_filters_on_local_adapters(registry, folder: Path) -> None:  # noqa: ANN001
    registry.index_paths([folder])
    neon_format = registry.search(SearchQuery(query="neonglow"))[0].format
    assert neon_format not in (None, "kohya-lora")
    assert names(registry.search(SearchQuery(format=neon_format))) == ["neon_glow"]
    assert sorted(names(registry.search(SearchQuery(min_rank=8)))) == ["ink_style", "robot_knight"]
    assert names(registry.search(SearchQuery(min_rank=8, max_rank=8))) == ["ink_style"]
    assert names(registry.search(SearchQuery(query="knight", format="kohya-lora"))) == ["robot_knight"]
    assert registry.search(SearchQuery(query="knight", format=neon_format)) == []
    assert len(registry.search(SearchQuery(base="sd1"))) == 3
    assert registry.search(SearchQuery(base="sdxl")) == []


def test_files_hashed_side_by_side_get_one_thread_each_but_the_last(registry, tmp_path: Path, make_lora,  # noqa: ANN001
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The index hashes files in a pool (a thread per core): while files wait to begin, each is hashed by one
    thread (the files keep the cores busy); the last ones get the default threads so that no core idles at
    the end. The hashes are the same either way."""
    from lorahub.registry.sources import folders

    root = tmp_path / "many"
    for i in range(6):
        make_lora(root / f"a{i}.safetensors", seed=i, fmt="kohya", rank=4)
    from lorahub.adapters import fingerprint as fpmod

    assert not hasattr(folders, "fingerprint_record")  # imported inside _analyse: patched at its source
    seen: list[int | None] = []

    original = fpmod.fingerprint_record

    def spy(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        seen.append(kwargs.get("threads"))
        return original(*args, **kwargs)

    monkeypatch.setattr(fpmod, "fingerprint_record", spy)
    summary = registry.index_paths([root], workers=2)
    assert summary.added == 6
    assert sorted(seen, key=lambda t: t is None) == [1, 1, 1, 1, 1, None]  # the last file begun: default threads
    seen.clear()
    few = tmp_path / "few"
    for i in range(3):  # too few for the pool: one file after the other, each with the default threads
        make_lora(few / f"b{i}.safetensors", seed=10 + i, fmt="kohya", rank=4)
    assert registry.index_paths([few], workers=2).added == 3
    assert seen == [None, None, None]
    monkeypatch.undo()
    for r in registry.search(SearchQuery(limit=10)):
        assert r.sha256 == fingerprint_file(r.source, use_cache=False).sha256
