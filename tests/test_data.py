import pickle

import numpy as np
import pytest
from PIL import Image

from sslviz.engine import data
from sslviz.engine.data import BUILTIN, Dataset, DatasetError, default_counts, load_dataset

COLORS = {"cat": (255, 0, 0), "dog": (0, 255, 0), "owl": (0, 0, 255)}


def write_png(path, color, size=(4, 4), mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.zeros((size[1], size[0], 3), np.uint8) + np.array(color, np.uint8)
    Image.fromarray(pixels).convert(mode).save(path)


def make_folder(root, train_per_class=3, test_per_class=1, classes=tuple(COLORS)):
    for split, n in (("train", train_per_class), ("test", test_per_class)):
        for c in classes:
            for i in range(n):
                write_png(root / split / c / f"{i:03d}.png", COLORS[c])
    return root


# --- built-ins ------------------------------------------------------------------


def test_digits_shapes_dtypes_and_balanced_test_set():
    ds = load_dataset("digits")
    assert ds.kind == "image" and ds.name == "digits" and not ds.hflip
    assert ds.x_train.dtype == np.uint8 and ds.x_train.shape[1:] == (1, 8, 8)
    assert ds.input_shape == (1, 8, 8) and ds.num_classes == 10
    assert ds.y_train.dtype == np.int64 and ds.y_test.dtype == np.int64
    assert ds.class_names == tuple("0123456789")
    assert np.bincount(ds.y_test).tolist() == [50] * 10
    assert np.bincount(ds.y_val).tolist() == [30] * 10  # balanced validation, held out of training
    assert len(ds.y_train) + len(ds.y_val) + len(ds.y_test) == 1797
    assert ds.x_train.max() == 255  # 16 maps to 255


def test_digits_read_with_numpy_equal_sklearns_load_digits():
    """``_load_digits`` reads sklearn's CSV itself (no sklearn import on the first paint): same pixels, labels."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    ds = load_dataset("digits")
    x = np.concatenate([ds.x_train, ds.x_val, ds.x_test]).reshape(len(bunch.target), -1)
    y = np.concatenate([ds.y_train, ds.y_val, ds.y_test])
    expected = np.round(bunch.data * 255 / 16).astype(np.uint8)
    # Rows are regrouped into train/val/test; compare as sorted (pixels, label) rows.
    got = np.column_stack([x, y])
    want = np.column_stack([expected, bunch.target])
    np.testing.assert_array_equal(got[np.lexsort(got.T[::-1])], want[np.lexsort(want.T[::-1])])


def test_digits_test_set_is_fixed():
    a, b = load_dataset("digits"), load_dataset("digits")
    np.testing.assert_array_equal(a.x_test, b.x_test)
    np.testing.assert_array_equal(a.y_train, b.y_train)


def test_toy2d_is_deterministic_points():
    a, b = load_dataset("toy2d"), load_dataset("toy2d")
    assert a.kind == "points" and a.input_shape == (2,) and a.num_classes == 6
    assert a.x_train.dtype == np.float32 and a.x_train.shape == (3000, 2)
    assert a.x_val.shape == (600, 2) and a.x_test.shape == (1200, 2)
    assert np.bincount(a.y_train).tolist() == [500] * 6 and np.bincount(a.y_val).tolist() == [100] * 6
    assert np.bincount(a.y_test).tolist() == [200] * 6
    assert np.abs(a.x_train).max() < 4.5 and np.mean(np.abs(a.x_train) <= 3) > 0.99
    np.testing.assert_array_equal(a.x_train, b.x_train)


def test_builtin_names():
    assert BUILTIN == ("digits", "toy2d", "wordnet")


def test_validation_split_indices_are_disjoint():
    from sklearn.datasets import load_digits

    raw = load_digits().target
    ds = load_dataset("digits")
    # Counts add up per class: nothing of the validation set remains in the training pool.
    assert (np.bincount(ds.y_train) + np.bincount(ds.y_val) + np.bincount(ds.y_test) == np.bincount(raw)).all()
    np.testing.assert_array_equal(load_dataset("digits").x_val, ds.x_val)  # the same images for every run


@pytest.mark.parametrize("smallest, expected", [(5000, 500), (2000, 200), (9, 1)])
def test_folder_validation_size(smallest, expected):
    from sslviz.engine.data import validation_size

    assert validation_size("/some/folder", np.repeat([0, 1], [6000, smallest])) == expected


def test_default_counts():
    assert default_counts(load_dataset("digits")) == (50, 40)
    assert default_counts(load_dataset("toy2d")) == (100, 300)


@pytest.mark.parametrize("head, expected", [(5000, (1500, 3000)), (2000, (1500, 500)), (900, (900, 0))])
def test_default_counts_for_folders_are_capped_by_head_class(head, expected):
    y = np.repeat([0, 1], [head, 10])
    x = np.zeros((len(y), 3, 2, 2), np.uint8)
    ds = Dataset("/some/folder", "image", x, y, x[:1], y[:1], ("a", "b"), True)
    assert default_counts(ds) == expected


# --- ImageFolder ---------------------------------------------------------------------


def test_image_folder_loads(tmp_path):
    make_folder(tmp_path)
    write_png(tmp_path / "train" / "owl" / "gray.png", (9, 9, 9), mode="L")
    ds = load_dataset(str(tmp_path))
    assert ds.kind == "image" and ds.hflip
    assert ds.name == str(tmp_path.resolve())
    assert ds.class_names == ("cat", "dog", "owl")
    # 10 training images; one per class (smallest class 3 // 10, at least 1) is held out for validation.
    assert ds.x_train.dtype == np.uint8 and ds.x_train.shape == (7, 3, 4, 4) and ds.x_val.shape == (3, 3, 4, 4)
    assert ds.x_test.shape == (3, 3, 4, 4)
    assert ds.y_train.tolist() == [0, 0, 1, 1, 2, 2, 2] and ds.y_val.tolist() == [0, 1, 2]
    assert ds.y_test.dtype == np.int64 and ds.y_test.tolist() == [0, 1, 2]
    pixels = np.concatenate([ds.x_train, ds.x_val])[:, :, 0, 0].tolist()
    assert [255, 0, 0] in pixels and [9, 9, 9] in pixels  # grayscale became RGB


def test_image_folder_mixed_sizes_are_resized_to_32(tmp_path):
    make_folder(tmp_path)
    write_png(tmp_path / "test" / "dog" / "big.png", COLORS["dog"], size=(40, 20))
    ds = load_dataset(str(tmp_path))
    assert ds.input_shape == (3, 32, 32)
    assert ds.x_test.shape == (4, 3, 32, 32)


def test_image_folder_skips_files_without_an_image_extension_and_counts_them(tmp_path):
    make_folder(tmp_path)
    (tmp_path / "train" / "cat" / "README.txt").write_text("photos by me")
    (tmp_path / "test" / "dog" / "Thumbs.db").write_bytes(b"junk")
    ds = load_dataset(str(tmp_path))
    assert len(ds.x_train) + len(ds.x_val) == 9 and len(ds.x_test) == 3  # as without them
    assert sorted(ds.skipped) == ["test/dog/Thumbs.db", "train/cat/README.txt"]
    assert ds.skipped_note() == "Skipped 2 files without an image extension (train/cat/README.txt, test/dog/Thumbs.db)."
    assert load_dataset("digits").skipped_note() == ""


def test_image_folder_ignores_hidden_files(tmp_path):
    make_folder(tmp_path)
    (tmp_path / "train" / "cat" / ".DS_Store").write_bytes(b"junk")
    ds = load_dataset(str(tmp_path))
    assert len(ds.x_train) + len(ds.x_val) == 9


def test_cache_hit_skips_decoding(tmp_path, monkeypatch):
    root, cache = make_folder(tmp_path / "ds"), tmp_path / "cache"
    first = load_dataset(str(root), cache_dir=cache)
    assert len(list(cache.glob("*.npz"))) == 1

    def fail(*args):
        raise AssertionError("decoded despite a cache hit")

    monkeypatch.setattr(data, "_decode_image", fail)
    second = load_dataset(str(root), cache_dir=cache)
    np.testing.assert_array_equal(first.x_train, second.x_train)
    np.testing.assert_array_equal(first.y_test, second.y_test)
    assert second.class_names == first.class_names

    # Any change to the file list invalidates the cache.
    write_png(root / "train" / "cat" / "new.png", COLORS["cat"])
    with pytest.raises(AssertionError, match="decoded despite"):
        load_dataset(str(root), cache_dir=cache)


def test_corrupt_cache_is_rebuilt(tmp_path):
    root, cache = make_folder(tmp_path / "ds"), tmp_path / "cache"
    load_dataset(str(root), cache_dir=cache)
    (npz,) = cache.glob("*.npz")
    npz.write_bytes(b"not a zip")
    ds = load_dataset(str(root), cache_dir=cache)
    assert ds.x_train.shape == (6, 3, 4, 4) and ds.x_val.shape == (3, 3, 4, 4)


# --- CIFAR-10 pickles ------------------------------------------------------------------


def write_cifar(folder, per_batch=4):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {
            b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
            b"labels": list(range(per_batch)),
        }
        (folder / name).write_bytes(pickle.dumps(batch))
    meta = {b"label_names": [b"airplane", b"automobile", b"bird", b"cat"]}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta))


def test_cifar_pickle_folder(tmp_path):
    write_cifar(tmp_path / "cifar-10-batches-py")
    ds = load_dataset(str(tmp_path))
    assert ds.hflip and ds.kind == "image"
    assert ds.x_train.shape == (16, 3, 32, 32) and ds.x_val.shape == (4, 3, 32, 32) and ds.x_train.dtype == np.uint8
    assert ds.x_test.shape == (4, 3, 32, 32)
    assert ds.y_train.dtype == np.int64
    assert ds.class_names == ("airplane", "automobile", "bird", "cat")


def test_cifar_missing_batch(tmp_path):
    write_cifar(tmp_path)
    (tmp_path / "data_batch_3").unlink()
    with pytest.raises(DatasetError, match="is missing data_batch_3"):
        load_dataset(str(tmp_path))


# --- errors ----------------------------------------------------------------------------


def test_missing_path(tmp_path):
    with pytest.raises(DatasetError, match=r"Dataset path '.*nope' does not exist"):
        load_dataset(str(tmp_path / "nope"))


def test_unknown_builtin_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DatasetError, match="Unknown dataset 'cifar10': expected one of 'digits', 'toy2d', 'wordnet'"):
        load_dataset("cifar10")


def test_not_a_directory(tmp_path):
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(DatasetError, match="file.txt' is neither a directory nor a .csv/.tsv/.jsonl text file"):
        load_dataset(str(tmp_path / "file.txt"))


def test_no_train_folder(tmp_path):
    (tmp_path / "images").mkdir()
    with pytest.raises(DatasetError, match="has no train/ sub-folder and is not a CIFAR-10"):
        load_dataset(str(tmp_path))


def test_no_test_folder(tmp_path):
    make_folder(tmp_path, test_per_class=0)
    with pytest.raises(DatasetError, match="has no test/ sub-folder"):
        load_dataset(str(tmp_path))


def test_empty_folder(tmp_path):
    (tmp_path / "train" / "cat").mkdir(parents=True)
    (tmp_path / "test").mkdir()
    with pytest.raises(DatasetError, match=r"has no images in train/<class>/"):
        load_dataset(str(tmp_path))


def test_empty_class(tmp_path):
    make_folder(tmp_path)
    (tmp_path / "train" / "yak").mkdir()
    (tmp_path / "test" / "yak").mkdir()
    with pytest.raises(DatasetError, match=r"has no images in train/ for \['yak'\]"):
        load_dataset(str(tmp_path))


def test_single_class(tmp_path):
    make_folder(tmp_path, classes=("cat",))
    with pytest.raises(DatasetError, match=r"has only one class \(cat\)"):
        load_dataset(str(tmp_path))


def test_corrupt_image_is_named(tmp_path):
    make_folder(tmp_path)
    (tmp_path / "train" / "dog" / "broken.png").write_bytes(b"not an image")
    with pytest.raises(DatasetError, match=r"broken\.png' is not a readable image"):
        load_dataset(str(tmp_path))


def test_truncated_image_is_named(tmp_path):
    make_folder(tmp_path)
    path = tmp_path / "train" / "dog" / "big.png"
    pixels = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    path.write_bytes(path.read_bytes()[:200])  # header intact, pixel data cut
    with pytest.raises(DatasetError, match=r"big\.png' is not a readable image"):
        load_dataset(str(tmp_path))


def test_test_classes_differ(tmp_path):
    make_folder(tmp_path)
    (tmp_path / "test" / "owl").rename(tmp_path / "test" / "emu")
    with pytest.raises(DatasetError, match=r"missing in test: \['owl'\]; extra in test: \['emu'\]"):
        load_dataset(str(tmp_path))


class _Boom:
    def __reduce__(self):  # what a malicious pickle would carry: a call on load
        return (print, ("pwned",))


def test_cifar_pickle_that_would_run_code_is_refused(tmp_path, capsys):
    write_cifar(tmp_path)
    (tmp_path / "data_batch_2").write_bytes(pickle.dumps({b"data": _Boom(), b"labels": []}))
    with pytest.raises(DatasetError, match=r"data_batch_2.*refusing to load builtins.print"):
        load_dataset(str(tmp_path))
    assert "pwned" not in capsys.readouterr().out


def test_folder_of_a_size_no_model_takes_is_resized_to_32(tmp_path):
    root = make_folder(tmp_path / "big", classes=("cat", "dog"))
    for png in root.rglob("*.png"):
        write_png(png, (10, 20, 30), size=(48, 48))
    assert load_dataset(str(root)).input_shape == (3, 32, 32)
