"""A generated catalogue of LoRA models for the search, import and load tests (no ../shared needed).

:func:`civitai_objects` returns a few thousand model objects shaped as Civitai's public API returns
them (``/api/v1/models``: ``id, name, type, nsfw, tags, creator, description, stats, license,
versions[trainedWords, baseModel, files[hashes]]``), the format ``lorahub index --from civitai`` and
:func:`lorahub.registry.sources.records.civitai_to_record` read; :func:`records` converts them with that
importer. Same seed, same corpus.

The vocabulary is the one real LoRA catalogues use: art styles, invented characters and series,
outfits and concepts, names in Chinese, Japanese, Korean, Russian and accented Latin, punctuation
(``Cute_girl_mix7``, ``[SDXL] Neon-Noir v2.1``), trigger words, HTML descriptions, downloads spread
over five orders of magnitude, every base-model label, one to three versions with file hashes in
Civitai's spelling. Two rules keep results comparable between SQLite (whose tokenizer folds
diacritics) and PostgreSQL (which does not): no accented word has an unaccented twin in the corpus,
and downloads and publication times are distinct, so every order is total.

:data:`PLANTED` are hand-written records that make relevance assertions meaningful: for the query
``velvet lantern`` there are records in every tier (exact name, every word in the name, in trigger
words or tags only, in the description only) with popularity reversed against the tiers, and
near-misses that must not match (``Velvet Skies`` has one word, ``Velvet Paper Lanterns`` has
``lanterns``: nothing is stemmed). The words ``velvet``, ``lantern``, ``lanterns`` and ``skies``
appear nowhere else.
"""

from __future__ import annotations

import hashlib
import random
from datetime import datetime, timedelta, timezone
from typing import Any

SEED = 2023
COUNT = 3000

STYLES = [
    "watercolor", "ink wash", "oil painting", "pixel art", "cyberpunk", "steampunk", "ukiyo-e", "art nouveau",
    "film noir", "vaporwave", "low poly", "cel shading", "chibi", "impasto", "gouache", "line art", "sketch",
    "pastel", "neon", "retro anime", "90s anime", "comic book", "manga", "3d render", "claymation",
    "stained glass", "origami", "paper cut", "synthwave", "dark fantasy", "gothic", "baroque", "art deco",
    "isometric", "vintage photo", "polaroid", "cinematic", "analog film", "double exposure", "anime",
    "semi-realistic", "photorealistic", "flat color", "thick paint", "charcoal", "graffiti", "tarot card",
]
SUBJECTS = [
    "girl", "woman", "man", "boy", "knight", "samurai", "witch", "elf", "mecha", "robot", "dragon", "cat", "fox",
    "wolf", "castle", "city", "landscape", "forest", "spaceship", "car", "flower", "food", "interior",
    "architecture", "animal", "portrait", "warrior", "idol", "maid", "pirate", "ninja", "vampire", "angel",
    "demon", "mermaid", "cyborg", "princess", "detective", "alchemist", "animatronic",
]
OUTFITS = [
    "hanfu", "kimono", "qipao", "chinese dress", "school uniform", "armor", "plate armor", "wedding dress",
    "hoodie", "maid outfit", "techwear", "military uniform", "hanbok", "sailor uniform", "trench coat",
    "witch hat", "bunny ears", "kitsune mask", "steampunk goggles", "royal gown",
]
CONCEPTS = [
    "detail tweaker", "add detail", "hands fix", "better hands", "lighting", "bokeh", "depth of field",
    "color grading", "contrast slider", "age slider", "eye detail", "skin texture", "hair style",
    "glowing eyes", "rain", "snow", "sunset", "night sky", "fireworks", "cherry blossoms", "underwater",
    "animation", "animated sprites", "film grain", "lens flare", "dynamic pose", "expression sheet",
]
CHARACTERS = [
    "Aria Nightshade", "Kaede Mori", "Lumi Starfall", "Rin Aozora", "Mika Tsubame", "Sora Kurogane",
    "Yuki Hanabira", "Elowen Thorn", "Nova Vex", "Kira Amane", "Hana Shirogane", "Luca Moretti", "Ivy Calder",
    "Zara Quill", "Mei Lingxi", "Captain Brakka", "Old Man Tobias", "Professor Ashgrove", "Tiki the Fox",
]
SERIES = ["Starlight Academy", "Crimson Saga", "Neon Drift", "Azure Chronicle", "Iron Bloom", "Moonfall Tactics"]
#: (native, latin) names: Chinese, Japanese, Korean, Russian and accented Latin.
NATIVE = [
    ("水彩", "Suisai"), ("墨心", "MoXin"), ("汉服", "Hanfu"), ("细节调整", "Detail"), ("浮世絵", "Ukiyoe"),
    ("着物", "Kimono"), ("한복", "Hanbok"), ("수채화", "Suchaehwa"), ("古风", "Gufeng"), ("赛博朋克", "Cyber"),
    ("ドット絵", "Dotto"), ("アニメ塗り", "Anime-nuri"), ("Акварель", "Akvarel"), ("Ölgemälde", "Olbild"),
    ("Aquarelle", "Française"), ("Pintura a óleo", "Óleo"), ("Señorita", "Flamenco"), ("Ædelweiß", "Alpine"),
]
TAGS = [
    "anime", "style", "character", "concept", "clothing", "photorealistic", "realistic", "girl", "woman", "man",
    "landscape", "architecture", "cute", "armor", "chinese", "hanfu", "fantasy", "sci-fi", "art style",
    "background", "tool", "slider", "animal", "vehicle", "food", "pixel art", "watercolor", "cyberpunk",
    "horror", "retro", "game character", "meme", "objects", "poses", "lighting", "korean", "japanese", "cartoon",
]
TRIGGERS = [
    "1girl", "solo", "masterpiece", "best quality", "sks style", "ohwx", "wtrclr", "pxlart", "cbrpnk", "nvxstyle",
    "ink splash", "glowing", "from side", "looking at viewer", "full body", "upper body", "detailed background",
]
BASES = [
    ("SD 1.5", 58), ("SDXL 1.0", 12), ("Pony", 8), ("Illustrious", 4), ("SD 2.1 768", 3), ("SD 2.1", 1),
    ("SD 1.4", 2), ("Flux.1 D", 5), ("SDXL Turbo", 1), ("SD 3.5 Large", 1), ("Other", 5),
]
SYLLABLES = ["ka", "mi", "ro", "chi", "nyx", "el", "dra", "vo", "sa", "ku", "lin", "zen", "po", "ta", "rex", "mo"]
NAME_SHAPES = (
    "{style} Style", "{style} {subject}", "{character} ({series})", "{character} - {outfit}", "{concept}",
    "{concept} LoRA", "[{tag}] {style} {subject} v{n}", "{native} {latin}", "{native}{latin} LoRA",
    "{subject}_{style}_mix{n}", "{outfit} | {subject}", "{style} {concept} XL", "{character}", "{latin} {style}",
    "{subject} {outfit} ({style})", "Ultimate {concept} Slider", "{style}/{style2} blend",
)
DESCRIPTIONS = (
    "<p>A {style} LoRA trained on {n} images of {subject}s.</p><p>Recommended weight 0.6-0.8.</p>",
    "Use the trigger word <b>{trigger}</b>. Pairs well with {style2} and {concept}.",
    "Trained for {base}. Works for {subject} portraits; try it with {outfit}.",
    "{native}: {style} / {latin}. 请使用触发词 {trigger}.",
    "Great for {style} art, {subject} illustrations and {concept}. Feedback welcome!",
    "",
)


def _pick(rng: random.Random, weighted: list[tuple[str, int]]) -> str:
    return rng.choices([v for v, _ in weighted], weights=[w for _, w in weighted])[0]


def _hashes(rng: random.Random, size_kb: float) -> dict[str, str | None]:
    sha = f"{rng.getrandbits(256):064X}"
    return {
        "AutoV1": f"{rng.getrandbits(32):08X}" if size_kb >= 2048 else None,  # Civitai stores none below 2 MiB
        "AutoV2": sha[:10],
        "SHA256": sha,
        "CRC32": f"{rng.getrandbits(32):08X}",
        "BLAKE3": f"{rng.getrandbits(256):064X}",
    }


def _license(rng: random.Random) -> dict[str, Any]:
    return {
        "allowNoCredit": rng.random() < 0.7,
        "allowCommercialUse": rng.choice(["None", "Image", "Rent", "Sell"]),
        "allowDerivatives": rng.random() < 0.8,
        "allowDifferentLicense": rng.random() < 0.6,
    }


def _creator(rng: random.Random, i: int) -> str:
    name = "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 3)))
    return rng.choice([name, name.capitalize() + "Art", f"{name}_{i % 97}", f"{name}.ai", f"Studio{name.capitalize()}"])


class _Clock:
    """Distinct instants: every model's newest version gets its own minute of 2023."""

    def __init__(self, rng: random.Random, n: int) -> None:
        self.slots = rng.sample(range(60 * 24 * 365), n)
        self.start = datetime(2023, 1, 1, tzinfo=timezone.utc)

    def at(self, k: int) -> datetime:
        return self.start + timedelta(minutes=self.slots[k])


def _iso(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _versions(rng: random.Random, mid: int, slug: str, base: str, newest: datetime, trained: list[str]) -> list[dict]:
    out = []
    count = rng.choices([1, 2, 3], weights=[60, 28, 12])[0]
    for j in range(count):
        vid = mid * 10 + j
        size_kb = rng.choice([rng.uniform(600, 2000), rng.uniform(9000, 150_000)])
        files = [{
            "name": f"{slug}_v{count - j}.safetensors" if rng.random() < 0.95 else f"{slug}.pt",
            "sizeKB": round(size_kb, 4), "type": "Model", "format": "SafeTensor", "primary": True,
            "hashes": _hashes(rng, size_kb),
        }]
        if rng.random() < 0.08:
            files.append({"name": f"{slug}_dataset.zip", "sizeKB": 51234.5, "type": "Training Data",
                          "format": "Other", "hashes": _hashes(rng, 51234.5)})
        vbase = base if j == 0 or rng.random() < 0.8 else rng.choice(["SD 1.5", "SDXL 1.0"])
        out.append({
            "id": vid,
            "name": ["v1.0", "v2", "v3.5", "XL", "beta"][(count - j - 1) % 5] if rng.random() < 0.9 else f"epoch {rng.randint(5, 20)}",
            "baseModel": vbase,
            "trainedWords": trained if j == 0 else trained[:1],
            "createdAt": _iso(newest - timedelta(days=30 * j, minutes=rng.randint(1, 500) if j else 0)),
            "description": "",
            "files": files,
        })
    return out


def _model(mid: int, name: str, *, downloads: int, created: datetime, tags: list[str], trained: list[str],
           description: str, base: str, creator: Any, rng: random.Random, model_type: str = "LORA") -> dict[str, Any]:
    slug = "_".join(name.split())[:40] or str(mid)
    return {
        "id": mid,
        "name": name,
        "type": model_type,
        "nsfw": False,
        "tags": tags,
        "creator": creator,
        "description": description,
        "stats": {"downloadCount": downloads, "favoriteCount": downloads // rng.randint(8, 40),
                  "rating": round(rng.uniform(3.5, 5.0), 2), "ratingCount": downloads // rng.randint(200, 900)},
        "license": _license(rng),
        "versions": _versions(rng, mid, slug, base, created, trained),
    }


#: The hand-written records: (id, name, downloads, tags, trained words, description); see the module docstring.
PLANTED_SPECS: list[tuple[int, str, int, list[str], list[str], str]] = [
    (900001, "Velvet Lantern", 120, ["style"], [], "A soft glow."),
    (900002, "VELVET-LANTERN", 90, ["concept"], [], "Same name, other punctuation."),
    (900003, "Lantern of Velvet Nights [SDXL]", 80_000, ["style"], [], ""),
    (900004, "Velvet Lantern Style", 5_000, ["style", "anime"], [], ""),
    (900005, "velvet.lantern.v2", 3_000, [], ["vlntrn"], ""),
    (900006, "Night Market", 200_000, ["concept"], ["velvet lantern"], "Stalls at dusk."),
    (900007, "Velvet Glow", 50_000, ["lantern", "lighting"], [], ""),
    (900008, "Festival Lights", 1_000, ["velvet", "lantern"], [], ""),
    (900009, "Harbor at Dusk", 900_000, ["landscape"], ["harbor"], "<p>Boats under a velvet sky, each with a lantern.</p>"),
    (900010, "Velvet Skies", 700_000, ["landscape"], [], "Only one of the words."),
    (900011, "Velvet Paper Lanterns", 650_000, ["concept"], [], "Plural: no stemming."),
    # exact names that a more popular record contains as a part
    (900020, "Neon Noir", 450, ["style"], [], ""),
    (900021, "Neon Noir City XL", 820_000, ["style"], [], ""),
    (900022, "墨竹 Mozhu", 310, ["style", "chinese"], [], "水墨 ink bamboo"),
    (900023, "墨竹 Mozhu Ink Bamboo Deluxe", 610_000, ["style", "chinese"], [], ""),
    (900024, "Cute_girl_mix7", 15_000, ["girl", "cute"], ["mix7girl"], ""),
    # a trigger word that is the query, against the same word in a more popular description
    (900030, "Quiet Library", 2_200, ["interior"], ["qxlibrary"], ""),
    (900031, "Old Archives", 95_000, ["interior"], [], "A dusty room, not qxlibrary itself."),
]
PLANTED_IDS = [spec[0] for spec in PLANTED_SPECS]


def civitai_objects(n: int = COUNT, seed: int = SEED) -> list[dict[str, Any]]:
    """``n`` generated model objects (newest versions first, as the API lists them) plus :data:`PLANTED_SPECS`."""
    rng = random.Random(seed)
    planted_downloads = {spec[2] for spec in PLANTED_SPECS}
    clock = _Clock(rng, n + len(PLANTED_SPECS))
    ids = rng.sample(range(1000, 400_000), n)
    used_downloads: set[int] = set(planted_downloads)
    out = []
    for k in range(n):
        style, style2 = rng.sample(STYLES, 2)
        native, latin = rng.choice(NATIVE)
        fields = {
            "style": style, "style2": style2, "subject": rng.choice(SUBJECTS), "outfit": rng.choice(OUTFITS),
            "concept": rng.choice(CONCEPTS), "character": rng.choice(CHARACTERS), "series": rng.choice(SERIES),
            "native": native, "latin": latin, "tag": rng.choice(["SDXL", "SD1.5", "Pony", "LoCon"]),
            "n": rng.randint(1, 12),
        }
        shape = rng.choice(NAME_SHAPES)
        name = shape.format(**fields)
        if shape[0] == "{" and rng.random() < 0.3:
            name = name.title() if rng.random() < 0.5 else name.lower()
        downloads = int(10 ** rng.uniform(0.5, 5.8))
        while downloads in used_downloads:
            downloads += 1
        used_downloads.add(downloads)
        tags = rng.sample(TAGS, rng.randint(1, 5))
        if fields["style"] in TAGS and rng.random() < 0.5:
            tags.append(fields["style"])
        trained = rng.sample(TRIGGERS, rng.randint(0, 3))
        if rng.random() < 0.3:
            trained.append(fields["outfit"] if rng.random() < 0.5 else fields["character"].split()[0].lower())
        description = rng.choice(DESCRIPTIONS).format(**fields, trigger=(trained or ["none"])[0],
                                                      base=_pick(rng, BASES))
        creator = _creator(rng, k)
        out.append(_model(
            ids[k], name, downloads=downloads, created=clock.at(k), tags=tags, trained=trained,
            description=description, base=_pick(rng, BASES), rng=rng,
            creator={"username": creator} if rng.random() < 0.5 else creator,
            model_type="LoCon" if rng.random() < 0.1 else "LORA",
        ))
    for j, (mid, name, downloads, tags, trained, description) in enumerate(PLANTED_SPECS):
        out.append(_model(mid, name, downloads=downloads, created=clock.at(n + j), tags=tags, trained=trained,
                          description=description, base="SD 1.5", creator="planted_author", rng=rng))
    return out


def records(n: int = COUNT, seed: int = SEED) -> list[Any]:
    """The corpus as :class:`lorahub.schemas.registry.AdapterRecord` objects (through lorahub's Civitai importer)."""
    from lorahub.registry.sources.records import civitai_to_record

    return [civitai_to_record(obj) for obj in civitai_objects(n, seed)]


def digest(objects: list[dict[str, Any]]) -> str:
    """A short fingerprint of a corpus (to show that the same seed gives the same corpus)."""
    import json

    return hashlib.sha256(json.dumps(objects, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]


__all__ = ["COUNT", "PLANTED_IDS", "PLANTED_SPECS", "SEED", "civitai_objects", "digest", "records"]
