"""``lorahub resolve`` against two real ``lorahub serve`` instances: one asked as a Hub (lorahub's by-hash
API, ``--endpoint``), one as Civitai (``--civitai``: the batched by-hash of its Civitai-compatible API),
with files published on one, the other, both or neither. The Civitai side runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from hubkit import start_server, stop_server, write_kohya_lora

from lorahub.adapters.metadata import read_metadata
from lorahub.cli.main import cli

CARD = "---\nlicense: apache-2.0\nbase_model: Pony\ntags: [style]\ninstance_prompt: zzz style\n---\n# Z\n"


@pytest.fixture(scope="module")
def hub_side(tmp_path_factory):  # noqa: ANN201
    server = start_server(tmp_path_factory.mktemp("resolve-hub"), None, "sqlite")
    try:
        yield server
    finally:
        stop_server(server)


@pytest.fixture(scope="module")
def world(hub_side, hub_server, tmp_path_factory):  # noqa: ANN001, ANN201
    """Files: on_hub (published on the Hub side), on_civ (Civitai side), on_both, on_none."""
    d = tmp_path_factory.mktemp("resolve-files")
    files = {name: write_kohya_lora(d / f"{name}.safetensors", seed=30 + i, title=name, trigger=f"{name}word")
             for i, name in enumerate(("on_hub", "on_civ", "on_both", "on_none"))}
    for server, names in ((hub_side, ("on_hub", "on_both")), (hub_server, ("on_civ", "on_both"))):
        api = server.api("alice")
        for name in names:
            api.create_repo(f"alice/{name}", exist_ok=True)  # the Hub side outlives a backend
            api.upload_file(path_or_fileobj=str(files[name]), path_in_repo=f"{name}.safetensors", repo_id=f"alice/{name}")
            api.upload_file(path_or_fileobj=CARD.encode(), path_in_repo="README.md", repo_id=f"alice/{name}")
    return hub_side, hub_server, files


def resolve(*args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(cli, ["resolve", *args])
    return r.exit_code, r.stdout, r.stderr


def copies(files: dict[str, Path], tmp_path: Path) -> Path:
    folder = tmp_path / "mine"
    folder.mkdir()
    for f in files.values():
        (folder / f.name).write_bytes(f.read_bytes())
    return folder


def test_found_on_one_both_or_neither(world, tmp_path) -> None:  # noqa: ANN001
    hub, civ, files = world
    folder = copies(files, tmp_path)
    code, out, err = resolve(str(folder), "--endpoint", hub.url, "--civitai", civ.url, "--json")
    assert code == 0, err
    results = {Path(r["path"]).stem: r for r in json.loads(out)}
    kinds = {name: sorted(p["kind"] for p in r["found"]) for name, r in results.items()}
    assert kinds == {"on_hub": ["hub"], "on_civ": ["civitai"], "on_both": ["civitai", "hub"], "on_none": []}
    assert "3 of 4 file(s) found; 1 not published" in err
    h = next(p for p in results["on_hub"]["found"] if p["kind"] == "hub")
    assert h["repo_id"] == "alice/on_hub" and h["license"] == "apache-2.0" and h["base_model"] == "Pony"
    assert "zzz style" in h["trigger_words"] and h["url"] == f"{hub.url}/alice/on_hub" and h["endpoint"] == hub.url
    c = next(p for p in results["on_civ"]["found"] if p["kind"] == "civitai")
    assert c["name"] == "on_civ" and c["base_model"] == "SD 1.5" and c["base_family"] == "sd1"
    assert c["license"] == "apache-2.0" and "zzz style" in c["trigger_words"]
    assert c["url"] == f"{civ.url}/models/{c['model_id']}?modelVersionId={c['version_id']}"
    assert c["download_url"].endswith(f"/api/download/models/{c['version_id']}")
    assert all(not r["errors"] and not r["cached"] for r in results.values())
    # a second run answers from the cache; --cache-ttl 0 asks again
    code, out, _ = resolve(str(folder), "--endpoint", hub.url, "--civitai", civ.url, "--json")
    again = json.loads(out)
    assert code == 0 and all(r["cached"] for r in again)
    assert {Path(r["path"]).stem: len(r["found"]) for r in again} == {k: len(v["found"]) for k, v in results.items()}
    code, out, _ = resolve(str(folder), "--civitai", civ.url, "--json", "--cache-ttl", "0")
    assert code == 0 and not any(r["cached"] for r in json.loads(out))
    # the human form says it too
    code, out, _ = resolve(str(folder / "on_none.safetensors"), "--civitai", civ.url + "/api/v1")
    assert code == 0 and "not published on any server asked" in out


def test_batches_of_100(world, tmp_path) -> None:  # noqa: ANN001
    _, civ, _ = world
    folder = tmp_path / "many"
    for i in range(130):
        write_kohya_lora(folder / f"x{i}.safetensors", seed=1000 + i, rank=1)
    before = len(re.findall(r"POST /api/v1/model-versions/by-hash", civ.log_text()))
    code, out, err = resolve(str(folder), "--civitai", civ.url, "--json")
    assert code == 0, err
    assert len(json.loads(out)) == 130 and "0 of 130 file(s) found" in err
    assert len(re.findall(r"POST /api/v1/model-versions/by-hash", civ.log_text())) - before == 2


def test_unreachable_server_is_a_failure(world, tmp_path) -> None:  # noqa: ANN001
    hub, _, files = world
    code, out, err = resolve(str(files["on_hub"]), "--endpoint", hub.url, "--civitai", "http://127.0.0.1:9", "--json")
    assert code == 1
    (r,) = json.loads(out)
    assert [p["kind"] for p in r["found"]] == ["hub"] and len(r["errors"]) == 1 and "cannot reach" in r["errors"][0]
    # a Hub without lorahub's by-hash API, of which the local registry knows nothing, is an error of that
    # endpoint, not "not published"
    code, out, _ = resolve(str(files["on_hub"]), "--endpoint", hub.url + "/nothing-here", "--json")
    (err,) = json.loads(out)[0]["errors"]
    assert code == 1 and "no lorahub by-hash API" in err and "lorahub index --hub" in err


@pytest.mark.parametrize(
    "args",
    [
        ["PATH"],  # no server named
        ["PATH", "--civitai", "ftp://example.com"],
        ["PATH", "--endpoint", "not a url"],
        ["/nonexistent/file.safetensors", "--civitai", "http://127.0.0.1:9"],
        ["PATH", "--civitai", "http://127.0.0.1:9", "--cache-ttl", "soon"],
    ],
)
def test_usage_errors(world, args) -> None:  # noqa: ANN001
    _, _, files = world
    code, out, err = resolve(*[str(files["on_none"]) if a == "PATH" else a for a in args])
    assert code == 2 and out == "" and "Traceback" not in err, err


def test_apply_records_and_leaves_the_file_alone(world, tmp_path) -> None:  # noqa: ANN001
    hub, civ, files = world
    mine = tmp_path / "on_both.safetensors"
    mine.write_bytes(files["on_both"].read_bytes())
    before = mine.read_bytes()
    code, out, err = resolve(str(mine), "--endpoint", hub.url, "--civitai", civ.url, "--apply", "--json")
    assert code == 0, err
    (r,) = json.loads(out)
    assert r["applied"] is True and r["new_sha256"] is None and mine.read_bytes() == before
    search = CliRunner().invoke(cli, ["search", "--hash", r["sha256"], "--json"])
    assert search.exit_code == 0, search.stderr
    kinds = sorted(m["source_kind"] for lookup in json.loads(search.stdout) for m in lookup["matches"])
    assert kinds == ["local", "record", "record"]
    names = CliRunner().invoke(cli, ["search", "zzz", "--json"])
    assert any(x["license"] == "apache-2.0" for x in json.loads(names.stdout))


def test_write_metadata(world, tmp_path) -> None:  # noqa: ANN001
    _, civ, files = world
    mine = tmp_path / "on_civ.safetensors"
    mine.write_bytes(files["on_civ"].read_bytes())
    code, out, err = resolve(str(mine), "--civitai", civ.url, "--write-metadata", "--json")
    assert code == 0, err
    (r,) = json.loads(out)
    assert r["new_sha256"] and r["new_sha256"] != r["sha256"] and "SHA-256 changed" in err
    md = read_metadata(mine)
    assert md["modelspec.title"] == "on_civ" and "zzz style" in md["modelspec.trigger_phrase"]
    assert md["modelspec.license"] == "apache-2.0" and md["lorahub.source_url"].startswith(civ.url + "/models/")
    assert not list(tmp_path.glob("*.tmp*")) and not list(tmp_path.glob(".*"))  # nothing half-written left
    # the rewritten copy is no longer found by hash: as the help says
    code, out, _ = resolve(str(mine), "--civitai", civ.url, "--json")
    assert code == 0 and json.loads(out)[0]["found"] == []


# -- a hostile server: what resolve reads from a stranger's answers ------------------------------------


@pytest.fixture
def hostile():  # noqa: ANN201
    """A real HTTP server on loopback whose answers are chosen per test: (status, body bytes)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    answer: dict[str, object] = {"status": 200, "body": b"[]"}

    class Handler(BaseHTTPRequestHandler):
        def _send(self) -> None:
            body = answer["body"]
            self.send_response(int(answer["status"]))  # type: ignore[arg-type]
            self.send_header("Content-Type", "application/json")
            if isinstance(body, bytes):
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            else:  # a generator: an endless answer, chunk by chunk
                self.end_headers()
                try:
                    for chunk in body:  # type: ignore[union-attr]
                        self.wfile.write(chunk)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        def do_GET(self) -> None:  # noqa: N802
            self._send()

        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self._send()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", answer
    finally:
        server.shutdown()
        server.server_close()


def test_hostile_answers(hostile, tmp_path) -> None:  # noqa: ANN001
    from lorahub.hub.resolve import ResolveCache
    from lorahub.hub.resolve import resolve as lookup

    url, answer = hostile
    sha = "ab" * 32
    files = [("x.safetensors", sha, 10)]

    def run(**kw):  # noqa: ANN003, ANN202
        return lookup(files, cache=ResolveCache(tmp_path / "cache", ttl_s=0), **kw)[0]

    # junk entries are skipped, a good one among them is read, long strings are cut
    good = {"id": 5, "modelId": 7, "name": "v" * 5000, "baseModel": "Pony", "trainedWords": ["a", 3, None, "b"],
            "model": {"name": "M"}, "files": [{"name": "f", "hashes": {"SHA256": sha.upper()}}]}
    answer["body"] = json.dumps([1, "x", None, {"files": "no"}, {"files": [{"hashes": "no"}]}, good]).encode()
    r = run(civitai=[url])
    (p,) = r.found
    assert (p.model_id, p.version_id, p.base_family, p.trigger_words) == (7, 5, "sdxl", ["a", "b"]) and len(p.version) == 2000
    # a version naming another file is not this file's
    answer["body"] = json.dumps([{**good, "files": [{"hashes": {"SHA256": "cd" * 32}}]}]).encode()
    assert run(civitai=[url]).found == []
    # not JSON, not a list, an error status: an error of that endpoint, nothing found, nothing raised
    for status, body in ((200, b"<html>"), (200, b'{"items": []}'), (500, b"[]"), (429, b'{"error": "slow down"}')):
        answer.update(status=status, body=body)
        r = run(civitai=[url], hubs=[url])
        assert r.found == [] and len(r.errors) == 2, (status, body)
    # an answer without end is cut at 16 MiB
    answer.update(status=200, body=(b"[" + b" " * (1 << 20) for _ in range(40)))
    r = run(civitai=[url])
    assert r.found == [] and "larger than 16 MiB" in r.errors[0]
    # a Hub answer whose matches are another file's (a prefix match) is not this file's
    answer.update(status=200, body=json.dumps({"query": sha, "matches": [{"sha256": "cd" * 32, "name": "n"}]}).encode())
    assert run(hubs=[url]).found == []


def test_hub_without_by_hash_api_uses_the_local_index(hostile, tmp_path) -> None:  # noqa: ANN001
    """The Hugging Face Hub has no by-hash API: its repos are found through the local registry's index of
    them (what ``lorahub index --hub``, ``push`` and ``pull`` record), per endpoint."""
    from lorahub.adapters.fingerprint import fingerprint_record
    from lorahub.adapters.inspect import inspect_file
    from lorahub.registry.catalogue import Registry
    from lorahub.registry.drafts import hub_repo_draft

    url, answer = hostile
    answer.update(status=404, body=b'{"error": "Not Found"}')
    lora = write_kohya_lora(tmp_path / "indexed.safetensors", seed=77, title="indexed", trigger="idxword")
    other = write_kohya_lora(tmp_path / "stranger.safetensors", seed=78, title="stranger")
    code, out, _ = resolve(str(lora), "--endpoint", url, "--json")
    assert code == 1 and "lorahub index --hub" in json.loads(out)[0]["errors"][0]
    rec = fingerprint_record(lora)
    draft = hub_repo_draft(
        endpoint=url, repo_id="bob/indexed", url_prefix="", namespace="bob", name="indexed", private=False,
        owner_id=None, downloads=0, created_at=None, commit_oid="a" * 40, commit_title="first", card={"license": "mit"},
        readme=None, adapters=[("indexed.safetensors", rec["size"], inspect_file(lora), {"sha256": rec["sha256"]})],
    )
    with Registry() as reg:
        reg.upsert([draft])
    code, out, err = resolve(str(lora), str(other), "--endpoint", url, "--json")
    assert code == 0, err
    found = {Path(r["path"]).stem: r["found"] for r in json.loads(out)}
    (p,) = found["indexed"]
    assert (p["repo_id"], p["via"], p["license"], p["endpoint"]) == ("bob/indexed", "index", "mit", url)
    assert "idxword" in p["trigger_words"] and found["stranger"] == []
    # another endpoint's index is not this one's
    code, out, _ = resolve(str(lora), "--endpoint", url + "/other", "--json")
    assert code == 1 and json.loads(out)[0]["found"] == []
