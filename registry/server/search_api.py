"""The lorahub API: registry search and lookup by hash (documented at ``/docs``, ``/openapi.json``).

The same queries as ``lorahub search`` (words, ``--base``, ``--format``, ``--tag``, ``--author``,
``--license``, ``--min-rank``/``--max-rank``, ``--sort``, pages) and ``lorahub search --hash``.
With a token, the caller also sees the private adapters they may read (their own, their
organisations'; :func:`lorahub.registry.hub.access.private_view`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, TypeAdapter, ValidationError
from sqlalchemy import text

from lorahub import __version__
from lorahub.registry.hub.access import search_viewer
from lorahub.schemas.registry import HashLookup, SearchQuery, SearchResult

from .app import state_of
from .reads import run_read

router = APIRouter(prefix="/api/lorahub", tags=["lorahub"])


class ErrorBody(BaseModel):
    error: str


class Health(BaseModel):
    status: Literal["ok"]
    version: str
    database: str


ERRORS = {
    400: {"model": ErrorBody, "description": "Malformed request"},
    401: {"model": ErrorBody, "description": "Invalid token"},
    422: {"model": ErrorBody, "description": "Invalid parameters"},
    503: {"model": ErrorBody, "description": "Database unavailable"},
}


_RESULTS = TypeAdapter(list[SearchResult])

#: Searches whose page reaches deeper than this many results (page x limit) run in a worker thread, not the
#: event loop (registry/server/reads.py): each result row costs about 7 us (SQLite, 100k, hybrid or keyword:
#: 5-7 ms at 1,000, 100-160 ms at the deepest, 10,000), and a loop turn holds every request of the process.
LOOP_DEPTH = 1000


def _json(data: bytes, status: int = 200) -> Response:
    return Response(content=data, status_code=status, media_type="application/json")


#: Query parameters of /search: (name, JSON schema, description). Parsed by hand and validated by
#: SearchQuery (FastAPI's per-parameter machinery cost more than the search itself); documented here.
SEARCH_PARAMS: list[tuple[str, dict, str]] = [
    ("q", {"type": "string", "maxLength": 500}, "Words to find"),
    ("base", {"type": "string", "maxLength": 100}, "Base family (sd1, sdxl, sd3, flux, qwen, wan... as inspect names them) or base label (pony...)"),
    ("format", {"type": "string", "maxLength": 64}, "Adapter format, e.g. kohya-lora"),
    ("tag", {"type": "array", "items": {"type": "string", "maxLength": 200}, "maxItems": 20}, "Required tags (repeat for several)"),
    ("author", {"type": "string", "maxLength": 200}, "Author (Hub namespace or catalogue author)"),
    ("license", {"type": "string", "maxLength": 128}, "Licence id"),
    ("min_rank", {"type": "integer", "minimum": 1, "maximum": 1000000}, "Smallest rank"),
    ("max_rank", {"type": "integer", "minimum": 1, "maximum": 1000000}, "Largest rank"),
    ("sort", {"type": "string", "enum": ["relevance", "newest", "downloads"], "default": "relevance"}, "Order"),
    ("limit", {"type": "integer", "minimum": 1, "maximum": 500, "default": 20}, "Results per page"),
    ("page", {"type": "integer", "minimum": 1, "maximum": 10000, "default": 1}, "Page number (page * limit <= 10000)"),
    ("mode", {"type": "string", "enum": ["auto", "keyword", "semantic", "hybrid"], "default": "auto"},
     "keyword: words as written; semantic: by meaning; hybrid: both fused (exact names and hashes first); "
     "auto: hybrid where the registry has embeddings, else keyword. semantic and hybrid need sort=relevance"),
]
_LIMITS = {name: schema.get("maxLength") for name, schema, _ in SEARCH_PARAMS}


def _parse_search(params: Any) -> SearchQuery:
    raw: dict[str, Any] = {}
    for name, schema, _ in SEARCH_PARAMS:
        if schema["type"] == "array":
            values = params.getlist(name)
            if len(values) > schema["maxItems"] or any(len(v) > schema["items"]["maxLength"] for v in values):
                raise ValueError(f"{name}: at most {schema['maxItems']} values of {schema['items']['maxLength']} characters")
            raw["tags"] = values
            continue
        value = params.get(name)
        if value is None or value == "":
            continue
        limit = _LIMITS.get(name)
        if limit is not None and len(value) > limit:
            raise ValueError(f"{name}: at most {limit} characters")
        if schema["type"] == "integer":
            try:
                number = int(value)
            except ValueError:
                raise ValueError(f"{name}: not an integer: {value[:20]!r}") from None
            if not schema["minimum"] <= number <= schema["maximum"]:
                raise ValueError(f"{name}: must be between {schema['minimum']} and {schema['maximum']}")
            raw[name] = number
        else:
            raw["query" if name == "q" else name] = value
    try:
        return SearchQuery(**raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise ValueError(f"{where + ': ' if where else ''}{first.get('msg', 'invalid query')}") from None


class BareRequestRoute(APIRoute):
    """A route whose endpoint takes the bare :class:`Request` and returns its :class:`Response`: FastAPI's
    dependency solving, endpoint wrapping and response handling are skipped; the route, its middleware and
    its OpenAPI entry are the same. /search's endpoint parses its own parameters (:func:`_parse_search`): the
    skipped machinery cost 50-90 us a request of the app's 290-400 (in process, the search itself left out;
    2026-12-06), about 3 % of the server's CPU under load."""

    def get_route_handler(self) -> Callable[[Request], Any]:
        return self.endpoint


async def search(request: Request) -> Response:
    try:
        query = _parse_search(request.query_params)
    except ValueError as exc:
        return JSONResponse({"error": str(exc)}, status_code=422)
    st = state_of(request)
    authorization = request.headers.get("authorization")

    def work() -> bytes:
        # One thread hop for the whole request (token, query, JSON): the results are serialised here,
        # not re-validated by FastAPI's response_model (which stays for the OpenAPI schema).
        ident = st.identify(authorization)
        results = st.registry.search(query, viewer=search_viewer(ident))
        return _RESULTS.dump_json(results)

    return _json(await run_read(work, st, light=query.page * query.limit <= LOOP_DEPTH, anonymous=authorization is None))


# Added, not decorated: only add_api_route takes a route class of its own.
router.add_api_route(
    "/search",
    search,
    methods=["GET"],
    route_class_override=BareRequestRoute,
    response_model=list[SearchResult],
    responses=ERRORS,
    summary="Search adapters",
    description="Full-text search over names, titles, trigger words, tags and descriptions, with filters, fused "
    "with a search by meaning (sentence embeddings) where the registry has them (`mode`). Results come best "
    "first (see `score`).",
    openapi_extra={
        "parameters": [
            {"name": name, "in": "query", "required": False, "schema": schema, "description": desc}
            | ({"style": "form", "explode": True} if schema["type"] == "array" else {})
            for name, schema, desc in SEARCH_PARAMS
        ]
    },
)


@router.get(
    "/by-hash/{hash}",
    response_model=HashLookup,
    responses=ERRORS,
    summary="Look an adapter up by hash",
    description="Exact or prefix (at least 8 hex digits) match on SHA-256, AutoV1, AutoV2, AutoV3, tensor SHA-256, "
    "CRC32 or BLAKE3, case-insensitive, like Civitai's by-hash lookup.",
)
async def by_hash(
    request: Request,
    hash: Annotated[str, Path(min_length=8, max_length=66, description="A fingerprint or a prefix of one")],
) -> Response:
    st = state_of(request)
    authorization = request.headers.get("authorization")

    def work() -> bytes:
        ident = st.identify(authorization)
        matches = st.registry.by_hash(hash, viewer=search_viewer(ident))
        return HashLookup(query=hash, matches=matches).model_dump_json().encode()

    return _json(await run_read(work, st, anonymous=authorization is None))


@router.get("/health", response_model=Health, responses={503: ERRORS[503]}, summary="Liveness and database check")
def health(request: Request) -> Health:
    st = state_of(request)
    with st.registry.engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    return Health(status="ok", version=__version__, database=st.registry.engine.dialect.name)
