"""The one errors module of lorahub.

Library code raises these; the CLI turns any :class:`LorahubError` into one
readable line on stderr and the exit code in :attr:`LorahubError.exit_code`.
"""

from __future__ import annotations


class LorahubError(Exception):
    """Base class of every error lorahub raises on purpose."""

    exit_code: int = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:  # one line, always
        text = self.message if not self.hint else f"{self.message} ({self.hint})"
        return " ".join(text.split("\n"))


class UsageError(LorahubError):
    """The command was called wrongly (exit code 2)."""

    exit_code = 2


class AdapterFileError(LorahubError):
    """An adapter file cannot be read: not safetensors, truncated, hostile."""

    def __init__(self, path: str, message: str, *, hint: str | None = None) -> None:
        super().__init__(f"{path}: {message}", hint=hint)
        self.path = path
        self.reason = message


class PickleRefusedError(AdapterFileError):
    """A pickle-based file (.ckpt/.pt/.bin) was given: lorahub never unpickles."""


class InvalidAdapterError(LorahubError):
    """An adapter failed validation; ``errors`` holds the validator's messages."""

    def __init__(self, path: str, errors: list[str]) -> None:
        first = errors[0] if errors else "invalid adapter"
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        super().__init__(f"{path}: {first}{more}")
        self.path = path
        self.errors = errors


class MetadataError(LorahubError):
    """Metadata to write is malformed (not a flat string-to-string mapping)."""


class BaseModelError(LorahubError):
    """A base model could not be found, built or loaded."""


class MissingDependencyError(LorahubError):
    """An optional dependency (an extra) is needed for this command."""

    def __init__(self, package: str, extra: str) -> None:
        super().__init__(
            f"this needs the '{package}' package",
            hint=f"install it with: pip install 'lorahub-toolkit[{extra}]'",
        )
        self.package = package
        self.extra = extra


class RegistryError(LorahubError):
    """The registry database cannot be used (unreachable, too new, not migrated) or an import is malformed."""


class NotFoundError(LorahubError):
    """A named thing (file, adapter, repo, record) does not exist."""


class YamlError(LorahubError):
    """YAML that cannot be read, or that breaks the bounds of :mod:`lorahub.safeyaml` (aliases, size, depth)."""


class RecipeError(LorahubError):
    """A blend recipe that cannot be read, or a source that is not the file the recipe names."""


class UnsafePathError(LorahubError):
    """A repo file path that must never be written to disk (a ``.git`` folder under any of its aliases)."""


def require(module: str, extra: str):  # noqa: ANN201 - returns a module
    """Import an optional heavy dependency or raise :class:`MissingDependencyError`."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise MissingDependencyError(module.split(".")[0], extra) from exc


class DatasetError(LorahubError):
    """A training dataset is missing, empty or unreadable (raised before any model is loaded)."""


class TrainingError(LorahubError):
    """Training cannot start or continue (bad config, unsupported base, broken checkpoint)."""


class TrainingInterrupted(TrainingError):
    """Training was stopped (Ctrl-C); the last checkpoint, if any, is intact (exit code 130)."""

    exit_code = 130


class CaptionError(LorahubError):
    """A caption or scene outside the world of :mod:`lorahub.world` (unknown word, wrong grammar, invisible shape)."""


class AdapterCompatibilityError(LorahubError):
    """An adapter does not fit the base model (family, width, shapes) or its format cannot be used."""


class AdapterLoadError(LorahubError):
    """Loading an adapter into a pipeline failed or changed nothing (a silent no-op load)."""
