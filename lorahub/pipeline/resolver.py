"""Adapter names -> local ``.safetensors`` files, through a chain of pluggable steps.

What users type after ``--lora`` or inside ``<lora:NAME:...>`` is tried, in order, as:

1. a file path (``./mystyle.safetensors``, ``~/loras/x.safetensors``);
2. an adapter package folder (what ``lorahub train`` writes, or a downloaded
   repo): its ``pytorch_lora_weights.safetensors``, else
   ``adapter_model.safetensors``, else its only ``.safetensors`` file;
3. a name in one of the search folders (``lora_dirs``): ``NAME.safetensors`` or a
   package folder ``NAME/`` (A1111's ``models/Lora`` habit);
4. a Hub repo id ``namespace/name`` (optionally ``@revision`` and a file inside:
   ``namespace/name/file.safetensors`` or ``namespace/name:file.safetensors``),
   downloaded with ``huggingface_hub.hf_hub_download`` from ``$HF_ENDPOINT``
   (default huggingface.co) into the Hugging Face cache;
5. a registry name or hash (``lorahub search`` results): not a step of the library, which knows no
   registry; the faces add it (``lorahub.registry.resolving.RegistryStep``, which the CLI's preview,
   blend, convert and fuse use).

Each step is a callable ``(name, resolver) -> Resolved | None``; pass your own
list (``Resolver(steps=[...])``) or :meth:`Resolver.add_step` to extend it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..adapters.pickles import refuse_pickle_name
from ..errors import AdapterFileError, NotFoundError, UsageError

#: Weight files a package folder is searched for, best first.
PACKAGE_WEIGHT_NAMES = ("pytorch_lora_weights.safetensors", "adapter_model.safetensors")

_HUB_REPO = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class Resolved:
    """Where a name led: a local safetensors file and how it was found."""

    name: str
    path: Path
    kind: str  # "file", "package", "dir", "hub", "registry"
    source: str  # what identifies it to the user: the path, repo id, or registry source

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "path": str(self.path), "kind": self.kind, "source": self.source}


Step = Callable[[str, "Resolver"], "Resolved | None"]


def _check_file(path: Path) -> Path:
    refuse_pickle_name(path, hint="use the .safetensors version of the adapter")
    if path.suffix.lower() != ".safetensors":
        raise AdapterFileError(str(path), "adapters must be .safetensors files")
    return path


def package_weights(folder: Path) -> Path:
    """The weight file of an adapter package folder; :class:`NotFoundError` when there is none or several."""
    for name in PACKAGE_WEIGHT_NAMES:
        if (folder / name).is_file():
            return folder / name
    files = sorted(p for p in folder.glob("*.safetensors") if p.is_file())
    if len(files) == 1:
        return files[0]
    if not files:
        raise NotFoundError(f"{folder}: an adapter folder without a .safetensors file")
    raise NotFoundError(
        f"{folder}: {len(files)} .safetensors files and none is called {PACKAGE_WEIGHT_NAMES[0]}",
        hint="name the file itself: " + ", ".join(p.name for p in files[:4]),
    )


def step_path(name: str, resolver: Resolver) -> Resolved | None:
    path = Path(name).expanduser()
    if path.is_file():
        return Resolved(name, _check_file(path).resolve(), "file", str(path))
    if path.is_dir():
        return Resolved(name, package_weights(path).resolve(), "package", str(path))
    return None


def step_dirs(name: str, resolver: Resolver) -> Resolved | None:
    if "/" in name or "\\" in name:
        return None
    for folder in resolver.lora_dirs:
        folder = Path(folder).expanduser()
        for cand in (folder / f"{name}.safetensors", folder / name):
            if cand.is_file():
                return Resolved(name, _check_file(cand).resolve(), "dir", str(cand))
            if cand.is_dir():
                return Resolved(name, package_weights(cand).resolve(), "dir", str(cand))
    return None


def parse_hub_ref(name: str) -> tuple[str, str | None, str | None] | None:
    """``(repo_id, revision, filename)`` of ``ns/repo[@rev][/file.safetensors | :file.safetensors]``, else None."""
    text = name.strip()
    if text.startswith((".", "/", "~")) or "\\" in text or text.count("/") < 1:
        return None
    filename = None
    if ":" in text:
        text, _, filename = text.partition(":")
        filename = filename or None
    parts = text.split("/")
    repo_part = "/".join(parts[:2])
    rest = "/".join(parts[2:]) or None
    repo, _, rev = repo_part.partition("@")
    if rest and "@" in rest and not rev:
        rest, _, rev = rest.partition("@")
    if filename is None:
        filename = rest
    elif rest:
        return None
    if not _HUB_REPO.match(repo):
        return None
    if filename is not None and not filename.lower().endswith(".safetensors"):
        return None
    return repo, rev or None, filename


def _hub_endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


def step_hub(name: str, resolver: Resolver) -> Resolved | None:
    ref = parse_hub_ref(name)
    if ref is None:
        return None
    repo, rev, filename = ref
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub import errors as hf_errors

    endpoint = _hub_endpoint()
    where = f"{repo} on {endpoint}"
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    try:
        if filename is None:
            if offline:
                filename = PACKAGE_WEIGHT_NAMES[0]
            else:
                files = HfApi(endpoint=endpoint).list_repo_files(repo, revision=rev)
                weights = [f for f in files if f.lower().endswith(".safetensors")]
                for cand in PACKAGE_WEIGHT_NAMES:
                    if cand in weights:
                        filename = cand
                        break
                else:
                    top = [f for f in weights if "/" not in f]
                    if len(top) == 1:
                        filename = top[0]
                    elif not weights:
                        raise NotFoundError(f"{where}: the repository has no .safetensors file")
                    else:
                        raise NotFoundError(
                            f"{where}: {len(weights)} .safetensors files; say which one",
                            hint=f"e.g. {repo}/{weights[0]}",
                        )
        local = hf_hub_download(repo, filename, revision=rev, endpoint=endpoint, library_name="lorahub")
    except hf_errors.RepositoryNotFoundError:
        return None  # not a Hub repo: let the next step (the registry) try the name
    except hf_errors.EntryNotFoundError:
        raise NotFoundError(f"{where}: no file '{filename}'") from None
    except hf_errors.RevisionNotFoundError:
        raise NotFoundError(f"{where}: no revision '{rev}'") from None
    except hf_errors.GatedRepoError:
        raise NotFoundError(f"{where}: gated; accept its terms on the Hub and log in (hf auth login)") from None
    except hf_errors.LocalEntryNotFoundError:
        return None
    except hf_errors.HfHubHTTPError as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status == 404:
            return None
        raise NotFoundError(f"{where}: the Hub answered HTTP {status or '?'}") from None
    except (OSError, ValueError):
        resolver.notes.append(f"{endpoint} could not be reached for {repo}")
        return None
    except Exception as exc:  # noqa: BLE001 - httpx connection/timeout errors are not OSError
        if any(word in type(exc).__name__ for word in ("Connect", "Timeout", "Network", "Transport")):
            resolver.notes.append(f"{endpoint} could not be reached for {repo}")
            return None
        raise
    return Resolved(name, _check_file(Path(local)), "hub", f"{repo}{'@' + rev if rev else ''}/{filename}")


#: The library's steps: paths, adapter folders, search folders, Hub ids (a face may append a registry step).
DEFAULT_STEPS: tuple[Step, ...] = (step_path, step_dirs, step_hub)


class Resolver:
    """Resolve adapter names with a chain of steps (see the module docstring)."""

    def __init__(
        self,
        steps: Sequence[Step] | None = None,
        *,
        lora_dirs: Sequence[str | os.PathLike[str]] = (),
    ) -> None:
        self.steps: list[Step] = list(DEFAULT_STEPS if steps is None else steps)
        self.lora_dirs = [Path(d) for d in lora_dirs]
        self._cache: dict[str, Resolved] = {}
        #: why steps passed (e.g. an unreachable Hub), shown when nothing resolves
        self.notes: list[str] = []

    def add_step(self, step: Step, *, first: bool = False) -> None:
        if first:
            self.steps.insert(0, step)
        else:
            self.steps.append(step)

    def resolve(self, name: str) -> Resolved:
        """The local file ``name`` leads to; :class:`NotFoundError` when no step knows it."""
        text = str(name).strip()
        if not text:
            raise UsageError("an empty adapter name")
        hit = self._cache.get(text)
        if hit is not None and hit.path.is_file():
            return hit
        self.notes = []
        for step in self.steps:
            hit = step(text, self)
            if hit is not None:
                self._cache[text] = hit
                return hit
        where = ", ".join(str(d) for d in self.lora_dirs)
        if self.notes:
            raise NotFoundError(f"adapter '{text}' not found: {'; '.join(self.notes)}",
                                hint="check the network or HF_ENDPOINT, or give a local path")
        raise NotFoundError(
            f"adapter '{text}' not found",
            hint="give a .safetensors path, an adapter folder, a Hub id namespace/name"
            + (f", a name in {where}" if where else "")
            + " or a registry name (lorahub search)",
        )
