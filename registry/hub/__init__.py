"""The Hub side of the registry: repos, commits, file trees and blobs that ``lorahub serve`` exposes
through a Hugging Face Hub compatible HTTP API (see ``docs/server.md``).

Modules, one job each (none of them imports FastAPI; the HTTP layer, with the Hub API's JSON
views, is :mod:`lorahub.registry.server`):

- :mod:`.access`         the policy: who may do what (``allowed(identity, action, repo)``), roles,
                         token scopes, and the private repos a listing or search may show
- :mod:`.repos`          repos: find (with the error a refusal is), create, delete, settings,
                         list, read a repo at a revision (:class:`~.repos.Repos`)
- :mod:`.orgs`           organisations and their members (``lorahub org``)
- :mod:`.trees`          revisions and their trees: resolve a revision, a commit's files, tree
                         listings, paths-info, history, refs; writing one commit's rows
- :mod:`.lfs`            uploads: preupload, the LFS batch API, recording and verifying an object
                         (:class:`~.lfs.Lfs`)
- :mod:`.commits`        the commit algorithm (:class:`~.commits.Commits`)
- :mod:`.policy`         what the server accepts in a commit: pickles refused, adapters validated
- :mod:`.catalogue_sync` commit -> catalogue: a repo's main head is one catalogue adapter
- :mod:`.card_tags`      the tags the Hub derives from a model card (the card itself is read by
                         :mod:`lorahub.hub.card`)
- :mod:`.auth`           users, bearer tokens (stored hashed), signed upload URLs
- :mod:`.names`          repo ids and file paths: what is allowed
- :mod:`.gitobj`         git blob ids, LFS pointers, commit ids
- :mod:`.blobstore`      content-addressed blob store (local folder; narrow interface for object stores)
- :mod:`.tables`         the ``hub_*`` tables (same SQLModel metadata as the registry)
- :mod:`.config`         limits and switches (:class:`~.config.HubConfig`)
- :mod:`.errors`         the errors, each with its HTTP status and ``X-Error-Code``
- :mod:`.check`          ``lorahub registry check``: the database and the blob store agree (and repairs)
- :mod:`.faults`         fault points for crash tests (inert unless ``$LORAHUB_TEST_FAULT`` is set)

Sessions have one owner: the operations. The operation objects (:class:`~.repos.Repos`,
:class:`~.lfs.Lfs`, :class:`~.commits.Commits`, :class:`~.auth.Authenticator`) hold the engine
(:class:`lorahub.registry.database.Sessions`), and each of their public methods opens the
session(s) it needs and closes them before it returns: one read session, or one write
transaction (SQLite ``BEGIN IMMEDIATE``), or, for a commit, the algorithm's own sequence of them.
Every other function of this package takes the caller's open session as its first argument and
never opens one. The HTTP layer never opens a session: it calls an operation with the caller's
:class:`~.auth.Identity` and turns what comes back into JSON. (``lorahub token ...`` administers
tokens outside the server with the functions of :mod:`.auth` in a session of its own.)
"""
