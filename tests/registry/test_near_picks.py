"""`dupes --near` candidates from module picks (issue 18): a module subset keeping little of the original's
energy has a low vector cosine (sqrt of the share it keeps), which neither the exact product nor the
hashed vectors reach; the picks (min-hashing over module names, keyed by the signs of the picked module's
unit sketch) do, and unrelated adapters of one layout stay apart."""

from __future__ import annotations

import numpy as np

from lorahub.adapters import sketch as sk

MODULES = 40


def _sketches(seed: int = 7, others: int = 300) -> tuple[list[sk.Sketch], int, int]:
    """One original, its subset of the 20 of its 40 modules that change least (8% of its energy), ``others``
    unrelated adapters of the same layout: ``(sketches, index of the original, index of the subset)``."""
    rng = np.random.default_rng(seed)
    keys = [f"unet/down_blocks_0_attentions_0_transformer_blocks_{i}_attn1_to_q" for i in range(MODULES)]

    def make(norms: np.ndarray, units: np.ndarray, take: np.ndarray) -> sk.Sketch:
        return sk.build({keys[i]: (units[i], float(norms[i])) for i in take})

    def random() -> tuple[np.ndarray, np.ndarray]:
        u = rng.standard_normal((MODULES, sk.K * sk.K))
        return rng.uniform(0.5, 1.0, MODULES), u / np.linalg.norm(u, axis=1, keepdims=True)

    norms, units = random()
    norms[:20] = 0.3 * norms[:20]
    everything = np.arange(MODULES)
    out = [make(norms, units, everything), make(norms, units, everything[:20])]
    for _ in range(others):
        out.append(make(*random(), everything))
    return out, 0, 1


def test_picks_find_a_small_subset_the_vectors_miss() -> None:
    from lorahub.registry import near

    sketches, o, s = _sketches()
    vectors = np.stack([x.vector.astype(np.float32) for x in sketches])
    assert float(vectors[o] @ vectors[s]) < near.CANDIDATE  # about sqrt(0.08)
    picked = [sk.picks(x) for x in sketches]
    hashes = np.stack([p[0] for p in picked])
    units = np.stack([p[1] for p in picked])
    for limit in (0, 10_000):  # hashed and exact vector candidates
        plain = {tuple(p) for p in near.candidate_pairs(vectors, exact_limit=limit).tolist()}
        assert (o, s) not in plain
        both = {tuple(p) for p in near.candidate_pairs(vectors, exact_limit=limit, pick_hashes=hashes,
                                                       pick_units=units).tolist()}
        assert (o, s) in both
        assert len(both - plain) < 10, both - plain  # unrelated adapters of one layout rarely collide
    assert sk.compare(sketches[o], sketches[s]).similarity > 0.999


def test_near_dupes_pairs_the_subset_and_picks_rows_stored_without_picks(registry) -> None:  # noqa: ANN001
    from lorahub.registry.drafts import AdapterDraft, FileDraft, VersionDraft
    from lorahub.registry.rows import sketch_row

    sketches, o, s = _sketches(others=30)
    drafts = []
    for i, x in enumerate(sketches):
        f = FileDraft(filename=f"a{i}.safetensors", format="kohya-lora", base_family="sd1", rank=8, dtype="float16",
                      hashes={"sha256": f"{i:064x}"}, sketch=x.to_bytes(), is_primary=True)
        drafts.append(AdapterDraft(source_kind="record", source_key=f"record:t:{i}", name=f"a{i}", base_family="sd1",
                                   versions=[VersionDraft(base_family="sd1", files=[f])]))
    registry.upsert(drafts)
    assert len(sketch_row("0" * 64, sketches[o].to_bytes(), None)["vector"]) == sk.SUMMARY_BYTES

    def groups() -> list[list[str]]:
        return [sorted([g.reference.adapter.name] + [m.adapter.name for m in g.members]) for g in registry.near_dupes()]

    assert groups() == [["a0", "a1"]]
    got = registry.near_dupes()[0].members[0]
    assert "module-subset" in got.relations and got.coverage == 1.0
