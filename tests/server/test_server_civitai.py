"""The Civitai-compatible read API of ``lorahub serve`` (issue 21, second part), on SQLite and PostgreSQL.

* the answers against the request/response examples of Civitai's documentation (embedded below, with
  their URLs): every documented field is there, with the documented JSON type;
* every hash type, batches, ids that stay (a card edit) and change (an adapter edit), never reused;
* search: query, types, tag, username, baseModels, sort, nsfw, cursor and page paging;
* the attacks: private repos seen by strangers (every route), oversized batches, bogus cursors, hashes
  and ids, SQL-ish input, a bad token;
* a published Civitai client from PyPI (``civitapy``, its own code unchanged, ``base_url`` set) against a
  real ``lorahub serve``: lookups, its pydantic models, cursor pagination and a verified download.
"""

from __future__ import annotations

import asyncio
import hashlib
import json

import pytest
from hubkit import NDJSON, commit_body, write_kohya_lora

# https://developer.civitai.com/site/reference/model-versions ("Get a model version", response; the
# `files` entry shown separately there as "Each entry in files[]"; values as documented).
DOC_VERSION = json.loads("""
{
  "id": 2514310, "modelId": 827184, "name": "v16.0", "description": null, "baseModel": "Illustrious",
  "baseModelType": "Standard", "air": "urn:air:sdxl:checkpoint:civitai:827184@2514310", "status": "Published",
  "availability": "Public", "nsfwLevel": 3, "createdAt": "2025-12-18T08:55:00.000Z",
  "updatedAt": "2025-12-18T09:16:12.062Z", "publishedAt": "2025-12-18T09:16:12.062Z", "uploadType": "Created",
  "trainedWords": [], "stats": {"downloadCount": 215627, "thumbsUpCount": 13828},
  "model": {"name": "WAI-illustrious-SDXL", "type": "Checkpoint", "nsfw": false, "poi": false},
  "files": [{
    "id": 2402203, "name": "waiIllustriousSDXL_v160.safetensors", "type": "Model", "sizeKB": 6775430.35,
    "metadata": {"format": "SafeTensor", "size": "pruned", "fp": "fp16"},
    "pickleScanResult": "Success", "virusScanResult": "Success",
    "hashes": {"AutoV1": "4748A7F6", "AutoV2": "A5F58EB1C3", "SHA256": "A5F58EB1C33616", "CRC32": "DAEE95B7",
               "BLAKE3": "1A411D9B", "AutoV3": "22D8CB95B807"},
    "downloadUrl": "https://civitai.com/api/download/models/2514310", "primary": true
  }],
  "images": [], "downloadUrl": "https://civitai.com/api/download/models/2514310"
}
""")
# A model item of "List models", https://developer.civitai.com/site/reference/models (its example begins
# {"id": 827184, "name": "WAI-illustrious-SDXL", "description": "<p>...</p>", "type": "Checkpoint", ...}), with the
# fields of "GET /api/v1/models" in Civitai's REST API reference, https://civitai.com/github/wiki/REST-API-Reference
# (values of its LoRA example); and the cursor metadata of https://developer.civitai.com/site/guide/pagination.
DOC_MODEL_ITEM = json.loads("""
{
  "id": 58390, "name": "Detail Tweaker LoRA", "description": "...", "type": "LORA", "poi": false, "nsfw": false,
  "allowNoCredit": true, "allowCommercialUse": "None", "allowDerivatives": true, "allowDifferentLicense": true,
  "stats": {"downloadCount": 129209, "favoriteCount": 12264, "commentCount": 10, "ratingCount": 279, "rating": 4.96},
  "creator": {"username": "CyberAIchemist", "image": null},
  "tags": ["concept"],
  "modelVersions": [{"id": 62833, "name": "v1.0", "createdAt": "2023-05-05T06:46:05.656Z", "baseModel": "SD 1.5",
                     "trainedWords": [], "downloadUrl": "https://civitai.com/api/download/models/62833",
                     "files": [], "images": []}]
}
""")
DOC_CURSOR_METADATA = {"nextCursor": "75363|932023|257749", "nextPage": "https://civitai.com/api/v1/models?limit=100&cursor=..."}


def same_shape(doc: object, ours: object, where: str = "") -> list[str]:
    """Where ``ours`` misses a documented key or has another JSON type (a documented null allows any)."""
    if doc is None:
        return []
    if isinstance(doc, dict):
        if not isinstance(ours, dict):
            return [f"{where}: not an object"]
        out = []
        for k, v in doc.items():
            if k not in ours:
                out.append(f"{where}.{k}: missing")
            else:
                out += same_shape(v, ours[k], f"{where}.{k}")
        return out
    if isinstance(doc, list):
        if not isinstance(ours, list):
            return [f"{where}: not an array"]
        return [p for item in ours for p in same_shape(doc[0], item, where + "[]")] if doc else []
    if isinstance(doc, bool):
        return [] if isinstance(ours, bool) else [f"{where}: {ours!r} is not a boolean"]
    if isinstance(doc, (int, float)):
        return [] if isinstance(ours, (int, float)) and not isinstance(ours, bool) else [f"{where}: {ours!r} is not a number"]
    return [] if isinstance(ours, type(doc)) else [f"{where}: {ours!r} is not a {type(doc).__name__}"]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


CARD = b"---\nlicense: mit\nbase_model: stable-diffusion-v1-5/stable-diffusion-v1-5\ntags: [anime, style]\ninstance_prompt: sks style\n---\n# A style\n"


@pytest.fixture(scope="module")
def civ(local_hub, tmp_path_factory):  # noqa: ANN001, ANN201
    """alice/pub (public, card), alice/secret (private), bob/other (public), alice/spicy (public, marked
    not-for-all-audiences), alice/pair (two adapters)."""
    d = tmp_path_factory.mktemp("civ-loras")
    files = {name: write_kohya_lora(d / f"{name}.safetensors", seed=i, title=name, trigger=f"{name}word").read_bytes()
             for i, name in enumerate(("pub", "secret", "other", "pair_a", "pair_b", "spicy"))}
    local_hub.create_repo("alice/pub")
    local_hub.upload("alice/pub", "pub.safetensors", files["pub"])
    r = local_hub.request("POST", "/api/models/alice/pub/commit/main", content=commit_body("README.md", CARD, summary="card"),
                          headers=NDJSON)
    assert r.status_code == 200, r.text
    local_hub.create_repo("alice/secret", private=True)
    local_hub.upload("alice/secret", "secret.safetensors", files["secret"])
    local_hub.create_repo("bob/other", user="bob")
    local_hub.upload("bob/other", "other.safetensors", files["other"], user="bob")
    local_hub.create_repo("alice/spicy")
    local_hub.upload("alice/spicy", "spicy.safetensors", files["spicy"])
    r = local_hub.request("POST", "/api/models/alice/spicy/commit/main", headers=NDJSON,
                          content=commit_body("README.md", b"---\ntags: [not-for-all-audiences]\n---\n", summary="card"))
    assert r.status_code == 200, r.text
    local_hub.create_repo("alice/pair")
    local_hub.upload("alice/pair", "a.safetensors", files["pair_a"])
    local_hub.upload("alice/pair", "b.safetensors", files["pair_b"])
    return local_hub, files


def get(hub, path: str, user: str | None = None, **kw):  # noqa: ANN001, ANN201
    return hub.request("GET", path, user=user, **kw)


def by_hash(hub, h: str, user: str | None = None):  # noqa: ANN001, ANN201
    return get(hub, f"/api/v1/model-versions/by-hash/{h}", user)


def test_documented_shapes(civ) -> None:  # noqa: ANN001
    hub, files = civ
    r = by_hash(hub, sha(files["pub"]))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    version = r.json()
    doc = json.loads(json.dumps(DOC_VERSION))
    del doc["files"][0]["hashes"]["AutoV1"]  # these test files are under 1 MiB: no AutoV1 (as on Civitai)
    assert same_shape(doc, version) == []
    assert version["model"] == {"name": "pub", "type": "LORA", "nsfw": False, "poi": False, "minor": False}
    assert version["baseModel"] == "SD 1.5" and version["trainedWords"][:1] == ["sks style"]
    assert version["air"] == f"urn:air:sd1:lora:civitai:{version['modelId']}@{version['id']}"
    (f,) = version["files"]
    assert f["hashes"]["SHA256"] == sha(files["pub"]).upper() and f["primary"] is True
    assert f["sizeKB"] * 1024 == len(files["pub"]) and f["name"] == "pub.safetensors"
    # no AutoV1 for a file under 1 MiB (its window is empty: e3b0c442 for every such file), as on Civitai
    assert set(f["hashes"]) == {"AutoV2", "AutoV3", "SHA256", "CRC32", "BLAKE3"}
    assert by_hash(hub, "E3B0C442").status_code == 404
    assert version["downloadUrl"].endswith(f"/api/download/models/{version['id']}")
    assert get(hub, f"/api/v1/model-versions/{version['id']}").json() == version
    model = get(hub, f"/api/v1/models/{version['modelId']}").json()
    assert same_shape(DOC_MODEL_ITEM, model) == []
    assert model["creator"]["username"] == "alice" and model["tags"] == ["anime", "style"]
    assert model["allowCommercialUse"] == "Sell" and model["license"] == "mit"
    assert [v["id"] for v in model["modelVersions"]] == [version["id"]]
    page = get(hub, "/api/v1/models?limit=1").json()
    assert set(page) == {"items", "metadata"} and len(page["items"]) == 1
    assert same_shape(DOC_CURSOR_METADATA, page["metadata"]) == []


def test_every_hash_type_finds_the_version(civ) -> None:  # noqa: ANN001
    hub, files = civ
    version = by_hash(hub, sha(files["pub"])).json()
    hashes = version["files"][0]["hashes"]
    for name in ("SHA256", "AutoV2", "AutoV3", "CRC32", "BLAKE3"):
        for h in (hashes[name], hashes[name].lower()):
            r = by_hash(hub, h)
            assert r.status_code == 200 and r.json()["id"] == version["id"], (name, r.text)
    crc = hashes["CRC32"]
    little_endian = "".join(reversed([crc[i:i + 2] for i in range(0, 8, 2)]))  # Civitai's scanner's spelling
    assert by_hash(hub, little_endian).json()["id"] == version["id"]
    # a prefix is not a hash (Civitai matches whole hashes only)
    assert by_hash(hub, hashes["SHA256"][:16]).status_code == 400
    miss = by_hash(hub, "0" * 64)
    assert miss.status_code == 404 and miss.json() == {"error": "Model not found"}


def test_batch(civ) -> None:  # noqa: ANN001
    hub, files = civ
    hashes = [sha(files[n]) for n in ("pub", "other", "secret")]
    r = hub.request("POST", "/api/v1/model-versions/by-hash", user=None, json=hashes + ["f" * 64])
    assert r.status_code == 200
    assert sorted(v["model"]["name"] for v in r.json()) == ["other", "pub"]  # the private one is not shown
    mine = hub.request("POST", "/api/v1/model-versions/by-hash", user="alice", json=hashes)
    assert sorted(v["model"]["name"] for v in mine.json()) == ["other", "pub", "secret"]
    pair = hub.request("POST", "/api/v1/model-versions/by-hash", user=None, json=[sha(files["pair_a"]), sha(files["pair_b"])])
    (v,) = pair.json()  # one version holding both files
    assert sorted(f["name"] for f in v["files"]) == ["a.safetensors", "b.safetensors"]
    assert hub.request("POST", "/api/v1/model-versions/by-hash", user=None, json=["0" * 64] * 100).status_code == 200


@pytest.mark.parametrize(
    "body, status",
    [
        (["0" * 64] * 101, 400),  # more than 100
        ({"hashes": ["0" * 64]}, 400),  # not an array
        ([1, 2], 400),
        (["' OR 1=1 --"], 400),
        (["0" * 65], 400),
    ],
)
def test_batch_attacks(civ, body, status) -> None:  # noqa: ANN001
    hub, _ = civ
    r = hub.request("POST", "/api/v1/model-versions/by-hash", user=None, json=body)
    assert r.status_code == status and "error" in r.json()


def test_batch_body_bounded(civ) -> None:  # noqa: ANN001
    hub, _ = civ
    big = json.dumps(["0" * 64] * 5000).encode()
    r = hub.request("POST", "/api/v1/model-versions/by-hash", user=None, content=big, headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    r = hub.request("POST", "/api/v1/model-versions/by-hash", user=None, content=b"[" * 10000, headers={"Content-Type": "application/json"})
    assert r.status_code in (400, 413)


@pytest.mark.parametrize("h", ["xyz", "12345", "0" * 63, "g" * 64, "%27%20OR%201%3D1--", "1;DROP TABLE adapters"])
def test_bad_hashes(civ, h) -> None:  # noqa: ANN001
    hub, _ = civ
    r = by_hash(hub, h)
    assert r.status_code == 400 and "error" in r.json()


@pytest.mark.parametrize("raw", ["abc", "-1", "1.5", "0x10", "9" * 40, "１２"])
def test_bad_ids(civ, raw) -> None:  # noqa: ANN001
    hub, _ = civ
    for route in ("/api/v1/models/", "/api/v1/model-versions/", "/api/download/models/"):
        r = get(hub, route + raw)
        assert r.status_code == 400, (route, raw, r.text)
    assert get(hub, "/api/v1/models/0").status_code == 404
    assert get(hub, "/api/v1/models/999999999999").status_code == 404


def test_private_repos_never_leak(civ) -> None:  # noqa: ANN001
    hub, files = civ
    secret = by_hash(hub, sha(files["secret"]), "alice").json()
    vid, mid = secret["id"], secret["modelId"]
    assert secret["availability"] == "Private"
    for user in (None, "bob"):
        assert by_hash(hub, sha(files["secret"]), user).status_code == 404
        for h in secret["files"][0]["hashes"].values():
            assert by_hash(hub, h, user).status_code in (404,), h
        assert get(hub, f"/api/v1/models/{mid}", user).status_code == 404
        assert get(hub, f"/api/v1/model-versions/{vid}", user).status_code == 404
        assert get(hub, f"/api/download/models/{vid}", user).status_code == 404
        names = set()
        cursor = None
        while True:
            page = get(hub, "/api/v1/models?limit=2" + (f"&cursor={cursor}" if cursor else ""), user).json()
            names |= {i["name"] for i in page["items"]}
            cursor = page["metadata"].get("nextCursor")
            if not cursor:
                break
        assert "secret" not in names and {"pub", "other"} <= names
        assert get(hub, "/api/v1/models?query=secret", user).json()["items"] == []
        assert get(hub, "/api/v1/models?username=alice", user).json()["items"] != []
        assert "secret" not in {i["name"] for i in get(hub, "/api/v1/models?username=alice", user).json()["items"]}
    # the owner (and a read-only token of hers) sees it everywhere
    for user in ("alice", "alice_ro"):
        assert get(hub, f"/api/v1/models/{mid}", user).status_code == 200
        assert get(hub, f"/api/download/models/{vid}", user).content == files["secret"]
        assert [i["name"] for i in get(hub, "/api/v1/models?query=secret", user).json()["items"]] == ["secret"]
    bad = get(hub, f"/api/v1/models/{mid}", headers={"Authorization": "Bearer lh_nope"})
    assert bad.status_code == 401


def test_download(civ) -> None:  # noqa: ANN001
    hub, files = civ
    v = by_hash(hub, sha(files["pair_a"])).json()
    r = get(hub, f"/api/download/models/{v['id']}")
    assert r.status_code == 200 and r.content == files["pair_a"]
    assert "a.safetensors" in r.headers["content-disposition"]
    second = next(f for f in v["files"] if not f["primary"])
    r = get(hub, second["downloadUrl"].split("127.0.0.1", 1)[-1].split("testserver", 1)[-1])
    assert r.status_code == 200 and sha(r.content) == second["hashes"]["SHA256"].lower()
    part = get(hub, f"/api/download/models/{v['id']}", headers={"Range": "bytes=0-7"})
    assert part.status_code == 206 and part.content == files["pair_a"][:8]
    assert get(hub, f"/api/download/models/{v['id']}?fileId=12345").status_code == 404
    assert get(hub, f"/api/download/models/{v['id']}?fileId=abc").status_code == 400


def test_search(civ) -> None:  # noqa: ANN001
    hub, _ = civ

    def names(query: str, user: str | None = None) -> list[str]:
        r = get(hub, "/api/v1/models?" + query, user)
        assert r.status_code == 200, r.text
        return [i["name"] for i in r.json()["items"]]

    assert names("query=pub") == ["pub"]
    assert names("tag=anime") == ["pub"]
    assert sorted(names("username=bob")) == ["other"]
    assert sorted(names("types=LORA")) == ["other", "pair_a", "pub"]
    assert names("types=Checkpoint") == []
    assert sorted(names("baseModels=SD%201.5")) == ["other", "pair_a", "pub"]
    assert names("baseModels=SDXL%201.0") == [] and names("baseModels=Pony,Illustrious") == []
    # the Hub's adult-content tag (not-for-all-audiences) is Civitai's nsfw: hidden unless nsfw=true
    assert sorted(names("nsfw=false")) == ["other", "pair_a", "pub"]
    assert sorted(names("nsfw=true")) == ["other", "pair_a", "pub", "spicy"]
    spicy = by_hash(hub, sha(civ[1]["spicy"])).json()  # a hash lookup finds it whatever the setting
    assert spicy["model"]["nsfw"] is True and spicy["nsfwLevel"] > 1
    newest = names("sort=Newest")
    assert newest[0] == "pair_a" and set(newest) == {"other", "pair_a", "pub"}
    assert sorted(names("sort=Most%20Downloaded")) == ["other", "pair_a", "pub"]
    # cursor paging walks everything once
    seen, cursor = [], None
    for _ in range(10):
        r = get(hub, "/api/v1/models?limit=1&sort=Newest" + (f"&cursor={cursor}" if cursor else "")).json()
        seen += [i["name"] for i in r["items"]]
        cursor = r["metadata"].get("nextCursor")
        if cursor is None:
            break
        assert r["metadata"]["nextPage"].endswith(f"cursor={cursor}")
    assert seen == newest
    # page paging
    p1 = get(hub, "/api/v1/models?limit=2&page=1&sort=Newest").json()
    assert [i["name"] for i in p1["items"]] == newest[:2] and p1["metadata"]["currentPage"] == 1
    # its nextPage goes on where it stopped (by page, or by cursor when a filtered row made the page short)
    rest = get(hub, "/api/v1/models?" + p1["metadata"]["nextPage"].split("?", 1)[1]).json()
    assert [i["name"] for i in rest["items"]] == newest[2:4]
    p2 = get(hub, "/api/v1/models?limit=1&page=2&sort=Most%20Downloaded&types=LORA").json()
    assert p2["metadata"]["currentPage"] == 2 and len(p2["items"]) == 1


@pytest.mark.parametrize(
    "query",
    ["cursor=abc", "cursor=-1", "cursor=99999999", "cursor=1%7C2%7C3", "cursor=" + "9" * 13, "limit=0", "limit=101",
     "limit=x", "page=0", "page=1&cursor=2", "query=x&page=2", "sort=Best", "nsfw=maybe", "query=" + "a" * 201,
     "tag=" + "&tag=".join(["x"] * 21)],
)
def test_search_attacks(civ, query) -> None:  # noqa: ANN001
    hub, _ = civ
    r = get(hub, "/api/v1/models?" + query)
    assert r.status_code == 400 and "error" in r.json(), r.text


def test_sql_ish_input_is_text(civ) -> None:  # noqa: ANN001
    hub, _ = civ
    for q in ("'; DROP TABLE adapters; --", "%' OR '1'='1", "\" OR 1=1 --", "zz') UNION SELECT * FROM tokens --"):
        for param in ("query", "tag", "username", "baseModels", "types"):
            r = get(hub, "/api/v1/models", params={param: q})
            assert r.status_code == 200 and r.json()["items"] == [], (param, q, r.text)
    assert get(hub, "/api/v1/models?query=pub").json()["items"]  # the tables are still there


def test_ids_stable_and_never_reused(civ) -> None:  # noqa: ANN001
    hub, files = civ
    before = by_hash(hub, sha(files["other"])).json()
    # a card edit keeps the version
    r = hub.request("POST", "/api/models/bob/other/commit/main", user="bob",
                    content=commit_body("README.md", b"---\nlicense: mit\n---\nnew card\n", summary="card"), headers=NDJSON)
    assert r.status_code == 200
    after = by_hash(hub, sha(files["other"])).json()
    assert after["id"] == before["id"] and after["modelId"] == before["modelId"]
    # a new adapter makes a new version; the old one stays (with its one file), the model stays
    extra = write_kohya_lora(hub.data / "extra.safetensors", seed=9, title="extra").read_bytes()
    hub.upload("bob/other", "extra.safetensors", extra, user="bob")
    new = by_hash(hub, sha(extra)).json()
    assert new["modelId"] == before["modelId"] and new["id"] != before["id"]
    old_version = get(hub, f"/api/v1/model-versions/{before['id']}").json()
    assert [f["hashes"]["SHA256"] for f in old_version["files"]] == [sha(files["other"]).upper()]
    assert by_hash(hub, sha(files["other"])).json()["id"] == new["id"]  # the newest version holding it
    # a deleted repo's ids are never handed out again, even to the next repo (the newest rows on SQLite)
    hub.create_repo("alice/gone")
    gone = write_kohya_lora(hub.data / "gone.safetensors", seed=10, title="gone").read_bytes()
    hub.upload("alice/gone", "gone.safetensors", gone)
    old = by_hash(hub, sha(gone)).json()
    assert hub.request("DELETE", "/api/repos/delete", json={"name": "gone", "organization": "alice", "type": "model"}).status_code == 200
    assert get(hub, f"/api/v1/models/{old['modelId']}").status_code == 404
    hub.create_repo("alice/next")
    hub.upload("alice/next", "gone.safetensors", gone)
    reborn = by_hash(hub, sha(gone)).json()
    assert reborn["modelId"] != old["modelId"] and reborn["id"] != old["id"]
    assert get(hub, f"/api/v1/model-versions/{old['id']}").status_code == 404
    assert hub.request("DELETE", "/api/repos/delete", json={"name": "next", "organization": "alice", "type": "model"}).status_code == 200


def test_superseded_versions_stay(civ) -> None:  # noqa: ANN001
    """An adapter pushed, then changed, then a card-only commit: two versions, newest first, ids stable; the
    old id still answers with the old file (by id, by hash, download), and privacy holds for old ones too."""
    hub, _ = civ
    v1 = write_kohya_lora(hub.data / "evolve1.safetensors", seed=11, title="evolve").read_bytes()
    v2 = write_kohya_lora(hub.data / "evolve2.safetensors", seed=12, title="evolve").read_bytes()
    hub.create_repo("alice/evolve")
    hub.upload("alice/evolve", "style.safetensors", v1)
    first = by_hash(hub, sha(v1)).json()
    hub.upload("alice/evolve", "style.safetensors", v2)
    second = by_hash(hub, sha(v2)).json()
    r = hub.request("POST", "/api/models/alice/evolve/commit/main", content=commit_body("README.md", CARD, summary="card"),
                    headers=NDJSON)
    assert r.status_code == 200, r.text
    assert second["id"] != first["id"] and second["modelId"] == first["modelId"]
    model = get(hub, f"/api/v1/models/{first['modelId']}").json()
    assert [v["id"] for v in model["modelVersions"]] == [second["id"], first["id"]]  # newest first
    assert [v["files"][0]["hashes"]["SHA256"] for v in model["modelVersions"]] == [sha(v2).upper(), sha(v1).upper()]
    # the ids did not move with the card commit, and each answers with its own file
    assert by_hash(hub, sha(v2)).json()["id"] == second["id"]
    old = by_hash(hub, sha(v1)).json()  # only the old version holds it
    assert old["id"] == first["id"] and old["modelId"] == first["modelId"]
    (f,) = old["files"]
    assert f["hashes"] == {"SHA256": sha(v1).upper(), "AutoV2": sha(v1)[:10].upper()} and f["name"] == "style.safetensors"
    assert f["id"] == first["files"][0]["id"] and f["sizeKB"] == len(v1) / 1024
    assert get(hub, f"/api/v1/model-versions/{first['id']}").json() == old
    batch = hub.request("POST", "/api/v1/model-versions/by-hash", user=None, json=[sha(v1), sha(v2)]).json()
    assert [v["id"] for v in batch] == [first["id"], second["id"]]
    got = get(hub, f"/api/download/models/{first['id']}")
    assert got.status_code == 200 and got.content == v1
    got = get(hub, f"/api/download/models/{first['id']}?fileId={f['id']}")
    assert got.status_code == 200 and got.content == v1
    assert get(hub, f"/api/download/models/{second['id']}").content == v2
    assert get(hub, f"/api/download/models/{first['id']}?fileId={second['files'][0]['id']}").status_code == 404
    # a private repo's old versions: only to those who may read it
    hub.create_repo("alice/evolve-secret", private=True)
    s1 = write_kohya_lora(hub.data / "es1.safetensors", seed=13, title="es").read_bytes()
    s2 = write_kohya_lora(hub.data / "es2.safetensors", seed=14, title="es").read_bytes()
    hub.upload("alice/evolve-secret", "es.safetensors", s1)
    hub.upload("alice/evolve-secret", "es.safetensors", s2)
    mine = by_hash(hub, sha(s1), "alice")
    assert mine.status_code == 200 and mine.json()["files"][0]["hashes"]["SHA256"] == sha(s1).upper()
    assert by_hash(hub, sha(s1)).status_code == 404 and by_hash(hub, sha(s1), "bob").status_code == 404
    assert hub.request("POST", "/api/v1/model-versions/by-hash", user=None, json=[sha(s1)]).json() == []
    for user in (None, "bob"):
        assert get(hub, f"/api/v1/model-versions/{mine.json()['id']}", user).status_code == 404
        assert get(hub, f"/api/download/models/{mine.json()['id']}", user).status_code == 404
    assert get(hub, f"/api/download/models/{mine.json()['id']}", "alice").content == s1
    for name in ("evolve", "evolve-secret"):
        assert hub.request("DELETE", "/api/repos/delete", json={"name": name, "organization": "alice", "type": "model"}).status_code == 200
    assert get(hub, f"/api/v1/model-versions/{first['id']}").status_code == 404


# -- a published Civitai client, against a real server ---------------------------------------------------


@pytest.fixture(scope="module")
def civ_server(hub_server, tmp_path_factory):  # noqa: ANN001, ANN201
    d = tmp_path_factory.mktemp("civ-client")
    lora = write_kohya_lora(d / "clientstyle.safetensors", seed=21, title="clientstyle")
    api = hub_server.api("alice")
    api.create_repo("alice/clientstyle")
    api.upload_file(path_or_fileobj=str(lora), path_in_repo="clientstyle.safetensors", repo_id="alice/clientstyle")
    api.upload_file(path_or_fileobj=CARD, path_in_repo="README.md", repo_id="alice/clientstyle")
    api.create_repo("alice/clienthidden", private=True)
    hidden = write_kohya_lora(d / "hidden.safetensors", seed=22, title="hidden")
    api.upload_file(path_or_fileobj=str(hidden), path_in_repo="hidden.safetensors", repo_id="alice/clienthidden")
    return hub_server, lora.read_bytes(), hidden.read_bytes()


def test_civitapy_client(civ_server, tmp_path) -> None:  # noqa: ANN001
    civitapy = pytest.importorskip("civitapy")
    from civitapy.models import Model, ModelVersion

    server, lora, hidden = civ_server
    client = civitapy.CivitAIClient(base_url=server.url + "/api/v1", token="", download_dir=str(tmp_path), retry_count=1)
    found = client.model_versions_by_hash(sha(lora).upper())
    version = ModelVersion(**found)
    assert version.base_model == "SD 1.5" and version.files[0].hashes["SHA256"] == sha(lora).upper()
    assert client.model_versions_by_hash(sha(hidden)) is None  # private: not to anonymous callers
    bulk = client.model_versions_by_hash_bulk([sha(lora), sha(hidden)])
    assert [v["id"] for v in bulk] == [version.id]
    model = Model(**client.models_get(version.model_id))
    assert model.name == "clientstyle" and model.creator.username == "alice" and model.model_versions[0].id == version.id
    assert ModelVersion(**client.model_versions_get(version.id)).id == version.id

    async def walk() -> list[str]:
        return [m.name async for m in client.models_list_paginated_async(limit=1, sort="Newest")]

    assert "clientstyle" in asyncio.run(walk()) and "hidden" not in asyncio.run(walk())
    paths = client.download_model_version(version.id, verify_hash=True)
    assert len(paths) == 1 and open(paths[0], "rb").read() == lora
    with pytest.raises(civitapy.CivitAINotFoundError):
        client.models_get(version.model_id + 1 if version.model_id < 2**30 else 1)
    owner = civitapy.CivitAIClient(base_url=server.url + "/api/v1", token=server.tokens["alice"], retry_count=1)
    assert owner.model_versions_by_hash(sha(hidden))["model"]["name"] == "hidden"
