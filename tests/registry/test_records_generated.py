"""The Civitai importer and the registry commands on the generated catalogue (tests/corpuskit.py),
without ../shared; test_importers.py and test_registry_cli.py repeat them on the real corpus."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from corpuskit import PLANTED_SPECS, civitai_objects, digest

from lorahub.cli.main import cli
from lorahub.errors import RegistryError
from lorahub.registry.sources.records import (
    CIVITAI_FAMILY_LICENSE,
    civitai_to_record,
    read_records,
)
from lorahub.registry.text import family_from_label


@pytest.fixture(scope="module")
def objects() -> list[dict]:
    return civitai_objects()


@pytest.fixture
def records(tmp_path: Path, objects: list[dict]) -> Path:
    """300 models of the catalogue (every planted one among them, last) as a Civitai JSON Lines file."""
    out = tmp_path / "civitai-300.jsonl"
    out.write_text("".join(json.dumps(o, ensure_ascii=False) + "\n" for o in objects[: 300 - len(PLANTED_SPECS)] + objects[-len(PLANTED_SPECS) :]),
                   encoding="utf-8")
    return out


def run(*args: str) -> tuple[int, str, str]:
    res = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return res.exit_code, res.stdout, res.stderr


def test_the_catalogue_is_deterministic(objects: list[dict]) -> None:
    assert digest(civitai_objects()) == digest(objects)
    assert digest(civitai_objects(seed=1)) != digest(objects)
    assert len({o["id"] for o in objects}) == len(objects) > 3000


def test_civitai_conversion(objects: list[dict], corpus_records: list) -> None:
    assert len(corpus_records) == len(objects)
    for obj, rec in zip(objects, corpus_records, strict=True):
        assert (rec.source, rec.id, rec.name, rec.downloads) == ("civitai", str(obj["id"]), obj["name"].strip(),
                                                                obj["stats"]["downloadCount"])
        creator = obj["creator"]
        assert rec.author == (creator["username"] if isinstance(creator, dict) else creator)
        newest = obj["versions"][0]
        assert rec.base_model == newest["baseModel"] and rec.base_family == family_from_label(newest["baseModel"])
        assert rec.license == CIVITAI_FAMILY_LICENSE.get(rec.base_family)
        assert rec.extra["permissions"] == obj["license"] and rec.extra["type"] == obj["type"]
        assert rec.tags == list(dict.fromkeys(t.lower() for t in obj["tags"]))
        assert [v.id for v in rec.versions] == [str(v["id"]) for v in obj["versions"]]
        for v_obj, v in zip(obj["versions"], rec.versions, strict=True):
            models = [f for f in v_obj["files"] if f["type"] == "Model"]  # training data zips are not adapters
            assert [f.name for f in v.files] == [f["name"] for f in models]
            f, f_obj = v.files[0], models[0]
            assert f.primary and f.size == round(f_obj["sizeKB"] * 1024)
            assert f.hashes == {k.lower(): h.lower() for k, h in f_obj["hashes"].items() if h}
            assert v.url == f"https://civitai.com/models/{obj['id']}?modelVersionId={v_obj['id']}"
        assert rec.created_at == max(v.created_at for v in rec.versions)
    zips = sum(f["type"] == "Training Data" for o in objects for v in o["versions"] for f in v["files"])
    assert zips > 10  # the catalogue has the files the importer must drop
    with pytest.raises(ValueError):
        civitai_to_record({"nope": 1})


def test_reading_a_file_of_them(records: Path) -> None:
    recs = read_records(records, fmt="civitai")
    assert len(recs) == 300 and recs[-1].name == "Old Archives"
    bad = records.with_name("bad.jsonl")
    lines = records.read_text(encoding="utf-8").splitlines()
    bad.write_text("\n".join([*lines[:3], "{not json", *lines[3:]]), encoding="utf-8")
    with pytest.raises(RegistryError, match=r"bad\.jsonl:4: not JSON"):
        read_records(bad, fmt="civitai")


def test_migrate_index_search_hash_dupes(db_url: str, records: Path, objects: list[dict], tmp_path: Path) -> None:
    code, out, _ = run("registry", "migrate", "--database", db_url, "--json")
    assert code == 0 and json.loads(out)["before"] is None

    code, out, _ = run("index", "--records", str(records), "--from", "civitai", "--database", db_url, "--json")
    assert code == 0, out
    assert json.loads(out)["records"] == 300

    code, out, _ = run("search", "anime", "--limit", "5", "--database", db_url, "--json")
    assert code == 0
    found = json.loads(out)
    assert 0 < len(found) <= 5
    for item in found:
        for key in ("name", "source", "base_family", "format", "rank", "tags", "trigger_words", "sha256", "autov3", "score"):
            assert key in item
    assert all("anime" in (item["name"] + " ".join(item["tags"] + item["trigger_words"])).lower() for item in found)

    code, out, err = run("search", "velvet lantern", "--limit", "3", "--database", db_url)
    assert code == 0 and out.splitlines()[0].split() == ["name", "base", "format", "rank", "trigger", "words", "hash", "source"]
    assert out.splitlines()[2].startswith("Velvet Lantern ")  # below the header and its rule

    planted = next(o for o in objects if o["name"] == "Night Market")
    hashes = planted["versions"][0]["files"][0]["hashes"]
    code, out, _ = run("search", "--hash", hashes["AutoV2"], "--database", db_url, "--json")
    assert code == 0
    (hit,) = json.loads(out)
    assert hit["query"] == hashes["AutoV2"] and hit["matches"][0]["name"] == "Night Market"

    listing = tmp_path / "hashes.txt"
    listing.write_text(f"# from sha256sum\n{hashes['SHA256'].lower()}  night_market.safetensors\nffffffffffff\n",
                       encoding="utf-8")
    code, out, _ = run("search", "--hash-file", str(listing), "--database", db_url, "--json")
    assert code == 0
    assert [len(h["matches"]) for h in json.loads(out)] == [1, 0]
    code, out, _ = run("search", "--hash", "ffffffffffff", "--database", db_url)
    assert code == 1 and "not found" in out

    code, out, _ = run("dupes", "--database", db_url, "--json")
    assert code == 0 and json.loads(out) == []


def test_a_bad_line_imports_nothing(db_url: str, records: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    lines = records.read_text(encoding="utf-8").splitlines()[:10]
    lines.insert(5, '{"id": 1, "name": "x", "versions": [{"files": [{"name": "a", "hashes": {"SHA256": "abc"}}]}]}')
    bad.write_text("\n".join(lines), encoding="utf-8")
    code, out, err = run("index", "--records", str(bad), "--from", "civitai", "--database", db_url)
    assert code == 1
    assert f"{bad}:6:" in err and "64 hex" in err
    code, out, _ = run("search", "--database", db_url, "--json")
    assert code == 0 and json.loads(out) == []
