"""Shared contracts (pydantic models) of lorahub's library, CLI, Space and registry.

``python -m lorahub.schemas`` re-exports the JSON Schema files in ``schemas/json``.

The names below are imported from their modules on first use (PEP 562), so that importing one
module (``lorahub.schemas.registry`` for a search) does not build every other model: commands
start faster.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

#: name -> module that defines it.
_WHERE = {
    **dict.fromkeys(
        ("AdapterFormat", "BaseFamily", "Coverage", "FingerprintReport", "InspectReport", "ModuleInfo",
         "ValidationReport"), "adapters"),
    **dict.fromkeys(("Publication", "PullFile", "PullResult", "PushFile", "PushResult", "RepoAdapter", "ResolveResult",
                     "StorageCheck", "StorageIssue"), "hub"),
    **dict.fromkeys(("AdapterRecord", "DupeGroup", "HashLookup", "IndexSummary", "NearGroup", "NearMember", "SearchQuery",
                     "SearchResult"),
                    "registry"),
    **dict.fromkeys(("TrainConfig", "TrainResult"), "training"),
    **dict.fromkeys(("BlendRecipe", "ComponentWeights", "RecipeParams", "RecipeSource", "SearchRecord"), "recipes"),
}

#: Every model whose JSON Schema is exported: file stem -> model name (see :data:`EXPORTED`).
_EXPORTED_NAMES = {
    "inspect-report": "InspectReport",
    "validation-report": "ValidationReport",
    "fingerprint-report": "FingerprintReport",
    "adapter-record": "AdapterRecord",
    "search-query": "SearchQuery",
    "search-result": "SearchResult",
    "hash-lookup": "HashLookup",
    "dupe-group": "DupeGroup",
    "near-group": "NearGroup",
    "near-member": "NearMember",
    "index-summary": "IndexSummary",
    "train-config": "TrainConfig",
    "train-result": "TrainResult",
    "push-result": "PushResult",
    "pull-result": "PullResult",
    "storage-check": "StorageCheck",
    "resolve-result": "ResolveResult",
    "blend-recipe": "BlendRecipe",
}

if TYPE_CHECKING:  # pragma: no cover
    from .adapters import (
        AdapterFormat,
        BaseFamily,
        Coverage,
        FingerprintReport,
        InspectReport,
        ModuleInfo,
        ValidationReport,
    )
    from .hub import (
        Publication,
        PullFile,
        PullResult,
        PushFile,
        PushResult,
        RepoAdapter,
        ResolveResult,
        StorageCheck,
        StorageIssue,
    )
    from .recipes import BlendRecipe, ComponentWeights, RecipeParams, RecipeSource, SearchRecord
    from .registry import (
        AdapterRecord,
        DupeGroup,
        HashLookup,
        IndexSummary,
        NearGroup,
        NearMember,
        SearchQuery,
        SearchResult,
    )
    from .training import TrainConfig, TrainResult

    #: Every model whose JSON Schema is exported, by file stem.
    EXPORTED: dict[str, Any]


def __getattr__(name: str) -> Any:
    if name == "EXPORTED":
        value: Any = {stem: __getattr__(model) for stem, model in _EXPORTED_NAMES.items()}
    elif name in _WHERE:
        value = getattr(import_module(f".{_WHERE[name]}", __name__), name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])


__all__ = [
    "AdapterFormat",
    "BlendRecipe",
    "ComponentWeights",
    "RecipeParams",
    "RecipeSource",
    "SearchRecord",
    "AdapterRecord",
    "DupeGroup",
    "HashLookup",
    "IndexSummary",
    "NearGroup",
    "NearMember",
    "SearchQuery",
    "SearchResult",
    "BaseFamily",
    "Coverage",
    "EXPORTED",
    "FingerprintReport",
    "InspectReport",
    "ModuleInfo",
    "Publication",
    "PullFile",
    "PullResult",
    "PushFile",
    "PushResult",
    "RepoAdapter",
    "ResolveResult",
    "StorageCheck",
    "StorageIssue",
    "TrainConfig",
    "TrainResult",
    "ValidationReport",
]
