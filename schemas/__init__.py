"""Shared contracts (pydantic models) of lorahub's library, CLI, Space and registry.

``python -m lorahub.schemas`` re-exports the JSON Schema files in ``schemas/json``.
"""

from .adapters import (
    AdapterFormat,
    BaseFamily,
    Coverage,
    FingerprintReport,
    InspectReport,
    ModuleInfo,
    ValidationReport,
)
from .hub import PullFile, PullResult, PushFile, PushResult, RepoAdapter, StorageCheck, StorageIssue
from .registry import (
    AdapterRecord,
    DupeGroup,
    HashLookup,
    IndexSummary,
    SearchQuery,
    SearchResult,
)
from .training import TrainConfig, TrainResult

#: Every model whose JSON Schema is exported, by file stem.
EXPORTED = {
    "inspect-report": InspectReport,
    "validation-report": ValidationReport,
    "fingerprint-report": FingerprintReport,
    "adapter-record": AdapterRecord,
    "search-query": SearchQuery,
    "search-result": SearchResult,
    "hash-lookup": HashLookup,
    "dupe-group": DupeGroup,
    "index-summary": IndexSummary,
    "train-config": TrainConfig,
    "train-result": TrainResult,
    "push-result": PushResult,
    "pull-result": PullResult,
    "storage-check": StorageCheck,
}

__all__ = [
    "AdapterFormat",
    "AdapterRecord",
    "DupeGroup",
    "HashLookup",
    "IndexSummary",
    "SearchQuery",
    "SearchResult",
    "BaseFamily",
    "Coverage",
    "EXPORTED",
    "FingerprintReport",
    "InspectReport",
    "ModuleInfo",
    "PullFile",
    "PullResult",
    "PushFile",
    "PushResult",
    "RepoAdapter",
    "StorageCheck",
    "StorageIssue",
    "TrainConfig",
    "TrainResult",
    "ValidationReport",
]
