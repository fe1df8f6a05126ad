"""``lorahub token ...``, ``lorahub serve`` errors, the stock ``hf`` CLI against the server, and
indexing a Hub endpoint (``lorahub.registry.sources.hub``, ``lorahub index --hub``)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

HF = str(Path(sys.executable).with_name("hf"))
LORAHUB = str(Path(sys.executable).with_name("lorahub"))


def run(cmd: list[str], env: dict[str, str] | None = None, cwd: Path | None = None, timeout: int = 180) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def test_token_create_list_revoke(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from lorahub.cli.main import cli

    data = tmp_path / "srv"
    env = {**os.environ, "LORAHUB_HOME": str(tmp_path / "home")}
    env.pop("LORAHUB_DATABASE_URL", None)
    # The real command line once: the token is alone on the last line of stdout, messages on stderr.
    created = run([LORAHUB, "token", "create", "--user", "carol", "--data", str(data), "--name", "laptop"], env)
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip().splitlines()[-1]
    assert token.startswith("lh_") and len(token) > 40 and created.stdout.strip() == token
    assert "carol" in created.stderr

    runner = CliRunner()
    ro = runner.invoke(cli, ["token", "create", "--user", "carol", "--read-only", "--data", str(data)])
    assert ro.exit_code == 0, ro.output
    ro_token = ro.stdout.strip().splitlines()[-1]
    listed = runner.invoke(cli, ["token", "list", "--data", str(data), "--json"])
    assert listed.exit_code == 0, listed.output
    items = json.loads(listed.stdout)
    assert [(i["user"], i["access"], i["revoked"]) for i in items] == [("carol", "write", False), ("carol", "read", False)]
    assert items[0]["name"] == "laptop"
    assert token not in listed.stdout and ro_token not in listed.stdout  # secrets are never shown again
    table = runner.invoke(cli, ["token", "list", "--data", str(data)])
    assert "carol" in table.stdout and token not in table.stdout

    # The database stores hashes only.
    raw = b"".join(p.read_bytes() for p in data.glob("lorahub-server.sqlite*"))
    assert token.encode() not in raw and token[3:].encode() not in raw

    assert runner.invoke(cli, ["token", "revoke", token, "--data", str(data)]).exit_code == 0
    assert runner.invoke(cli, ["token", "revoke", str(items[1]["id"]), "--data", str(data)]).exit_code == 0
    items = json.loads(runner.invoke(cli, ["token", "list", "--data", str(data), "--json"]).stdout)
    assert all(i["revoked"] for i in items)
    missing = runner.invoke(cli, ["token", "revoke", "999", "--data", str(data)])
    assert missing.exit_code == 1 and "no such token" in missing.stderr
    bad_user = runner.invoke(cli, ["token", "create", "--user", "../root", "--data", str(data)])
    assert bad_user.exit_code != 0 and "invalid user name" in bad_user.stderr
    assert len(bad_user.stderr.strip().splitlines()) == 1


def test_serve_refuses_a_busy_port(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        env = {**os.environ, "LORAHUB_HOME": str(tmp_path / "home")}
        env.pop("LORAHUB_DATABASE_URL", None)
        proc = run([LORAHUB, "serve", "--port", str(port), "--data", str(tmp_path / "srv")], env, timeout=60)
    assert proc.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in proc.stderr and "Traceback" not in proc.stderr


def test_hf_cli_against_the_server(sqlite_server, tmp_path: Path) -> None:
    srv = sqlite_server
    env = srv.env("alice")
    who = run([HF, "auth", "whoami"], env)
    assert who.returncode == 0 and "alice" in who.stdout, who.stdout + who.stderr
    made = run([HF, "repos", "create", "alice/from-hf-cli"], env)
    assert made.returncode == 0, made.stderr
    folder = tmp_path / "up"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("alpha")
    (folder / "sub" / "weights.bin").write_bytes(os.urandom(40_000))
    up = run([HF, "upload", "alice/from-hf-cli", str(folder), ".", "--commit-message", "via hf"], env)
    assert up.returncode == 0, up.stdout + up.stderr
    down = run([HF, "download", "alice/from-hf-cli", "--local-dir", str(tmp_path / "down")], env)
    assert down.returncode == 0, down.stderr
    assert (tmp_path / "down" / "a.txt").read_text() == "alpha"
    assert (tmp_path / "down" / "sub" / "weights.bin").read_bytes() == (folder / "sub" / "weights.bin").read_bytes()
    listed = run([HF, "models", "ls", "--author", "alice", "--format", "json"], env)
    assert listed.returncode == 0, listed.stderr
    assert "alice/from-hf-cli" in {m["id"] for m in json.loads(listed.stdout)}

    # Without HF_HUB_DISABLE_XET the stock client uploads through Xet (with hf_xet) and downloads it back.
    xet_env = {k: v for k, v in env.items() if k != "HF_HUB_DISABLE_XET"}
    xet_env["HF_XET_CACHE"] = str(tmp_path / "xet-cache")
    big = os.urandom(300_000)
    (folder / "big.safetensors.part").write_bytes(big)
    xet = run([HF, "upload", "alice/from-hf-cli", str(folder / "big.safetensors.part"), "big.bin"], xet_env)
    assert xet.returncode == 0, xet.stdout + xet.stderr
    down = run([HF, "download", "alice/from-hf-cli", "big.bin", "--local-dir", str(tmp_path / "down-xet")], xet_env)
    assert down.returncode == 0, down.stderr
    assert (tmp_path / "down-xet" / "big.bin").read_bytes() == big


def test_index_hub_reads_headers_with_range_requests(sqlite_server, kohya_lora, lokr_file: Path, tmp_path: Path, monkeypatch) -> None:
    from lorahub.registry.catalogue import Registry
    from lorahub.registry.sources.hub import index_hub

    srv = sqlite_server
    api = srv.api("bob")
    api.create_repo("bob/idx-style")
    api.upload_file(path_or_fileobj=kohya_lora("idx.safetensors", rank=16, title="idxstyle"), path_in_repo="idx.safetensors", repo_id="bob/idx-style")
    api.upload_file(
        path_or_fileobj=b"---\nlicense: mit\ntags: [pixel]\ninstance_prompt: pxl\n---\nPixel art.\n", path_in_repo="README.md", repo_id="bob/idx-style"
    )
    api.create_repo("bob/idx-lokr")
    api.upload_file(path_or_fileobj=lokr_file, path_in_repo="falcon.safetensors", repo_id="bob/idx-lokr")
    api.create_repo("bob/idx-private", private=True)
    api.upload_file(path_or_fileobj=kohya_lora("p.safetensors", seed=3), path_in_repo="p.safetensors", repo_id="bob/idx-private")
    api.create_repo("bob/idx-empty")

    before = srv.log_text().count('"GET /bob/idx-')
    reg = Registry(f"sqlite:///{tmp_path / 'local.sqlite'}")
    summary = index_hub(reg, endpoint=srv.url, author="bob")
    assert summary.failed == []
    assert summary.added == 2 and summary.scanned == 3  # anonymous: the private repo is not listed
    hits = {h.name: h for h in reg.search(author="bob", limit=50)}
    assert set(hits) == {"idx-style", "idx-lokr"}
    style = hits["idx-style"]
    assert style.source_kind == "hub" and style.rank == 16 and style.format == "kohya-lora" and style.base_family == "sd1"
    assert style.license == "mit" and "pixel" in style.tags and "pxl" in style.trigger_words
    assert style.sha256 == __import__("hashlib").sha256((tmp_path / "loras" / "idx.safetensors").read_bytes()).hexdigest()
    assert hits["idx-lokr"].format == "lycoris-lokr"
    assert reg.by_hash(style.sha256[:10])[0].name == "idx-style"
    # Only headers were read: every GET of a weights file was a range request (206), never the whole file.
    gets = [ln for ln in srv.log_text().splitlines()[before:] if '"GET /bob/idx-' in ln]
    assert gets and all('" 206 ' in ln for ln in gets), gets

    again = index_hub(reg, endpoint=srv.url, author="bob")
    assert again.unchanged == 2 and again.added == again.updated == 0
    with_token = index_hub(reg, endpoint=srv.url, author="bob", token=srv.tokens["bob"])
    assert with_token.added == 1  # the private repo, visible to its owner
    api.delete_file("idx.safetensors", "bob/idx-style")
    after = index_hub(reg, endpoint=srv.url, author="bob", token=srv.tokens["bob"])
    assert after.removed == 1 and "idx-style" not in {h.name for h in reg.search(author="bob", limit=50)}
    reg.close()

    # The CLI: `lorahub index --hub`.
    env = {**os.environ, "LORAHUB_HOME": str(tmp_path / "cli-home"), "HF_TOKEN": srv.tokens["bob"]}
    env.pop("LORAHUB_DATABASE_URL", None)
    proc = run([LORAHUB, "index", "--hub", "--endpoint", srv.url, "--author", "bob", "--json"], env)
    assert proc.returncode == 0, proc.stderr
    found = run([LORAHUB, "search", "falcon", "--json"], env)
    assert found.returncode == 0 and "idx-lokr" in found.stdout
