"""The registry commands through click's CliRunner (--json), on both backends."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from testkit import CIVITAI

from lorahub.cli.main import cli


@pytest.fixture
def records(tmp_path: Path) -> Path:
    if not CIVITAI.exists():
        pytest.skip(f"{CIVITAI} is absent")
    lines = CIVITAI.read_text(encoding="utf-8").splitlines()[:300]
    out = tmp_path / "civitai-300.jsonl"
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


def run(*args: str) -> tuple[int, str, str]:
    res = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return res.exit_code, res.stdout, res.stderr


def test_migrate_index_search_hash_dupes(db_url: str, records: Path, tmp_path: Path) -> None:
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

    code, out, err = run("search", "anime", "--limit", "3", "--database", db_url)
    assert code == 0 and out.splitlines()[0].split() == ["name", "base", "format", "rank", "trigger", "words", "hash", "source"]

    code, out, _ = run("search", "--hash", "47AAAF0D29", "--database", db_url, "--json")
    assert code == 0
    (hit,) = json.loads(out)
    assert hit["query"] == "47AAAF0D29" and hit["matches"][0]["name"] == "Detail Tweaker LoRA (细节调整LoRA)"

    hashes = tmp_path / "hashes.txt"
    hashes.write_text("# from sha256sum\n47aaaf0d2945ca937151d61304946dd229b3f072140b85484bc93e38f2a6e2f7  add_detail.safetensors\n"
                      "ffffffffffff\n", encoding="utf-8")
    code, out, _ = run("search", "--hash-file", str(hashes), "--database", db_url, "--json")
    assert code == 0
    assert [len(h["matches"]) for h in json.loads(out)] == [1, 0]
    code, out, _ = run("search", "--hash", "ffffffffffff", "--database", db_url)
    assert code == 1 and "not found" in out

    code, out, _ = run("dupes", "--database", db_url, "--json")
    assert code == 0 and json.loads(out) == []


def test_usage_errors(db_url: str, tmp_path: Path) -> None:
    code, _, err = run("index", "--database", db_url)
    assert code == 2 and "Error:" in err
    code, _, err = run("search", "--hash", "xyz", "--database", db_url)
    assert code == 2 and "not a hash" in err
    code, _, err = run("search", "--min-rank", "8", "--max-rank", "4", "--database", db_url)
    assert code == 2


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


def test_lorahub_records_format(db_url: str, tmp_path: Path) -> None:
    rec = {
        "source": "mysite", "id": "42", "name": "Paper Cut Style", "author": "ann", "license": "mit",
        "tags": ["Style", "paper"], "trigger_words": ["papercut"], "base_model": "Pony", "downloads": 7,
        "files": [{"name": "paper.safetensors", "size": 1234, "hashes": {"sha256": "AB" * 32, "tensor_sha256": "cd" * 32}}],
    }
    path = tmp_path / "records.jsonl"
    path.write_text(json.dumps(rec) + "\n", encoding="utf-8")
    assert run("index", "--records", str(path), "--database", db_url)[0] == 0
    code, out, _ = run("search", "paper", "--base", "pony", "--database", db_url, "--json")
    (r,) = json.loads(out)
    assert (r["base_family"], r["base_model"], r["autov3"], r["source"]) == ("sdxl", "Pony", "CDCDCDCDCDCD", "mysite:42")
    assert r["tags"] == ["style", "paper"]
    code, out, _ = run("search", "paper", "--base", "sdxl", "--license", "mit", "--author", "ann", "--database", db_url, "--json")
    assert len(json.loads(out)) == 1
    # Importing it again replaces it.
    assert run("index", "--records", str(path), "--database", db_url)[0] == 0
    code, out, _ = run("search", "--database", db_url, "--json")
    assert len(json.loads(out)) == 1
    code, out, _ = run("search", "--hash", "cdcdcdcdcdcd", "--database", db_url, "--json")
    assert json.loads(out)[0]["matches"][0]["matched_hashes"] == ["autov3", "tensor_sha256"]


def test_index_folder_from_the_cli(db_url: str, tmp_path: Path, make_lora) -> None:  # noqa: ANN001
    folder = tmp_path / "loras"
    make_lora(folder / "a.safetensors", seed=1, fmt="kohya", rank=4, trigger="alpha")
    make_lora(folder / "b.safetensors", seed=2, fmt="kohya", rank=4, trigger="beta")
    code, out, _ = run("index", str(folder), "--database", db_url, "--json")
    assert code == 0 and json.loads(out)["added"] == 2
    code, out, _ = run("index", str(folder), "--database", db_url, "--json")
    assert json.loads(out)["unchanged"] == 2
    (folder / "c.safetensors").write_bytes(b"not a safetensors file at all")
    code, out, err = run("index", str(folder), "--database", db_url, "--json")
    assert code == 1 and "c.safetensors" in err and json.loads(out)["failed"][0]["path"].endswith("c.safetensors")


def test_index_hub_options_only_go_with_hub(tmp_path: Path) -> None:
    """`lorahub index`'s Hub options: usage errors (exit 2) before any database or network is touched."""
    code, _, err = run("index", str(tmp_path), "--endpoint", "http://127.0.0.1:9", "--filter", "lora")
    assert code == 2 and "--endpoint, --filter only go with --hub" in err
    code, _, err = run("index", "--hub", str(tmp_path))
    assert code == 2 and "give either PATHS/--records or --hub, not both" in err
    assert not any(tmp_path.iterdir())  # nothing written
