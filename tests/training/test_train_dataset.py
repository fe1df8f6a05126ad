"""Datasets as people have them: kohya folders, imagefolders, odd image modes, broken files."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from lorahub.errors import DatasetError, UsageError
from lorahub.training.config import (
    dumps_config,
    load_config_file,
    make_config,
    merge_resume,
    read_config,
    save_config,
)
from lorahub.training.dataset import (
    BatchStream,
    epoch_batches,
    load_pixels,
    make_buckets,
    pick_bucket,
    scan_dataset,
    training_caption,
    with_trigger,
)

Image = pytest.importorskip("PIL.Image")


def png(path: Path, size=(64, 64), color=(200, 30, 30), mode="RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path)
    return path


def test_kohya_repeat_folders_captions_and_fallbacks(tmp_path: Path) -> None:
    png(tmp_path / "10_mystyle" / "a.png")
    (tmp_path / "10_mystyle" / "a.txt").write_text("a red square, flat\n\nsecond line ignored\n")
    png(tmp_path / "10_mystyle" / "b.png")  # no caption: the folder's class token
    png(tmp_path / "3_other thing" / "c.jpg")
    png(tmp_path / "loose.png")
    (tmp_path / "loose.txt").write_text("\ufeffloose   image")  # BOM and extra spaces
    (tmp_path / "notes.txt").write_text("not a caption of anything")
    (tmp_path / ".hidden").mkdir()
    png(tmp_path / ".hidden" / "skip.png")

    ds = scan_dataset(tmp_path, resolution=64)
    by_name = {it.path.name: it for it in ds.items}
    assert set(by_name) == {"a.png", "b.png", "c.jpg", "loose.png"}
    assert by_name["a.png"].repeats == 10 and by_name["a.png"].caption == "a red square, flat"
    assert by_name["a.png"].caption_source == "file"
    assert by_name["b.png"].caption == "mystyle" and by_name["b.png"].caption_source == "folder"
    assert by_name["c.jpg"].repeats == 3 and by_name["c.jpg"].caption == "other thing"
    assert by_name["loose.png"].repeats == 1 and by_name["loose.png"].caption == "loose image"
    assert ds.num_images == 4 and ds.num_train_images == 10 + 10 + 3 + 1
    assert ds.folders() == {
        "10_mystyle": {"n_repeats": 10, "img_count": 2},
        "3_other thing": {"n_repeats": 3, "img_count": 1},
        tmp_path.name: {"n_repeats": 1, "img_count": 1},
    }
    assert ds.tag_frequency()["10_mystyle"] == {"a red square": 1, "flat": 1, "mystyle": 1}


def test_trigger_goes_first_and_fills_missing_captions(tmp_path: Path) -> None:
    png(tmp_path / "5_x" / "a.png")
    (tmp_path / "5_x" / "a.txt").write_text("flat, Mystyle, red")
    png(tmp_path / "5_x" / "b.png")
    (tmp_path / "5_x" / "b.txt").write_text("a painting")
    png(tmp_path / "5_x" / "c.png")
    ds = scan_dataset(tmp_path, trigger="mystyle", resolution=64)
    caps = {it.path.name: it.caption for it in ds.items}
    assert caps == {"a.png": "mystyle, flat, red", "b.png": "mystyle, a painting", "c.png": "mystyle"}
    assert {it.path.name: it.caption_source for it in ds.items}["c.png"] == "trigger"
    assert with_trigger("a mystyle painting", "mystyle") == "a mystyle painting"  # already in the prose
    assert with_trigger("", "t") == "t"
    assert with_trigger("x", None) == "x"


def test_tag_shuffle_keeps_trigger_and_first_tokens_and_dropout() -> None:
    cap = "trig, one, two, three, four, five"
    seen = set()
    for seed in range(40):
        out = training_caption(cap, random.Random(seed), trigger="trig", shuffle_tags=True, keep_tokens=2)
        tags = out.split(", ")
        assert tags[:2] == ["trig", "one"]
        assert sorted(tags) == sorted(cap.split(", "))
        seen.add(out)
    assert len(seen) > 5  # it really shuffles
    # the trigger is moved to the front even when it is not the first tag
    out = training_caption("a, b, trig, c", random.Random(1), trigger="trig", shuffle_tags=True, keep_tokens=1)
    assert out.split(", ")[0] == "trig"
    # dropout: about the asked share of empty captions, deterministic per rng
    rng = random.Random(0)
    drops = sum(training_caption(cap, rng, caption_dropout=0.25) == "" for _ in range(2000))
    assert 400 < drops < 600
    assert training_caption(cap, random.Random(3), caption_dropout=0.0) == cap


def test_rgba_grayscale_palette_16bit_and_cmyk_become_rgb(tmp_path: Path) -> None:
    d = tmp_path / "data"
    rgba = Image.new("RGBA", (64, 64), (255, 0, 0, 255))
    for x in range(32):
        for y in range(64):
            rgba.putpixel((x, y), (0, 0, 0, 0))  # left half fully transparent
    d.mkdir()
    rgba.save(d / "rgba.png")
    png(d / "gray.png", color=77, mode="L")
    png(d / "la.png", color=(10, 0), mode="LA")  # fully transparent gray -> white
    pal = Image.new("P", (64, 64), 0)
    pal.putpalette([0, 200, 0] + [0, 0, 0] * 255)
    pal.save(d / "palette.png")
    Image.new("I;16", (64, 64), 65535).save(d / "deep.png")
    Image.new("CMYK", (64, 64), (0, 255, 255, 0)).save(d / "cmyk.jpg")
    ds = scan_dataset(d, trigger="t", resolution=64)
    modes = {it.path.name: it.mode for it in ds.items}
    assert modes["rgba.png"] == "RGBA" and modes["gray.png"] == "L" and modes["palette.png"] == "P"
    px = {it.path.name: load_pixels(it) for it in ds.items}
    for name, arr in px.items():
        assert arr.shape == (64, 64, 3) and arr.dtype.name == "uint8", name
    assert tuple(px["rgba.png"][10, 5]) == (255, 255, 255)  # transparent -> white background
    assert tuple(px["rgba.png"][10, 50]) == (255, 0, 0)
    assert tuple(px["gray.png"][0, 0]) == (77, 77, 77)
    assert tuple(px["la.png"][0, 0]) == (255, 255, 255)
    assert tuple(px["palette.png"][0, 0]) == (0, 200, 0)
    assert tuple(px["deep.png"][0, 0]) == (255, 255, 255)
    r, g, b = px["cmyk.jpg"][32, 32]
    assert r > 200 and g < 60 and b < 60


def test_mixed_sizes_use_aspect_buckets_or_center_crop(tmp_path: Path) -> None:
    d = tmp_path / "d"
    wide = Image.new("RGB", (400, 200), (0, 0, 255))
    for x in range(180, 220):  # a red stripe in the middle survives the crop
        for y in range(200):
            wide.putpixel((x, y), (255, 0, 0))
    d.mkdir()
    wide.save(d / "wide.png")
    png(d / "tall.png", size=(90, 300))
    png(d / "square.png", size=(1000, 1000))
    buckets = make_buckets(128)
    assert (128, 128) in buckets and all(w % 64 == 0 and h % 64 == 0 for w, h in buckets)
    assert all(w * h <= 128 * 128 for w, h in buckets)
    ds = scan_dataset(d, trigger="t", resolution=128)
    b = {it.path.name: it.bucket for it in ds.items}
    assert b["square.png"] == (128, 128)
    assert b["wide.png"][0] > b["wide.png"][1] and b["tall.png"][0] < b["tall.png"][1]
    assert pick_bucket(400, 200, buckets) == b["wide.png"]
    arrays = {it.path.name: load_pixels(it) for it in ds.items}
    w, h = b["wide.png"]
    assert arrays["wide.png"].shape == (h, w, 3)
    assert tuple(arrays["wide.png"][h // 2, w // 2]) == (255, 0, 0)
    # without buckets everything is a center-cropped square
    ds2 = scan_dataset(d, trigger="t", resolution=128, buckets=False)
    assert {it.bucket for it in ds2.items} == {(128, 128)}
    arr = load_pixels(next(it for it in ds2.items if it.path.name == "wide.png"))
    assert arr.shape == (128, 128, 3) and tuple(arr[64, 64]) == (255, 0, 0)
    assert ds.bucket_info()["buckets"]


def test_imagefolder_metadata_jsonl(tmp_path: Path) -> None:
    d = tmp_path / "hf"
    png(d / "images" / "one.png")
    png(d / "images" / "two.png")
    png(d / "three.png")
    rows = [
        {"file_name": "images/one.png", "text": "first caption"},
        {"file_name": "images/two.png", "caption": "from another column"},
        {"file_name": "three.png"},
        {"file_name": "gone.png", "text": "missing file"},
    ]
    (d / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    ds = scan_dataset(d, trigger="trig", resolution=64)
    assert ds.layout == "imagefolder"
    caps = {it.path.name: it.caption for it in ds.items}
    assert caps == {"one.png": "trig, first caption", "two.png": "trig, from another column", "three.png": "trig"}
    assert any("gone.png" in w for w in ds.warnings)
    # the train/ split folder of an imagefolder
    split = tmp_path / "split"
    png(split / "train" / "x.png")
    (split / "train" / "metadata.jsonl").write_text(json.dumps({"file_name": "x.png", "text": "ex"}) + "\n")
    assert [it.caption for it in scan_dataset(split, resolution=64).items] == ["ex"]
    # a file_name escaping the folder is refused
    bad = tmp_path / "bad"
    png(tmp_path / "outside.png")
    bad.mkdir()
    (bad / "metadata.jsonl").write_text(json.dumps({"file_name": "../outside.png", "text": "x"}) + "\n")
    with pytest.raises(DatasetError, match="outside"):
        scan_dataset(bad, resolution=64)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "metadata.jsonl").write_text("{not json\n")
    with pytest.raises(DatasetError, match="not a JSON object"):
        scan_dataset(broken, resolution=64)


def test_empty_missing_and_unreadable_datasets(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no such dataset folder"):
        scan_dataset(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no images"):
        scan_dataset(tmp_path / "empty")
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "a.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not really a png")
    (junk / "b.jpg").write_bytes(b"")
    with pytest.raises(DatasetError, match="none of its 2 image"):
        scan_dataset(junk)
    png(junk / "ok.png")
    ds = scan_dataset(junk, trigger="t", resolution=64)
    assert [it.path.name for it in ds.items] == ["ok.png"]
    assert sum("unreadable" in w for w in ds.warnings) == 2
    f = tmp_path / "file.png"
    png(f)
    with pytest.raises(DatasetError, match="not a file"):
        scan_dataset(f)


def test_bad_dataset_fails_before_any_model_is_loaded(tmp_path: Path, lorahub_home: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import lorahub.base.resolve as resolve
    from lorahub.schemas.training import TrainConfig
    from lorahub.training.trainer import train

    def boom(*_a, **_k):  # noqa: ANN002, ANN003
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(resolve, "load_pipeline", boom)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError):
        train(TrainConfig(data=str(tmp_path / "empty"), out=str(tmp_path / "out"), steps=1), progress=False)
    assert not (lorahub_home / "models").exists(), "the embedded model was built for a bad dataset"
    assert not (tmp_path / "out").exists(), "the output folder was created for a bad dataset"


def test_epoch_order_is_deterministic_and_counts_repeats(tmp_path: Path) -> None:
    png(tmp_path / "4_a" / "x.png")
    png(tmp_path / "1_b" / "y.png")
    png(tmp_path / "1_b" / "z.png")
    ds = scan_dataset(tmp_path, trigger="t", resolution=64)
    e0 = epoch_batches(ds, 0, 2, seed=7)
    assert e0 == epoch_batches(ds, 0, 2, seed=7)
    assert e0 != epoch_batches(ds, 1, 2, seed=7) or e0 != epoch_batches(ds, 0, 2, seed=8)
    flat = sorted(i for b in e0 for i in b)
    counts = {i: flat.count(i) for i in set(flat)}
    assert sorted(counts.values()) == [1, 1, 4]
    stream = BatchStream(ds, 2, 7)
    assert stream.batches_per_epoch == 3
    assert stream.at(4) == (1, epoch_batches(ds, 1, 2, 7)[1])


def test_config_toml_roundtrip_and_resume_rules(tmp_path: Path) -> None:
    cfg = make_config({
        "data": "d", "out": "o", "trigger": 'my "style"\\ é\n', "rank": 8, "alpha": 4.5, "lr": 1e-5,
        "sample_prompts": ["a, b", "c"], "export": ["kohya"], "snr_gamma": 5.0,
    })
    text = dumps_config(cfg, header="hello")
    assert text.startswith("# hello\n[train]\n")
    path = save_config(cfg, tmp_path / "c.toml")
    assert read_config(path) == cfg
    assert load_config_file(path)["rank"] == 8
    # a file without the [train] table works too
    (tmp_path / "flat.toml").write_text('data = "x"\nsteps = 3\n')
    assert read_config(tmp_path / "flat.toml").steps == 3
    with pytest.raises(UsageError, match="unknown setting"):
        make_config({"rnak": 3})
    with pytest.raises(UsageError, match="multiple of 64"):
        make_config({"resolution": 100})
    (tmp_path / "bad.toml").write_text("steps = = 3")
    with pytest.raises(UsageError, match="not valid TOML"):
        read_config(tmp_path / "bad.toml")
    # resuming may extend the run but not change what it trains
    assert merge_resume(cfg, {"steps": 5000, "rank": 8}).steps == 5000
    with pytest.raises(UsageError, match="rank"):
        merge_resume(cfg, {"rank": 16})
