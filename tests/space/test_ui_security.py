"""The web UI attacked as an anonymous stranger would, in both places it runs: ``lorahub serve --ui`` (the
Space mounted into the hub) and ``lorahub space`` (the standalone Space), each a real process reached over
HTTP through Gradio's own API (``/gradio_api/...``).

* File inputs take only files uploaded through the page: a ``FileData`` naming ``/etc/passwd``,
  ``/proc/self/environ``, the database, a private blob or adapter, the HF token file, a relative path or
  a URL is refused by every file-typed input, nothing is copied into Gradio's cache, and
  ``/gradio_api/file=`` serves none of it.
* The UI never opens the database itself: no Python-level ``open`` of it, and searches go through one
  engine (no new SQLite connection per search).
* Push never spends the operator's credentials (``HF_TOKEN``, the ``hf auth login`` file), talks only
  to allowed endpoints, and its errors do not tell an open port from a closed one.
* Heavy work is rate-limited per client; uploads over the cap are refused unstored.
* A bounded fuzz of the Gradio routes with hostile payloads: no server error, no traceback, no leak.
"""

from __future__ import annotations

import json
import re
from urllib.parse import quote

import pytest

pytest.importorskip("gradio")

import uikit  # noqa: E402
from uikit import FILEDATA_META, Dropper, Listener  # noqa: E402

pytestmark = [pytest.mark.slow]

RENDER_LIMIT, TRAIN_LIMIT = 3, 2
UPLOAD_CAP = 1 << 20  # LORAHUB_UI_MAX_FILE_SIZE=1M below


@pytest.fixture(scope="module", params=["serve", "space"])
def ui(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    allowed, dropper = Listener(), Dropper()
    closed = uikit.closed_port_url()
    env = {
        "LORAHUB_UI_PUSH_ENDPOINTS": ",".join([allowed.url, dropper.url, closed]),
        "LORAHUB_UI_MAX_FILE_SIZE": "1M",
        "LORAHUB_UI_RATE_LIMITS": f"render={RENDER_LIMIT}/3600,train={TRAIN_LIMIT}/3600,bake=3/3600,push=1000/60",
    }
    root = tmp_path_factory.mktemp(f"ui-{request.param}")
    start = uikit.start_serve_ui if request.param == "serve" else uikit.start_space_ui
    app = start(root, env)
    app.allowed = allowed
    app.dropper, app.closed = dropper, closed
    app.fuzz_from = None  # where the log stood when the fuzz began (Gradio logs tracebacks of malformed calls)
    try:
        yield app
    finally:
        uikit.stop(app)
        allowed.close()
        dropper.close()
    log = app.log_text()[: app.fuzz_from]
    assert "Traceback" not in log, log[-3000:]
    # stopped (SIGTERM), the process removed its private folder: uploads, work files, Gradio's cache
    assert list(app.tmp.glob("lorahub-ui-*")) == [], "the UI's private folder outlived its process"


def _fd(path: str) -> dict:
    return {"path": path, "orig_name": "x.safetensors", "meta": dict(FILEDATA_META)}


def _status(res: uikit.CallResult) -> str:
    """The page's status line of a call (its last output), or the refusal text."""
    if res.event == "complete" and isinstance(res.data, list) and res.data:
        return str(res.data[-1])
    return res.text


def test_file_inputs_take_only_files_uploaded_through_the_page(ui: uikit.UiApp) -> None:
    params = ui.file_params()
    assert {"do_inspect", "do_upload", "do_train", "do_dry", "do_push", "do_search_blend"} <= set(params), params
    uploaded = ui.upload("mine.safetensors", uikit.adapter_bytes(ui.root / "src", "mine"))
    sent_before = len(ui.allowed.requests)
    targets = [*ui.targets.values(), "../../../../../../../../../etc/passwd", "file:///etc/passwd",
               f"{ui.allowed.url}/x.safetensors", ui.targets["/etc/passwd"] + "\x00.safetensors"]
    answers = []
    for name, positions in params.items():
        for pos, multiple in positions:
            for target in targets:
                data = ui.defaults(name)
                data[pos] = [uploaded, _fd(target)] if multiple else _fd(target)
                res = ui.call(name, data)
                assert res.refused, f"{name} took {target!r}: {res.message()[:300]}"
                assert ui.leaked_in(res.text) == [], (name, target, res.text[:300])
                answers.append(res.text)
    # a second Content-Type must not steer the request past the check (Starlette reads the first)
    body = json.dumps({"data": [_fd(ui.targets["/etc/passwd"])]}).encode()
    with ui.client() as c:
        r = c.post("/gradio_api/call/do_inspect", content=body,
                   headers=[("Content-Type", "application/json"), ("Content-Type", "multipart/form-data; boundary=x")])
    assert r.status_code == 400 and ui.leaked_in(r.text) == [], r.text[:300]
    assert ui.leaks() == [], "copies of files the UI must never read"
    named = {p for text in answers for p in re.findall(r"(/[^\s\"'`*\\]+)", text) if p.startswith(str(ui.tmp))}
    with ui.client() as c:
        for path in [*targets[:-1], *named]:
            r = c.get(f"/gradio_api/file={path}")
            assert r.status_code in (403, 404), (path, r.status_code)
            assert ui.leaked_in(r.content) == [], path
    assert ui.allowed.requests[sent_before:] == [], "a file input made the UI fetch a URL"


def test_the_ui_never_opens_the_database_itself(ui: uikit.UiApp) -> None:
    before = len(ui.audit())
    for name in ("do_inspect", "do_upload"):
        data = ui.defaults(name)
        data[0] = _fd(str(ui.database))
        assert ui.call(name, data).refused
    for _ in range(20):
        res = ui.call("do_search", ["", "", "", ""])
        assert not res.refused, res.message()[:300]
    events = ui.audit()[before:]
    assert [e for e in events if e[0] == "open"] == [], "the UI process opened the database file itself"
    connects = [e for e in events if e[0] == "sqlite3.connect"]
    assert len(connects) <= 2, f"{len(connects)} new SQLite connections for 20 searches: not the server's engine"


def test_keyword_calls_are_checked_before_gradio(ui: uikit.UiApp) -> None:
    """``call/v2/<name>`` takes the parameters by name; Gradio answers 500 with a traceback in the log for a
    body that is not an object of them (found by the fuzz below: ``{}`` on ``do_inspect``)."""
    params = [p["parameter_name"] for p in ui.info()["/do_search"]["parameters"]]
    with ui.client("127.0.0.71") as c:
        for body in ({}, {"data": 5}, {"data": []}, {params[0]: "x", "nope": 1}, {p: "" for p in params[1:]}):
            r = c.post("/gradio_api/call/v2/do_search", json=body)
            assert r.status_code == 400, (body, r.status_code, r.text[:200])
            assert "Traceback" not in r.text
        r = c.post("/gradio_api/call/v2/do_inspect", json={})
        assert r.status_code == 400 and "missing parameter" in r.json()["error"], r.text[:200]
        r = c.post("/gradio_api/call/v2/do_search", json=dict.fromkeys(params, ""))
        assert r.status_code == 200 and r.json()["event_id"], r.text[:200]  # a well-formed call still runs
        assert c.get(f"/gradio_api/call/do_search/{r.json()['event_id']}").status_code == 200


def test_push_never_spends_ambient_credentials(ui: uikit.UiApp) -> None:
    src = "127.0.0.31"
    fd = ui.upload("alpha.safetensors", uikit.adapter_bytes(ui.root / "src", "alpha"), source=src)
    allowed, other = ui.allowed, Listener()
    base = len(allowed.requests)
    try:
        # an empty token box: a push is refused before any request; a dry run shows the card, sending nothing
        res = ui.call("do_push", [fd, "", "me/alpha", allowed.url, False], source=src)
        assert res.refused and "token" in _status(res).lower(), res.message()[:300]
        res = ui.call("do_dry", [fd, "", "me/alpha", allowed.url, False], source=src)
        assert not res.refused and "Dry run" in json.dumps(res.data), res.message()[:300]
        assert allowed.requests[base:] == []
        # an endpoint that is not on the list: refused before any request, with or without a token
        for fn in ("do_push", "do_dry"):
            for tok in ("", "lh_typedTokenForThisPushOnly"):
                res = ui.call(fn, [fd, tok, "me/alpha", other.url, False], source=src)
                assert res.refused, (fn, tok, res.message()[:300])
        assert other.requests == []
        # a typed token goes to an allowed endpoint, and only that token
        res = ui.call("do_push", [fd, "lh_typedTokenForThisPushOnly", "me/alpha", allowed.url, False], source=src)
        assert res.refused  # the listener answers 401
        sent = allowed.requests[base:]
        assert sent, "the push never reached the allowed endpoint"
        assert {r["headers"].get("authorization", "") for r in sent} == {"Bearer lh_typedTokenForThisPushOnly"}
        assert "lh_typedTokenForThisPushOnly" not in res.text
    finally:
        other.close()
    for lst in (allowed, other):
        for r in lst.requests:
            assert uikit.AMBIENT_ENV_TOKEN not in json.dumps(r) and uikit.AMBIENT_FILE_TOKEN not in json.dumps(r)


def test_push_errors_do_not_tell_open_ports_from_closed(ui: uikit.UiApp) -> None:
    src = "127.0.0.32"
    fd = ui.upload("beta.safetensors", uikit.adapter_bytes(ui.root / "src", "beta"), source=src)
    tok = "lh_typedTokenForThisPushOnly"

    def line(url: str) -> str:
        res = ui.call("do_push", [fd, tok, "me/beta", url, False], source=src)
        assert res.refused, res.message()[:300]
        return _status(res).replace(url, "<endpoint>")

    # allowed endpoints: a closed port and an open one that drops the connection read the same
    closed, dropped = line(ui.closed), line(ui.dropper.url)
    assert closed == dropped, (closed, dropped)
    assert not re.search(r"errno|refused|reset|timed? ?out|closed|disconnect", closed, re.I), closed
    # endpoints not on the list: an open and a closed port read the same, and nothing is sent
    listener = Listener()
    try:
        assert line(listener.url) == line(uikit.closed_port_url())
        assert listener.requests == []
    finally:
        listener.close()


def test_heavy_work_is_rate_limited_per_client(ui: uikit.UiApp) -> None:
    a, b = "127.0.0.41", "127.0.0.42"
    gen = ui.defaults("do_generate")
    gen[0] = ""  # no prompt: refused in one line, after the rate check, before any rendering
    lines = [_status(ui.call("do_generate", gen, source=a)) for _ in range(RENDER_LIMIT + 1)]
    assert all("prompt" in s for s in lines[:RENDER_LIMIT]), lines
    assert "too many" in lines[-1].lower(), lines
    assert "prompt" in _status(ui.call("do_generate", gen, source=b)), "another client was limited too"
    train = ui.defaults("do_train")
    lines = [_status(ui.call("do_train", train, source=a)) for _ in range(TRAIN_LIMIT + 1)]
    assert all("upload" in s for s in lines[:TRAIN_LIMIT]), lines
    assert "too many" in lines[-1].lower(), lines


def test_uploads_over_the_cap_are_refused_unstored(ui: uikit.UiApp) -> None:
    big = b"\x01" * UPLOAD_CAP + b"\x02"
    with ui.client("127.0.0.51") as c:
        r = c.post("/gradio_api/upload", files={"files": ("big.bin", big)})
        assert r.status_code == 413, r.text[:300]
        assert c.post("/gradio_api/upload", files={"files": ("small.bin", b"\x01" * 1000)}).status_code == 200
    stored = [p for p in ui.tmp.rglob("*") if p.is_file() and p.stat().st_size >= UPLOAD_CAP]
    assert stored == []


# --------------------------------------------------------------------------- fuzz

#: Gradio's routes besides the calls (a random suffix is appended to the GET ones).
GET_ROUTES = ["/gradio_api/call/do_search/", "/gradio_api/queue/data?session_hash=", "/gradio_api/heartbeat/",
              "/gradio_api/upload_progress?upload_id=", "/gradio_api/file/", "/gradio_api/proxy=http://127.0.0.1/",
              "/gradio_api/stream/x/0/", "/gradio_api/deep_link?deep_link=", "/gradio_api/info?x=", "/config?x=",
              "/gradio_api/startup-events?x=", "/theme.css?x=", "/static/", "/assets/", "/gradio_api/openapi.json?x="]
POST_ROUTES = ["/gradio_api/component_server", "/gradio_api/cancel", "/gradio_api/reset", "/gradio_api/process_recording",
               "/gradio_api/stream/x/close", "/gradio_api/run/do_search", "/gradio_api/api/do_inspect",
               "/gradio_api/call/v2/do_inspect", "/gradio_api/call/v2/nope", "/gradio_api/vibe-edit", "/login"]


def test_fuzz_gradio_api_with_hostile_payloads(ui: uikit.UiApp) -> None:
    """Random hostile calls of every named endpoint and of Gradio's raw routes: never a 5xx, never a
    traceback in an answer, never a file the UI must not read (in an answer or copied under TMPDIR)."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    names = sorted(n.lstrip("/") for n in ui.info())
    paths = st.sampled_from([*ui.targets.values(), "../../../../../../etc/shadow", "/proc/self/cmdline",
                             "/proc/1/environ", "/dev/zero", "/dev/fd/0", ".", "", "~/.ssh/id_rsa", "C:\\Windows\\win.ini",
                             "file:///etc/passwd", "http://169.254.169.254/latest/meta-data/", ui.allowed.url + "/f",
                             "/etc/passwd\x00.png", "%2e%2e/%2e%2e/etc/passwd", "a" * 5000, str(ui.tmp),
                             str(ui.tmp / ".." / "hf-home" / "token")])
    filedata = st.fixed_dictionaries(
        {"path": paths, "meta": st.just(dict(FILEDATA_META))},
        optional={"url": paths, "orig_name": st.text(max_size=40), "is_stream": st.booleans(), "size": st.integers()},
    )
    scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
                        st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=200), st.just("\x00" * 10))
    values = st.recursive(st.one_of(scalars, filedata),
                          lambda kids: st.one_of(st.lists(kids, max_size=4), st.dictionaries(st.text(max_size=10), kids, max_size=4)),
                          max_leaves=12)
    call = st.tuples(st.just("call"), st.sampled_from([*names, "nope", "../info"]), st.lists(values, max_size=12))
    raw = st.one_of(
        st.tuples(st.just("file"), paths, st.none()),
        st.tuples(st.just("join"), st.integers(-5, 40), st.lists(values, max_size=12)),
        st.tuples(st.just("upload"), st.sampled_from(["../../x.safetensors", "a\x00b", "..", "x" * 300, "/etc/passwd"]), st.none()),
        st.tuples(st.just("body"), st.sampled_from([b"", b"{", b"[]", b'{"data": 5}', b"\xff\xfe", b"[" * 5000, b'{"data": [' * 3000]), st.none()),
        st.tuples(st.just("get"), st.sampled_from(GET_ROUTES), st.text(max_size=40)),
        st.tuples(st.just("post"), st.sampled_from(POST_ROUTES), values),
    )
    seen: list[str] = []
    ui.fuzz_from = len(ui.log_text())
    # The fuzzing client spends its share of the heavy work first: random calls must not render or train
    # for minutes on a 2-core machine (the handlers check the share before anything heavy).
    fuzzer = "127.0.0.61"
    for name, limit, data in (("do_generate", RENDER_LIMIT, [""]), ("do_train", TRAIN_LIMIT, []), ("do_bake", 3, [])):
        values_ = ui.defaults(name)
        values_[: len(data)] = data
        for _ in range(limit):
            ui.call(name, values_, source=fuzzer)
        assert "too many" in _status(ui.call(name, values_, source=fuzzer)).lower()
    sent_before = len(ui.allowed.requests)

    @settings(max_examples=int(__import__("os").environ.get("LORAHUB_UI_FUZZ_EXAMPLES", "150")), deadline=None,
              derandomize=True, suppress_health_check=list(HealthCheck), database=None)
    @given(st.one_of(call, raw))
    def one(case: tuple) -> None:
        kind, a, b = case
        with ui.client(fuzzer) as c:
            if kind == "call":
                res = ui.call(a, b, source=fuzzer, timeout=60)
                status, body = res.status, res.text
            elif kind == "file":
                r = c.get("/gradio_api/file=" + quote(a, safe="/:%=~"))
                status, body = r.status_code, r.text
            elif kind == "join":
                r = c.post("/gradio_api/queue/join", json={"data": b, "fn_index": a, "session_hash": "fuzz", "trigger_id": 1})
                status, body = r.status_code, r.text
            elif kind == "upload":
                r = c.post("/gradio_api/upload", files={"files": (a, b"\x01" * 64)})
                status, body = r.status_code, r.text
            elif kind == "body":
                r = c.post(f"/gradio_api/call/{names[0]}", content=a, headers={"Content-Type": "application/json"})
                status, body = r.status_code, r.text
            elif kind == "get":  # may be an event stream that stays open: its head and first bytes
                import httpx

                chunks = []
                with c.stream("GET", a + quote(b, safe=""), timeout=httpx.Timeout(30, read=5)) as r:
                    status = r.status_code
                    try:
                        for chunk in r.iter_bytes():
                            chunks.append(chunk)
                            if sum(map(len, chunks)) > 65536:
                                break
                    except httpx.ReadTimeout:
                        pass
                body = b"".join(chunks).decode(errors="replace")
            else:
                r = c.post(a, json=b)
                status, body = r.status_code, r.text
        seen.append(kind)
        assert status < 500, (case, status, body[:300])
        assert "Traceback" not in body, (case, body[:300])
        assert ui.leaked_in(body) == [], (case, body[:300])

    one()
    assert {"call", "file", "join", "upload", "body", "get", "post"} <= set(seen)
    assert ui.leaks() == [], "copies of files the UI must never read"
    assert ui.allowed.requests[sent_before:] == [], "the UI sent requests during the fuzz"
