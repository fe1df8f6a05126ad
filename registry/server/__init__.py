"""``lorahub serve``: the HTTP server (FastAPI + uvicorn).

- :mod:`.app`       ``create_app(settings)``: the FastAPI application
- :mod:`.hub_api`   the Hugging Face Hub compatible routes (huggingface_hub, ``hf``, diffusers)
- :mod:`.hub_views` their JSON views of repos, trees, commits and refs
- :mod:`.search_api` ``/api/lorahub/search`` and ``/api/lorahub/by-hash/{hash}`` (OpenAPI at ``/docs``)
- :mod:`.accesslog` the access log (never prints query strings or headers: no secrets in logs)
- :mod:`.run`       ``serve()``: migrations, socket, uvicorn

The Hub logic itself (repos, commits, blobs, tokens) lives in :mod:`lorahub.registry.hub`,
which does not import FastAPI; its operations own their database sessions, the routes open none.
See ``docs/server.md``.
"""
