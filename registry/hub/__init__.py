"""The Hub side of the registry: repos, commits, file trees and blobs that ``lorahub serve`` exposes
through a Hugging Face Hub compatible HTTP API (see ``docs/server.md``).

Modules (none of them imports FastAPI; the HTTP layer is :mod:`lorahub.registry.server`):

- :mod:`.names`    repo ids and file paths: what is allowed
- :mod:`.gitobj`   git blob ids, LFS pointers, commit ids
- :mod:`.blobstore` content-addressed blob store (local folder; narrow interface for object stores)
- :mod:`.tables`   the ``hub_*`` tables (same SQLModel metadata as the registry)
- :mod:`.auth`     users, bearer tokens (stored hashed), signed upload URLs
- :mod:`.card_tags` README.md YAML front matter -> ``cardData`` and tags
- :mod:`.commits`  the operations (create repo, commit, resolve, list, ...) on a database session
- :mod:`.policy`   validation and registry indexing of committed ``.safetensors`` files
- :mod:`.check`    ``lorahub registry check``: the database and the blob store agree (and repairs)
- :mod:`.faults`   fault points for crash tests (inert unless ``$LORAHUB_TEST_FAULT`` is set)
"""
