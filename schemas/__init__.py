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

#: Every model whose JSON Schema is exported, by file stem.
EXPORTED = {
    "inspect-report": InspectReport,
    "validation-report": ValidationReport,
    "fingerprint-report": FingerprintReport,
}

__all__ = [
    "AdapterFormat",
    "BaseFamily",
    "Coverage",
    "EXPORTED",
    "FingerprintReport",
    "InspectReport",
    "ModuleInfo",
    "ValidationReport",
]
