"""``lorahub push`` / ``lorahub pull`` end to end: the real huggingface_hub client against ``lorahub serve``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from lorahub.cli.main import cli

pytest.importorskip("diffusers")


@pytest.fixture(scope="module")
def trained_package(tmp_path_factory: pytest.TempPathFactory, embedded_base: Path) -> Path:
    """A real `lorahub train` output package (a few steps on the generated demo data)."""
    import torch

    from lorahub.base.embedded import embedded_path
    from lorahub.training.demo_data import make_demo_dataset

    home = tmp_path_factory.mktemp("train-home")
    target = embedded_path(home)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(embedded_base, target_is_directory=True)
    work = tmp_path_factory.mktemp("pkg")
    data = make_demo_dataset(work / "data", count=4, size=64, trigger="pushstyle")
    out = work / "mystyle"
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    old_home = os.environ.get("LORAHUB_HOME")
    os.environ["LORAHUB_HOME"] = str(home)
    try:
        res = CliRunner().invoke(cli, ["train", str(data), "--out", str(out), "--steps", "2", "--trigger", "pushstyle",
                                       "--resolution", "64", "--sample-steps", "2", "--no-progress", "--json"],
                                 catch_exceptions=False)
    finally:
        torch.set_num_threads(before)
        if old_home is None:
            os.environ.pop("LORAHUB_HOME", None)
        else:
            os.environ["LORAHUB_HOME"] = old_home
    assert res.exit_code == 0, res.output
    assert any(out.glob("samples/*.png"))
    return out


def _push(server, *args: str, user: str | None = "alice", token: str | None = None):  # noqa: ANN001, ANN202
    tok = token if token is not None else (server.tokens[user] if user else None)
    argv = ["push", *args, "--endpoint", server.url, "--json"]
    if tok:
        argv += ["--token", tok]
    return CliRunner().invoke(cli, argv)


def test_push_makes_a_repo_that_loads_in_diffusers(sqlite_server, trained_package: Path, tmp_path: Path) -> None:  # noqa: ANN001
    from huggingface_hub import ModelCard

    res = _push(sqlite_server, str(trained_package), "--repo", "alice/mystyle")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["changed"] and out["commit"] and out["card_action"] == "generated" and out["registered"]
    api = sqlite_server.api("alice")
    info = api.model_info("alice/mystyle", files_metadata=True)
    names = {s.rfilename for s in info.siblings}
    assert {"pytorch_lora_weights.safetensors", "README.md", "train_config.toml"} <= names
    assert any(n.startswith("samples/") for n in names)
    assert not any(n.startswith("checkpoints/") for n in names)
    lfs = {s.rfilename: s.lfs for s in info.siblings if s.lfs}
    from lorahub.adapters.fingerprint import fingerprint_file

    assert lfs["pytorch_lora_weights.safetensors"].sha256 == fingerprint_file(
        trained_package / "pytorch_lora_weights.safetensors").sha256
    card = ModelCard.load(api.hf_hub_download("alice/mystyle", "README.md"))  # the endpoint-aware download
    data = card.data.to_dict()
    assert data["base_model_relation"] == "adapter" and data["library_name"] == "diffusers"
    assert data["pipeline_tag"] == "text-to-image" and data["instance_prompt"] == "pushstyle"
    assert data["base_model"] == "lorahub/embedded-sd1-tiny"
    assert data["widget"] and data["widget"][0]["output"]["url"].startswith("samples/")
    assert "load_lora_weights" in card.text and "AutoV3" in card.text
    # the server indexed it too: search through the HTTP search API
    found = sqlite_server.request("GET", "/api/lorahub/search", params={"q": "mystyle"}).json()
    assert any(r.get("name") == "mystyle" for r in (found if isinstance(found, list) else found.get("results", [])))

    # load the pushed repo into a real diffusers pipeline through HF_ENDPOINT, in a fresh process
    code = (
        "import torch, sys\n"
        "from diffusers import StableDiffusionPipeline\n"
        "from lorahub.base.embedded import ensure_embedded\n"
        "pipe = StableDiffusionPipeline.from_pretrained(sys.argv[1], safety_checker=None)\n"
        "g = lambda: torch.Generator().manual_seed(0)\n"
        "a = pipe('pushstyle', num_inference_steps=2, height=64, width=64, generator=g(), output_type='np').images\n"
        "pipe.load_lora_weights('alice/mystyle')\n"
        "assert pipe.get_list_adapters(), 'nothing loaded'\n"
        "b = pipe('pushstyle', num_inference_steps=2, height=64, width=64, generator=g(), output_type='np').images\n"
        "print('DIFF', float(abs(a - b).max()))\n"
    )
    env = sqlite_server.env("alice")
    res = subprocess.run([sys.executable, "-c", code, str(_embedded_folder())], env=env, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert float(res.stdout.split("DIFF")[1]) > 0


def _embedded_folder() -> Path:
    from lorahub.base.embedded import ensure_embedded

    return ensure_embedded()


def test_push_is_idempotent_and_a_change_makes_one_commit(sqlite_server, trained_package: Path, tmp_path: Path) -> None:  # noqa: ANN001
    import shutil

    pkg = tmp_path / "idem"
    shutil.copytree(trained_package, pkg)
    first = json.loads(_push(sqlite_server, str(pkg), "--repo", "alice/idem").stdout)
    api = sqlite_server.api("alice")
    commits = len(api.list_repo_commits("alice/idem"))
    again = _push(sqlite_server, str(pkg), "--repo", "alice/idem")
    assert again.exit_code == 0, again.output
    second = json.loads(again.stdout)
    assert not second["changed"] and second["bytes_uploaded"] == 0 and second["commit"] == first["commit"]
    assert all(f["status"] == "unchanged" for f in second["files"])
    assert len(api.list_repo_commits("alice/idem")) == commits
    # change the metadata of the weights (tensor bytes stay): exactly one new commit with that file
    res = CliRunner().invoke(cli, ["meta", "set", str(pkg / "pytorch_lora_weights.safetensors"), "ss_output_name=idem2"])
    assert res.exit_code == 0, res.output
    third = json.loads(_push(sqlite_server, str(pkg), "--repo", "alice/idem").stdout)
    assert third["changed"] and third["commit"] != first["commit"]
    changed = {f["path"] for f in third["files"] if f["status"] != "unchanged"}
    assert "pytorch_lora_weights.safetensors" in changed
    assert len(api.list_repo_commits("alice/idem")) == commits + 1


def test_private_push_and_pull(sqlite_server, trained_package: Path, tmp_path: Path) -> None:  # noqa: ANN001
    res = _push(sqlite_server, str(trained_package), "--repo", "alice/secret", "--private")
    assert res.exit_code == 0, res.output
    anon = CliRunner().invoke(cli, ["pull", "alice/secret", "--endpoint", sqlite_server.url, "--to",
                                    str(tmp_path / "anon"), "--token", "", "--json"], env={"HF_TOKEN": ""})
    assert anon.exit_code == 1 and "not found" in anon.output
    assert not (tmp_path / "anon").exists()
    got = CliRunner().invoke(cli, ["pull", "alice/secret", "--endpoint", sqlite_server.url, "--to",
                                   str(tmp_path / "copy"), "--token", sqlite_server.tokens["alice"], "--json"])
    assert got.exit_code == 0, got.output
    out = json.loads(got.stdout)
    assert out["registered"]
    weights = next(f for f in out["files"] if f["path"] == "pytorch_lora_weights.safetensors")
    assert weights["verified"] == "registry"  # the push recorded it in this (local) registry
    assert (tmp_path / "copy" / "pytorch_lora_weights.safetensors").read_bytes() == (
        trained_package / "pytorch_lora_weights.safetensors").read_bytes()
    search = CliRunner().invoke(cli, ["search", "secret", "--json"])
    assert search.exit_code == 0 and any(r["name"] == "secret" for r in json.loads(search.stdout))


def test_pull_refuses_a_file_the_registry_knows_differently(sqlite_server, trained_package: Path, tmp_path: Path) -> None:  # noqa: ANN001
    from lorahub.registry.catalogue import Registry

    assert _push(sqlite_server, str(trained_package), "--repo", "alice/tamper").exit_code == 0
    with Registry() as reg:
        key = f"hub:{sqlite_server.url}/alice/tamper"
        with reg.writing() as conn:
            conn.exec_driver_sql(
                "UPDATE adapter_files SET sha256 = ? WHERE adapter_id = (SELECT id FROM adapters WHERE source_key = ?)",
                ("0" * 64, key),
            )
    res = CliRunner().invoke(cli, ["pull", "alice/tamper", "--endpoint", sqlite_server.url, "--to",
                                   str(tmp_path / "t"), "--token", sqlite_server.tokens["alice"]])
    assert res.exit_code == 1 and "does not match the registry" in res.output
    assert not (tmp_path / "t").exists()


def test_pull_with_an_unreadable_registry_is_an_error(sqlite_server, trained_package: Path, tmp_path: Path) -> None:  # noqa: ANN001
    """A registry that cannot be read is not an empty one: the pull stops in one line (exit 1) instead of
    going on without the registry's check, and nothing is downloaded."""
    assert _push(sqlite_server, str(trained_package), "--repo", "alice/unverifiable").exit_code == 0
    broken = tmp_path / "broken.sqlite"
    broken.write_bytes(b"not a database, " * 64)
    res = CliRunner().invoke(cli, ["pull", "alice/unverifiable", "--endpoint", sqlite_server.url, "--to",
                                   str(tmp_path / "u"), "--token", sqlite_server.tokens["alice"],
                                   "--registry", f"sqlite:///{broken}"])
    assert res.exit_code == 1, res.output
    assert res.output.count("\n") == 1 and "the registry could not be read to verify alice/unverifiable" in res.output
    assert "Traceback" not in res.output and not (tmp_path / "u").exists()


def test_push_errors_are_one_line(sqlite_server, trained_package: Path, tmp_path: Path) -> None:  # noqa: ANN001
    # no token
    res = CliRunner().invoke(cli, ["push", str(trained_package), "--endpoint", sqlite_server.url],
                             env={"HF_TOKEN": "", "HF_HOME": str(tmp_path / "hf")})
    assert res.exit_code == 1 and "token" in res.output.lower()
    # a read-only token
    res = _push(sqlite_server, str(trained_package), "--repo", "alice/ro", user="alice_ro")
    assert res.exit_code == 1 and "403" in res.output
    # someone else's namespace
    res = _push(sqlite_server, str(trained_package), "--repo", "bob/notyours", user="alice")
    assert res.exit_code == 1 and ("403" in res.output or "may not write" in res.output)
    # a revoked token
    res = _push(sqlite_server, str(trained_package), "--repo", "alice/x", user="revoked")
    assert res.exit_code == 1 and "401" in res.output
    # the network is down (nothing listens on the port)
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    res = CliRunner().invoke(cli, ["push", str(trained_package), "--endpoint", f"http://127.0.0.1:{port}",
                                   "--token", "x"])
    assert res.exit_code == 1 and "cannot reach" in res.output
    # an invalid adapter is refused before anything is uploaded
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "pytorch_lora_weights.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}      ")
    res = _push(sqlite_server, str(bad), "--repo", "alice/bad")
    assert res.exit_code == 1 and "not valid JSON" in res.output
    for r in (res,):
        assert "Traceback" not in r.output


def test_dry_run_uploads_nothing(sqlite_server, trained_package: Path) -> None:  # noqa: ANN001
    res = _push(sqlite_server, str(trained_package), "--repo", "alice/dry", "--dry-run")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["dry_run"] and out["card"].startswith("---") and all(f["status"] == "new" for f in out["files"])
    from huggingface_hub.errors import RepositoryNotFoundError

    with pytest.raises(RepositoryNotFoundError):
        sqlite_server.api("alice").model_info("alice/dry")


def test_interrupted_push_registers_nothing_and_a_rerun_completes_it(
    sqlite_server, trained_package: Path, monkeypatch: pytest.MonkeyPatch  # noqa: ANN001
) -> None:
    """The connection drops after the LFS objects reached the server, before the commit."""
    import httpx
    from huggingface_hub import HfApi

    from lorahub.registry.catalogue import Registry

    real = HfApi.preupload_lfs_files

    def upload_then_drop(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        real(self, *args, **kwargs)  # the real upload to the real server
        raise httpx.ReadError("connection reset by peer")

    monkeypatch.setattr(HfApi, "preupload_lfs_files", upload_then_drop)
    res = _push(sqlite_server, str(trained_package), "--repo", "alice/flaky")
    assert res.exit_code == 1 and "run the command again" in res.output and "Traceback" not in res.output
    api = sqlite_server.api("alice")
    names = {s.rfilename for s in api.model_info("alice/flaky").siblings}
    assert "pytorch_lora_weights.safetensors" not in names  # nothing committed
    with Registry() as reg:
        assert reg.source_files(f"hub:{sqlite_server.url}/alice/flaky") == {}  # nothing registered
    monkeypatch.setattr(HfApi, "preupload_lfs_files", real)
    again = _push(sqlite_server, str(trained_package), "--repo", "alice/flaky")
    assert again.exit_code == 0, again.output
    out = json.loads(again.stdout)
    assert out["changed"] and out["registered"]
    assert "pytorch_lora_weights.safetensors" in {s.rfilename for s in api.model_info("alice/flaky").siblings}
    with Registry() as reg:
        assert reg.source_files(f"hub:{sqlite_server.url}/alice/flaky")


def test_server_refusals_are_one_line(trained_package: Path, tmp_path: Path) -> None:
    """A server that refuses the upload (here: too large) gives one readable line; pickles never leave."""
    import shutil

    import hubkit as srv

    server = srv.start_server(tmp_path / "small", None, "sqlite", extra_args=["--max-upload-size", "1K"])
    try:
        res = _push(server, str(trained_package), "--repo", "alice/big")
        assert res.exit_code == 1 and "Traceback" not in res.output
        line = res.output.strip().splitlines()[-1]
        assert line.startswith("Error: ") and ("too large" in line or "413" in line or "refused" in line), line
        pkg = tmp_path / "with-pickle"
        shutil.copytree(trained_package, pkg)
        (pkg / "extra.ckpt").write_bytes(b"\x80\x04K\x01.")
        res = _push(server, str(pkg), "--repo", "alice/pickled")
        assert res.exit_code == 1 and "extra.ckpt" in res.output and "pickle" in res.output
    finally:
        srv.stop_server(server)
