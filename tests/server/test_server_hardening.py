"""Issue 13, the Hub API half: each test is the attack its rule stops, over real HTTP.

* YAML (``/api/validate-yaml``, README front matter in commits): an alias bomb and 5,000-deep
  nesting are refused with one line, in bounded time and memory; the server stays up.
"""

from __future__ import annotations

import re
import time

import pytest
from conftest import NDJSON, commit_body, sha256
from test_safeyaml import alias_bomb
from test_server_hostile import needs_proc, peak, reset_peak

# --------------------------------------------------------------------------- YAML (item 3)

#: A 5,000-deep flow sequence: the RecursionError (500 with a traceback) of issue 13.
DEEP = "x: " + "[" * 5000 + "]" * 5000 + "\n"


def card(front: str) -> str:
    return f"---\n{front}---\n\n# a card\n"


@needs_proc
@pytest.mark.parametrize("front", [alias_bomb(), alias_bomb(7), DEEP], ids=["bomb-9-levels", "bomb-7-levels", "deep"])
def test_hostile_yaml_is_refused_in_bounded_time_and_memory(sqlite_server, front: str) -> None:
    srv = sqlite_server
    pid = srv.proc.pid
    base = reset_peak(pid)
    started = time.monotonic()
    # anonymous: /api/validate-yaml needs no token
    r = srv.request("POST", "/api/validate-yaml", user=None, json={"content": card(front), "repoType": "model"})
    assert r.status_code == 400, r.text[:300]
    (err,) = r.json()["errors"]
    assert re.search(r"anchors|aliases|nest", err["message"]) and "\n" not in err["message"], err
    # a commit whose README carries it
    repo = "alice/yaml-" + sha256(front.encode())[:8]
    srv.api().create_repo(repo, exist_ok=True)
    head = srv.api().model_info(repo).sha
    r = srv.request("POST", f"/api/models/{repo}/commit/main", content=commit_body("README.md", card(front).encode()), headers=NDJSON)
    assert r.status_code == 400, r.text[:300]
    assert "README.md metadata" in r.json()["error"] and "\n" not in r.json()["error"]
    assert time.monotonic() - started < 10.0
    assert peak(pid) - base < 48 << 20, f"the server's peak memory grew by {(peak(pid) - base) >> 20} MiB"
    assert srv.api().model_info(repo).sha == head
    assert srv.proc.poll() is None and "Traceback" not in srv.log_text()


def test_yaml_parse_errors_are_4xx_with_one_line(sqlite_server) -> None:
    srv = sqlite_server
    for front in ("a: [1, 2\n", "a: !!python/object:os.system x\n", "a: 2024-13-45\n", "a: " + "1" * 6000 + "\n",
                  "? [a, b]\n: c\n", "a: 1\n...\nb: 2\n", "- just\n- a list\n", "2024-01-01: date key\n"):
        r = srv.request("POST", "/api/validate-yaml", user=None, json={"content": card(front)})
        if front.startswith("2024-01-01"):  # valid, and a date key does not break the JSON answer
            assert r.status_code == 200, r.text
            continue
        assert r.status_code == 400, (front[:40], r.text[:300])
        msg = r.json()["errors"][0]["message"]
        assert msg.startswith("README.md metadata") and "\n" not in msg and len(msg) < 400, msg
    repo = "alice/yaml-dates"
    srv.api().create_repo(repo, exist_ok=True)
    r = srv.request("POST", f"/api/models/{repo}/commit/main", content=commit_body("README.md", card("2024-01-01: x\nlicense: mit\n").encode()), headers=NDJSON)
    assert r.status_code == 200, r.text
    assert srv.request("GET", f"/api/models/{repo}").json()["cardData"] == {"2024-01-01": "x", "license": "mit"}
