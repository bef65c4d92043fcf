"""Image folders as people have them: layouts, mixed sizes and modes, unreadable files, no test split."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dsink.config import DataConfig
from dsink.data import build_data, describe
from dsink.data.images import ImageFiles, decode_image, load_image_folder, scan_folder
from dsink.data.loader import STREAM_ABOVE_BYTES, StreamInputs, choose_backend, decode_all
from dsink.errors import InputError

MODES = ("RGB", "L", "RGBA", "P")
EXTS = (".png", ".jpg", ".webp")


def make_folder(root, counts=(12, 12, 4), names=("cat", "dog", "eel"), seed=0, sizes=(20, 48)):
    """Class subfolders of images of mixed sizes, modes and formats; returns the folder."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for c, (name, n) in enumerate(zip(names, counts)):
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            h, w = rng.integers(sizes[0], sizes[1], 2)
            a = rng.integers(0, 40, (h, w, 3), dtype=np.uint8)
            a[..., c % 3] += 200
            im = Image.fromarray(a).convert(MODES[i % 4])
            ext = EXTS[i % 3]
            if ext == ".jpg" and im.mode in ("RGBA", "P"):
                im = im.convert("RGB")
            im.save(d / f"{i:03d}{ext}")
    return root


def test_decode_converts_every_mode_and_resizes(tmp_path):
    from PIL import Image

    a = np.zeros((30, 50, 4), np.uint8)
    a[..., 0] = 255
    a[..., 3] = 0  # fully transparent red: composited on white
    Image.fromarray(a, "RGBA").save(tmp_path / "t.png")
    out = decode_image(str(tmp_path / "t.png"), 16)
    assert out.shape == (3, 16, 16) and out.dtype == np.uint8 and (out == 255).all()
    Image.fromarray(np.full((10, 20), 7, np.uint8), "L").save(tmp_path / "g.png")
    g = decode_image(str(tmp_path / "g.png"), 0)
    assert g.shape == (3, 10, 20) and (g == 7).all()
    Image.fromarray(np.full((10, 10), 1000, np.uint16)).save(tmp_path / "deep.png")
    assert decode_image(str(tmp_path / "deep.png"), 8).max() == 255  # 16-bit scaled to 8 bits


def test_class_subfolders(tmp_path):
    root = make_folder(tmp_path / "photos")
    (root / "cat" / "notes.txt").write_text("not an image")
    (root / ".hidden").mkdir()
    src = load_image_folder(root, image_size=16)
    assert src.class_names == ["cat", "dog", "eel"]
    assert src.train_labels.tolist() == [0] * 12 + [1] * 12 + [2] * 4
    assert isinstance(src.train_x, ImageFiles) and src.train_x.shape == (28, 3, 16, 16)
    assert not src.has_test and src.val_mask is None
    x = src.train_x[5]
    assert x.shape == (3, 16, 16) and x.dtype == np.uint8
    assert all(p.endswith((".png", ".jpg", ".webp")) for p in src.train_x.paths)


def test_train_val_test_layout_keeps_the_folders_splits(tmp_path):
    root = tmp_path / "data"
    make_folder(root / "train", counts=(20, 20, 8))
    make_folder(root / "val", counts=(3, 3, 2), seed=1)
    make_folder(root / "test", counts=(4, 4, 4), seed=2)
    src = load_image_folder(root, image_size=8)
    assert len(src.train_labels) == 56 and src.val_mask.sum() == 8 and src.has_test and len(src.test_labels) == 12
    cfg = DataConfig(dataset="image_folder", root=str(root), image_size=8, imbalance_ratio=1, noise_mode="none",
                     cache_dir=str(tmp_path / "cache"))
    data = build_data(cfg)
    assert len(data.val_y) == 8 and len(data.train_y) == 48 and len(data.test_y) == 12
    assert all("/val/" in p for p in data.val_x.paths) and all("/train/" in p for p in data.train_x.paths)


def test_mixed_sizes_need_an_image_size(tmp_path):
    root = make_folder(tmp_path / "photos")
    with pytest.raises(InputError, match="different sizes") as e:
        load_image_folder(root)
    assert "data.image_size" in str(e.value) and "photos" in str(e.value)


def test_unreadable_files_are_named_or_skipped(tmp_path, caplog):
    root = make_folder(tmp_path / "photos")
    bad = root / "dog" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    src = load_image_folder(root, image_size=8)  # nothing decoded yet
    with pytest.raises(InputError, match="broken.jpg") as e:
        decode_all(src.train_x, workers=0)
    assert "data.skip_unreadable=true" in str(e.value)
    stream = StreamInputs(src.train_x, torch.device("cpu"), workers=2)
    with pytest.raises(InputError, match="broken.jpg"):
        list(stream.iterate([torch.arange(len(src.train_x))]))
    src = load_image_folder(root, image_size=8, skip_unreadable=True)
    assert len(src.train_labels) == 28 and not any("broken" in p for p in src.train_x.paths)
    assert "broken.jpg" in caplog.text


@pytest.mark.parametrize("layout,needle", [
    ("missing", "not found; set data.root"),
    ("empty", "holds no class subfolders"),
    ("no_images", "holds no image files"),
    ("val_only", "but no train/"),
])
def test_folder_layout_errors(tmp_path, layout, needle):
    root = tmp_path / "d"
    if layout != "missing":
        root.mkdir()
    if layout == "no_images":
        (root / "cat").mkdir()
        (root / "cat" / "a.txt").write_text("x")
    if layout == "val_only":
        make_folder(root / "val")
    with pytest.raises(InputError, match=needle):
        scan_folder(root)


def test_no_test_and_no_validation_is_refused(tmp_path):
    root = make_folder(tmp_path / "photos")
    cfg = DataConfig(dataset="image_folder", root=str(root), image_size=8, imbalance_ratio=1, noise_mode="none",
                     val_fraction=0.0, cache_dir=str(tmp_path / "cache"))
    with pytest.raises(InputError, match="no clean test split and no validation split"):
        build_data(cfg)


def test_describe_reports_histogram_imbalance_and_the_size_mode_mix(tmp_path):
    root = make_folder(tmp_path / "photos")
    d = describe(DataConfig(dataset="image_folder", root=str(root), image_size=16, imbalance_ratio=1,
                            noise_mode="none", cache_dir=str(tmp_path / "cache")))
    assert d["given_counts"] == [12, 12, 4] and d["given_imbalance_ratio"] == 3.0
    assert d["num_test"] == 0 and "noisy validation split" in d["test"]
    im = d["images"]
    assert im["num_files"] == 28 and set(im["modes"]) == set(MODES) and set(im["formats"]) == {"PNG", "JPEG", "WEBP"}
    assert im["num_unreadable"] == 0 and im["distinct_sizes"] > 1


def test_backend_rule():
    small = ImageFiles(["a.png"] * 10, 32)
    big = ImageFiles(["a.png"] * (STREAM_ABOVE_BYTES // (3 * 32 * 32) + 1), 32)
    arr = np.zeros((4, 3, 8, 8), np.uint8)
    assert choose_backend([small], None) == "memory" and choose_backend([big], None) == "stream"
    assert choose_backend([arr], None) == "memory" and choose_backend([arr], True) == "stream"
    assert choose_backend([big], False) == "memory"


def test_decode_to_one_channel_for_grayscale_models(tmp_path):
    from PIL import Image

    a = np.zeros((30, 50, 3), np.uint8)
    a[..., 1] = 255  # pure green: luminance 150
    Image.fromarray(a).save(tmp_path / "g.png")
    out = decode_image(str(tmp_path / "g.png"), 16, channels=1)
    assert out.shape == (1, 16, 16) and out.dtype == np.uint8 and (out == 150).all()
    files = ImageFiles([str(tmp_path / "g.png")] * 3, 16, channels=1)
    assert files.shape == (3, 1, 16, 16) and files[1:].shape == (2, 1, 16, 16) and files[0].shape == (1, 16, 16)


def _loop_folder(tmp_path):
    root = make_folder(tmp_path / "photos", counts=(3, 2, 2))
    (root / "cat" / "loop").symlink_to("..")  # points back at photos/: every class again, as "cat"
    (root / "dog" / "up").symlink_to("../..")  # a second loop, above the scanned folder
    elsewhere = make_folder(tmp_path / "elsewhere", counts=(2,), names=("fox",))
    (root / "fox").symlink_to(elsewhere / "fox")  # a class folder kept elsewhere: read
    (elsewhere / "fox" / "back").symlink_to("..")  # a loop inside it: skipped
    (root / "eel" / "more").symlink_to(root / "dog")  # the same folder twice: read once, as dog
    return root


def test_symlink_loops_are_read_once_and_named(tmp_path, caplog):
    root = _loop_folder(tmp_path)
    with caplog.at_level("WARNING"):
        table = scan_folder(root)
    assert table.class_names == ["cat", "dog", "eel", "fox"]
    assert np.bincount(table.labels).tolist() == [3, 2, 2, 2]  # each image once, under its own class
    assert len(set(table.paths)) == len(table.paths)
    for link in ("cat/loop", "dog/up", "fox/back", "eel/more"):
        assert str(root / link) in caplog.text, link
    assert "symbolic link" in caplog.text


def test_predict_of_a_folder_with_loops_reads_each_image_once(tmp_path, caplog):
    from dsink.data.images import image_files_under

    root = _loop_folder(tmp_path)
    with caplog.at_level("WARNING"):
        files = image_files_under(root)
    assert len(files) == 9 and len(set(files)) == 9 and "cat/loop" in caplog.text


def test_predict_with_a_one_channel_run_on_a_photo_folder(tmp_path, capsys, monkeypatch, caplog):
    """A Fashion-MNIST run (1 channel, 28x28) labels RGB/RGBA/P/L photos of any size; an unreadable photo gets
    a hint that dsink predict accepts (--skip-unreadable), which then works."""
    import csv

    from dsink.cli import main

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    run = tmp_path / "fm"
    sets = ["data.n_max=30", "data.imbalance_ratio=1", "model.name=mlp", "optim.epochs=1", "optim.batch_size=64"]
    assert main(["train", *[a for s in sets for a in ("--set", s)], "--out", str(run), "-q"]) == 0
    photos = make_folder(tmp_path / "photos", counts=(3, 2, 2))
    out = tmp_path / "p.csv"
    assert main(["predict", str(run), "--data", str(photos), "--out", str(out), "-q"]) == 0
    with open(out) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 7 and all(abs(sum(float(r[f"p_{c}"]) for c in ("T-shirt/top", "Trouser", "Pullover", "Dress",
                                  "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")) - 1) < 1e-4 for r in rows)
    (photos / "dog" / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    capsys.readouterr()
    code = main(["predict", str(run), "--data", str(photos), "--out", str(out), "-q"])
    err = capsys.readouterr().err
    assert code == 2 and "broken.jpg" in err and "--skip-unreadable" in err and "data.skip_unreadable" not in err
    assert "Traceback" not in err
    with open(out) as f:
        assert len(list(csv.DictReader(f))) == 7  # the earlier CSV is untouched
    with caplog.at_level("WARNING"):
        assert main(["predict", str(run), "--data", str(photos), "--out", str(out), "--skip-unreadable", "-q"]) == 0
    assert "broken.jpg" in caplog.text and "skipping 1 unreadable image(s) (--skip-unreadable)" in caplog.text
    with open(out) as f:
        assert len(list(csv.DictReader(f))) == 7
