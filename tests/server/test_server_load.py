"""Load (issue 9): searchers and pushers at once against a real ``lorahub serve``, on SQLite and PostgreSQL.

The harness is benchmarks/bench_load.py (one implementation for the benchmark and this test), run small
and short: 1,000 resampled Civitai records, 4 search clients and 3 push clients (real ``HfApi.upload_file``
of valid kohya LoRAs, to their own repos and to one shared repo, with and without ``parent_commit``) for
6 s. Asserts zero errors (client side and ``ERROR`` lines of the server log), zero lost pushes (every
successful push in its commit and in the head tree, bytes served matching, commit counts exact, no file
of a push refused with 409), and every pushed adapter found by hash and by search. Then it checks that the
checker itself catches a lost push: records of pushes that never landed must be reported.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from testkit import REPO

SECONDS = 6.0
SEARCHERS = 4
PUSHERS = 3
RECORDS = 1000


def _harness():  # noqa: ANN202 - the module benchmarks/bench_load.py
    bench = str(REPO / "benchmarks")
    if bench not in sys.path:
        sys.path.insert(0, bench)
    import bench_load
    import bench_registry

    return bench_load, bench_registry


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_search_and_push_under_load(backend: str, tmp_path: Path) -> None:
    from corpuskit import records as generated_records
    from testkit import CORPORA

    L, BR = _harness()
    # The Civitai corpus resampled when ../shared has it, else the generated catalogue (tests/corpuskit.py).
    real = (CORPORA / "civitai-lora-models-2023-07.jsonl").exists()
    records = BR.resampled_records(RECORDS) if real else generated_records(RECORDS)
    params = [L.query_params(q) for q in BR.query_mix(records, 100)]
    import hubkit as srv
    url = srv.fresh_pg_database() if backend == "postgres" else f"sqlite:///{tmp_path / 'srv-sqlite' / 'lorahub-server.sqlite'}"
    checker: dict = {}

    def forged(endpoint: str, tokens: dict[str, str], res) -> None:  # noqa: ANN001 - a LoadResult
        # Three successful pushes that did not happen as recorded: a commit that does not exist, a file at
        # a content it never had, and an extra success that the commit count must betray.
        if not res.push_ok:
            return  # nothing landed: the assertions below say so
        real = res.push_ok[0]
        fake = [
            dict(real, oid="0" * 40, path="p9/never.safetensors", seq=10_000),
            dict(real, sha256="f" * 64, seq=10_001),
            dict(real, seq=10_002),
        ]
        mine = L.LoadResult(seconds=res.seconds, searchers=0, pushers=1)
        mine.pushes = [p for p in res.pushes if p["repo"] == real["repo"]] + fake  # one repo is enough
        checker["verdict"] = L.verify(endpoint, tokens, mine)

    try:
        run = L.run_backend(backend, url, tmp_path, records, params, seconds=SECONDS, searchers=SEARCHERS,
                            pushers=PUSHERS, after=forged)
    finally:
        if backend == "postgres":
            srv.drop_pg_database(url)
    f = L.summary(run)
    res, verdict = run["result"], run["verdict"]
    detail = f"{f}\nsamples: {res.samples}\n" + "\n".join(verdict.lost + verdict.unexpected + verdict.registry_missing)
    assert f["errors"] == {}, detail
    assert f["lost"] == 0 and f["unexpected"] == 0, detail
    assert f["registry_missing"] == 0, detail
    # the load really happened: both kinds of client, both kinds of repo, with and without parentCommit
    assert f["searches"] >= 100 and f["pushes"] >= 2 * PUSHERS, detail
    assert f["shared"] >= 1 and f["with_parent"] >= 1 and f["pushes"] - f["with_parent"] >= 1, detail
    assert f["checked_files"] >= PUSHERS + 1, detail
    assert all(expected == found for expected, found in verdict.commit_counts.values()), verdict.commit_counts
    # ... and the checker sees a lost push when there is one
    forged_verdict = checker["verdict"]
    assert any("commit missing" in x for x in forged_verdict.lost), forged_verdict.lost
    assert any("f" * 64 in x for x in forged_verdict.lost), forged_verdict.lost
    assert any("commits, expected" in x for x in forged_verdict.unexpected), forged_verdict.unexpected


def _file_commit(path: str, content: bytes, parent: str | None = None) -> bytes:
    import base64
    import json

    header = {"summary": f"add {path}"} | ({"parentCommit": parent} if parent else {})
    lines = [{"key": "header", "value": header},
             {"key": "file", "value": {"path": path, "content": base64.b64encode(content).decode(), "encoding": "base64"}}]
    return b"\n".join(json.dumps(x).encode() for x in lines)


def test_commit_without_parent_survives_a_head_that_always_moves(tmp_path: Path) -> None:
    """The race behind the 409s the load benchmark found: another commit lands between every check and landing.

    A commit without parentCommit must still land, once, on top of all of them (rebuilt under the branch's
    lock); one with a parentCommit must get 409 and land nothing."""
    from sqlmodel import Session

    from lorahub.registry.database import Sessions
    from lorahub.registry.hub import repos as R
    from lorahub.registry.hub import trees
    from lorahub.registry.hub.auth import Authenticator, create_token
    from lorahub.registry.hub.blobstore import LocalBlobStore
    from lorahub.registry.hub.catalogue_sync import CatalogueSync
    from lorahub.registry.hub.commits import COMMIT_ATTEMPTS, Commits
    from lorahub.registry.hub.config import HubConfig
    from lorahub.registry.hub.errors import Conflict
    from lorahub.registry.server.run import prepare

    _, _, registry = prepare(tmp_path / "srv", None)
    try:
        with Session(registry.engine, expire_on_commit=False) as s:
            token, _, _ = create_token(s, "alice", write=True, name="t")
        sessions = Sessions(registry.engine)
        ident = Authenticator(sessions).identify(f"Bearer {token}")
        store, config = LocalBlobStore(tmp_path / "srv" / "blobs"), HubConfig()
        sync = CatalogueSync(store, config)
        svc = Commits(sessions, store, config, sync)
        R.Repos(sessions, store, sync).create(ident, repo_type="model", name="race", organization="alice", private=False)
        check, land = svc._check_content, svc._land
        state = {"landing": False, "others": 0}

        def racing_check(base, files):  # noqa: ANN001, ANN202 - another client's commit lands first, every time
            if not state["landing"] and not state.get("inner"):
                state["inner"] = True
                try:
                    svc.commit(ident, "model", "alice/race", "main", _file_commit(f"other/{state['others']}.txt", b"x%d" % state["others"]))
                finally:
                    state["inner"] = False
                state["others"] += 1
            return check(base, files)

        def flagged_land(*a, **kw):  # noqa: ANN002, ANN003, ANN202
            state["landing"] = not state.get("inner")
            try:
                return land(*a, **kw)
            finally:
                state["landing"] = False

        svc._check_content, svc._land = racing_check, flagged_land
        mine = svc.commit(ident, "model", "alice/race", "main", _file_commit("mine.txt", b"mine"))
        assert state["others"] < COMMIT_ATTEMPTS  # it did not need every optimistic retry
        with sessions.read() as s:
            repo = R.find_repo(s, "model", "alice/race")
            head = trees.resolve_revision(s, repo, "main")
            files = trees.files_of(s, head)
            history = trees.history(s, repo, head)
        assert head.oid == mine.oid
        assert {"mine.txt", *(f"other/{i}.txt" for i in range(state["others"]))} <= set(files)
        assert len(history) == 1 + state["others"] + 1  # initial + the others + mine: nothing lost, nothing twice
        stale = head.oid
        with pytest.raises(Conflict):  # a parentCommit made stale by the racing commit: 409, nothing lands
            svc.commit(ident, "model", "alice/race", "main", _file_commit("late.txt", b"late", parent=stale))
        with sessions.read() as s:
            assert "late.txt" not in trees.files_of(s, trees.resolve_revision(s, R.find_repo(s, "model", "alice/race"), "main"))
    finally:
        registry.close()
