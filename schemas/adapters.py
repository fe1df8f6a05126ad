"""Contracts of the adapter-file layer: what ``inspect``, ``validate`` and
``fingerprint`` report. The CLI's ``--json`` output is exactly these models."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .recipes import BlendRecipe

AdapterFormat = Literal[
    "kohya-lora",
    "kohya-locon",
    "kohya-dora",
    "diffusers",
    "diffusers-attnprocs",
    "peft",
    "peft-dora",
    "peft-raw",
    "lycoris-loha",
    "lycoris-lokr",
    "lycoris-ia3",
    "lycoris-full",
    "lycoris-oft",
    "lycoris-glora",
    "lycoris-norm",
    "cloneofsimo",
    "comfyui",
    "xlabs",
    "flux-control",
    "bare",
    "unknown",
]

#: Base families (lorahub/adapters/families.py says how each is recognised; only sd1, sd2, sdxl, sd3 and flux
#: adapters are read for conversion and previews, the others are named for the registry).
BaseFamily = Literal[
    "sd1", "sd2", "sdxl", "sd3", "flux", "chroma", "qwen", "wan", "hunyuanvideo", "hidream", "lumina", "pixart",
    "kolors", "auraflow", "ltxv", "cosmos", "unknown",
]

Component = Literal["unet", "text_encoder", "text_encoder_2", "text_encoder_3", "transformer", "unknown"]

TextEncoder = Literal["text_encoder", "text_encoder_2", "text_encoder_3"]

EmbeddedHashStatus = Literal["match", "mismatch", "absent", "unverifiable"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)


class ModuleInfo(_Model):
    """One adapted module (a weight the adapter changes)."""

    name: str = Field(description="Module key prefix as written in the file")
    component: Component
    kind: str = Field(description="lora, locon, loha, lokr, ia3, full, oft, glora, norm, cloneofsimo")
    rank: int | None = Field(None, description="Inner rank; None when the module stores a full matrix")
    alpha: float | None = Field(None, description="alpha as stored (kohya .alpha, peft lora_alpha); None if absent")
    scale: float | None = Field(None, description="Effective alpha / rank applied by loaders")
    in_features: int | None = None
    out_features: int | None = None
    conv: bool = Field(False, description="Convolution weights (LoCon/conv LoRA)")
    dora: bool = False
    dtype: str | None = None
    tensors: list[str] = Field(default_factory=list, description="Tensor names belonging to the module")


class Coverage(_Model):
    unet: int = 0
    text_encoder: int = 0
    text_encoder_2: int = 0
    text_encoder_3: int = 0
    transformer: int = 0
    unknown: int = 0


class InspectReport(_Model):
    """Everything lorahub reads from one adapter file's header."""

    path: str
    file_size: int
    header_size: int = Field(description="Length N of the JSON header in bytes")
    format: AdapterFormat
    format_name: str = Field(description="Human-readable format name")
    diffusers_loadable: bool = Field(description="Whether diffusers' load_lora_weights takes the file as is")
    loaders: list[Literal["diffusers", "a1111", "comfyui", "kohya"]] = Field(
        default_factory=list,
        description="The tools that load every module of the file, from its key layout and shapes: diffusers, "
        "a1111 (AUTOMATIC1111/Forge), comfyui, kohya (sd-scripts); docs/formats.md",
    )
    base_family: BaseFamily = Field(
        description="Family inferred from key names and tensor shapes: sd1, sd2, sdxl, sd3 (SD3/3.5), flux "
        "(Flux.1 dev/schnell), chroma, qwen (Qwen-Image), wan (Wan 2.x), hunyuanvideo, hidream, lumina, "
        "pixart (α/Σ), kolors, auraflow, ltxv (LTX-Video), cosmos (Cosmos Predict2, Anima) or unknown"
    )
    declared_base_family: BaseFamily | None = Field(None, description="Family the metadata declares, if any")
    family_evidence: list[str] = Field(default_factory=list)
    cross_attention_dim: int | None = Field(None, description="Width of the cross-attention keys (768 SD1, 1024 SD2, 2048 SDXL)")
    hidden_size: int | None = Field(
        None, description="Hidden width of a transformer family's modules (Flux.1 3072, SD3 1536, SD 3.5 Large 2432...)"
    )
    training_resolution: list[int] | None = Field(
        None, description="[width, height] the adapter was trained at, from ss_resolution (else modelspec.resolution)"
    )
    text_encoders: list[TextEncoder] = Field(
        default_factory=list,
        description="Text encoders the file adapts, named as the diffusers pipeline names them: text_encoder (TE1, "
        "CLIP ViT-L on SD 1.x, SDXL, SD3 and Flux.1), text_encoder_2 (SDXL's and SD3's OpenCLIP ViT-bigG, Flux.1's "
        "T5-XXL), text_encoder_3 (SD3's T5-XXL); empty when it adapts none",
    )
    rank: int | None = Field(None, description="Most common module rank")
    ranks: list[int] = Field(default_factory=list, description="All distinct module ranks")
    alpha: float | None = Field(None, description="Most common module alpha")
    alphas: list[float] = Field(default_factory=list)
    modules: int = Field(description="Number of adapted modules")
    coverage: Coverage
    conv_modules: int = 0
    dora: bool = False
    tensors: int
    parameters: int
    dtype: str | None = Field(None, description="Dominant dtype of the weights")
    dtypes: dict[str, int] = Field(default_factory=dict, description="Tensor count per dtype")
    trigger_words: list[str] = Field(default_factory=list)
    trigger_source: str | None = Field(None, description="Where the trigger words came from")
    title: str | None = Field(None, description="ss_output_name or modelspec.title")
    training: dict[str, Any] = Field(default_factory=dict, description="kohya ss_* training parameters, decoded")
    modelspec: dict[str, str] = Field(default_factory=dict, description="The modelspec.* block")
    embedded_hashes: dict[str, str] = Field(default_factory=dict, description="sshs_model_hash, sshs_legacy_hash, modelspec.hash_sha256")
    metadata: dict[str, Any] = Field(default_factory=dict, description="The raw __metadata__ object")
    recipe: BlendRecipe | None = Field(
        None, description="The recipe of a lorahub blend (metadata lorahub.recipe): its sources by stable reference "
        "and fingerprints, weights, method; `lorahub blend --recipe` rebuilds the file from it"
    )
    module_details: list[ModuleInfo] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)


class ValidationReport(_Model):
    """Result of validating one file. ``valid`` is False when ``errors`` is non-empty."""

    path: str
    valid: bool
    errors: list[str] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)


class FingerprintReport(_Model):
    """Every hash the community uses for one file (docs/hashes.md says which is which).

    Every hex string is lower case (AutoV3 and CRC32 included, although Civitai
    shows those two upper case): compare hashes case-insensitively.
    """

    path: str = Field(description="The path as given")
    size: int = Field(description="File size in bytes")
    sha256: str = Field(description="SHA-256 of the whole file (the Hub's LFS oid), 64 hex lower case")
    autov1: str = Field(
        description="A1111's old model hash: SHA-256 of the bytes [0x100000, 0x110000) (fewer if the file ends "
        "earlier), first 8 hex upper case, computed as A1111 and kohya do over the possibly short read: a file of "
        "at most 1 MiB hashes nothing and gets E3B0C442, the value those tools show for it"
    )
    autov2: str = Field(description="First 10 hex of sha256, upper case (A1111 checkpoint shorthash, Civitai AutoV2)")
    autov3: str | None = Field(
        description="First 12 hex of tensor_sha256 (Civitai AutoV3, A1111 LoRA shorthash), upper case as Civitai shows it; "
        "null when the file is not safetensors"
    )
    tensor_sha256: str | None = Field(
        description="SHA-256 of the bytes after the header, [8+N, EOF) (kohya sshs_model_hash, A1111 addnet hash), "
        "64 hex; null when the file is not safetensors"
    )
    crc32: str = Field(
        description="CRC-32/ISO-HDLC (zlib) of the whole file, 8 hex upper case, most significant byte first"
    )
    blake3: str = Field(description="BLAKE3-256 of the whole file, 64 hex lower case")
    embedded_hash: EmbeddedHashStatus = Field(
        description="Whether the embedded sshs_model_hash equals tensor_sha256: absent (no such key), "
        "unverifiable (LyCORIS '0x' hash, not 64 hex, or no tensor hash), match or mismatch"
    )
    embedded_sshs_model_hash: str | None = Field(None, description="The sshs_model_hash metadata value as stored")
    cached: bool = Field(False, description="Served from the fingerprint cache")
    warnings: list[str] = Field(
        default_factory=list, description="Why a hash is missing (e.g. not a safetensors file)"
    )
