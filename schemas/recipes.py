"""Contract of a blend recipe: what ``lorahub blend --recipe`` bakes and ``--save-recipe`` writes.

A recipe names every source by a stable reference (exactly one of ``hub`` + ``file``, ``registry``
or ``path``) and its fingerprints, so that baking it anywhere gives the same tensors (the same
AutoV3), or stops before writing anything when a source is not the file it names.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

#: The ``recipe`` key of every recipe file (its kind and version).
RECIPE_KIND = "lorahub.blend-recipe/1"

BlendMethod = Literal["linear", "cat", "svd", "ties", "dare"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ComponentWeights(_Model):
    """Separate weights per component of the base model (the blend's ``FILE:TE:UNET``)."""

    te: float = Field(description="Text encoder weight (SDXL/SD3: the first text encoder)", allow_inf_nan=False)
    unet: float = Field(description="UNet (or transformer) weight", allow_inf_nan=False)
    te2: float | None = Field(None, description="SDXL's second text encoder (default: te)", allow_inf_nan=False)


class RecipeSource(_Model):
    """One adapter of a blend: where to get it, what it must be, and how much of it."""

    hub: str | None = Field(
        None, max_length=300, description="Hub repository and revision, 'namespace/name@revision' (a commit id is stable)"
    )
    file: str | None = Field(None, max_length=500, description="The .safetensors file inside the Hub repository")
    registry: str | None = Field(None, max_length=300, description="A name or hash the registry resolves (lorahub search)")
    path: str | None = Field(None, max_length=4096, description="A local file path (relative: to the recipe's folder)")
    name: str | None = Field(None, max_length=300, description="Display name of the adapter")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="SHA-256 of the whole file, lower case")
    autov3: str = Field(pattern=r"^[0-9A-F]{12}$", description="AutoV3 (tensor SHA-256, 12 hex, upper case)")
    weight: float | ComponentWeights = Field(
        1.0, description="One weight for the whole adapter, or te/unet(/te2) weights per component"
    )
    license: str | None = Field(None, max_length=200, description="The source's licence, when known")
    url: str | None = Field(None, max_length=2000, description="Where the source can be seen (its Hub page)")

    @model_validator(mode="after")
    def _one_reference(self) -> RecipeSource:
        given = [k for k in ("hub", "registry", "path") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError("a source needs exactly one of hub, registry, path")
        if self.hub and not self.file:
            raise ValueError("a hub source needs its file")
        if self.file and not self.hub:
            raise ValueError("file belongs to a hub source")
        if isinstance(self.weight, float) and self.weight != self.weight:  # NaN
            raise ValueError("weight must be a number")
        return self

    def reference(self) -> str:
        """The source as one line: ``ns/name@rev:file``, ``registry:NAME`` or the path."""
        if self.hub:
            return f"{self.hub}:{self.file}"
        if self.registry:
            return f"registry:{self.registry}"
        return str(self.path)


class RecipeParams(_Model):
    """The method's parameters."""

    density: float | None = Field(None, gt=0.0, le=1.0, description="ties/dare: fraction of each delta kept")
    seed: int = Field(0, description="dare: seed of the random drops")


class SearchRecord(_Model):
    """How ``lorahub blend search`` found the weights (absent from hand-made recipes)."""

    optimizer: Literal["cma", "gradient"] = Field(description="cma: CMA-ES (gradient-free); gradient: Adam on the weights")
    budget: int = Field(ge=1, description="Objective evaluations allowed")
    evaluations: int = Field(ge=0, description="Objective evaluations made")
    l1: float = Field(ge=0.0, description="Weight of the L1 penalty on the weights", allow_inf_nan=False)
    seed: int = Field(description="Seed of the noise draws and of the optimiser")
    samples: int = Field(ge=1, description="Noise draws (timestep and noise) per target image")
    per_component: bool = Field(False, description="Text-encoder and UNet weights searched apart")
    bounds: tuple[float, float] = Field(description="Range of each weight")
    size: tuple[int, int] | None = Field(None, description="Width and height the targets were compared at")
    targets: int = Field(ge=1, description="Number of target images")
    base: str | None = Field(None, max_length=500, description="The base model the loss was measured on")
    loss: float = Field(description="Denoising loss at the found weights", allow_inf_nan=False)
    base_loss: float = Field(description="Denoising loss of the base alone (every weight 0)", allow_inf_nan=False)
    dropped: list[str] = Field(default_factory=list, max_length=64, description="Adapters the search set to 0 (left out)")


class BlendRecipe(_Model):
    """A blend, rebuildable anywhere: sources (by stable reference and fingerprints), weights, method."""

    recipe: Literal["lorahub.blend-recipe/1"] = Field(RECIPE_KIND, description="Kind and version of this file")
    lorahub_version: str = Field(max_length=50, description="The lorahub version that wrote the recipe")
    method: BlendMethod
    params: RecipeParams = Field(default_factory=RecipeParams)
    rank: int | None = Field(None, ge=1, le=4096, description="Output rank (None: the method's default)")
    format: Literal["kohya", "diffusers"] = Field("kohya", description="Key layout of the baked file")
    dtype: Literal["float32", "float16", "bfloat16"] = Field("float16", description="dtype of the baked tensors")
    title: str | None = Field(None, max_length=300, description="modelspec.title of the baked file")
    sources: list[RecipeSource] = Field(min_length=1, max_length=64)
    search: SearchRecord | None = Field(None, description="How `lorahub blend search` found the weights")
