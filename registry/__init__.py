"""lorahub.registry: the catalogue of adapters (database, search) and the Hub-compatible server.

- :mod:`.catalogue`  :class:`~.catalogue.Registry`, the public entry: index, import, search, look up
- :mod:`.database`   URLs, engines, sessions, write transactions, fast raw reads
- :mod:`.tables`     the catalogue's tables (users, tokens, adapters and their versions, files, tags)
- :mod:`.drafts`     what the catalogue writes, one builder per kind of source (local file, Hub repo, record)
- :mod:`.rows`       drafts written as rows, in bulk
- :mod:`.lookups`    results by id, by fingerprint, duplicates
- :mod:`.search`     the text search (SQLite FTS5, PostgreSQL tsvector)
- :mod:`.resolving`  the resolver's registry step: adapter names and hashes -> files (``RegistryStep``)
- :mod:`.text`       words, names, base-model labels and filter tokens
- :mod:`.sources`    what an index reads: folders, a Hub endpoint, JSON Lines records
- :mod:`.hub`        the Hub's repos, commits, trees and blobs (no HTTP)
- :mod:`.server`     ``lorahub serve``: the HTTP layer
- :mod:`.migrations` the Alembic migrations
"""
