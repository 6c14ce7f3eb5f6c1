"""Datasets: three built-ins and user files, all as in-memory numpy arrays.

``load_dataset`` accepts ``"digits"`` (sklearn's 8x8 digits), ``"toy2d"``
(generated 2-D points), ``"wordnet"`` (WordNet noun glosses by topic, from the
``wordnet-base`` package: see ``text.py``), a CIFAR-10 python-pickle folder, an
ImageFolder tree ``root/{train,test}/<class>/<image>``, or user text (a CSV /
TSV / JSONL file or a folder of ``.txt`` files per class). ImageFolder trees
are decoded once and cached as ``.npz`` in ``cache_dir``, keyed by the file
list, so later loads skip decoding. Text is tokenized after the validation
split is held out, with a vocabulary built from the training pool only.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import pickle
import zipfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from . import text
from .files import write_atomically
from .access import READ_ONLY_ENV, read_only

BUILTIN = ("digits", "toy2d", "wordnet")

# (N_1, M_1) used by config when the user gives none; folders use _FOLDER_COUNTS. Digits has ~98 training images
# of the head class once 50 test and 30 validation images per class are set aside, hence 50 + 40 (was 60 + 60
# before the validation split).
# WordNet's head class (noun.artifact) keeps ~9,200 glosses after test and validation; 400 labeled leave the
# tail 8 at gamma 50, 20 at gamma 20.
DEFAULT_COUNTS = {"digits": (50, 40), "toy2d": (100, 300), "wordnet": (400, 4000)}
_FOLDER_COUNTS = (1500, 3000)  # CIFAR-10-LT protocol
# Balanced validation images per class, held out of the training pool before any split: training never sees
# them. Folders hold out min(500, smallest class // 10), at least 1: 500 on CIFAR-10, as DASO's NUM_VALID 5000.
VAL_PER_CLASS = {"digits": 30, "toy2d": 100, "wordnet": 100}
_FOLDER_VAL_MAX = 500
# Text without a test set of its own (WordNet, a single file, one folder of classes) gets this fraction of each
# class drawn as test (seed 0), so the test set keeps the corpus's natural imbalance (balanced accuracy is read).
TEST_FRACTION = 0.2

_CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
_CIFAR_FILES = _CIFAR_TRAIN + ("test_batch",)
# What torchvision's ImageFolder reads (IMG_EXTENSIONS); anything else in a class folder (README.txt, Thumbs.db)
# is skipped and counted, not an error.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
_RESIZE_TO = (32, 32)  # folder images of mixed sizes, or of sizes the models do not take (not <= 16 or 32)


class DatasetError(ValueError):
    """Raised when a dataset cannot be loaded; the message names the path and problem."""


@dataclass(frozen=True, eq=False)
class Dataset:
    """A labelled train/test dataset held in memory.

    Attributes
    ----------
    name : str
        ``"digits"``, ``"toy2d"``, ``"wordnet"`` or the folder's (file's) absolute path.
    kind : {"image", "points", "text"}
    x_train, x_val, x_test : ndarray
        Images as uint8 ``(N, C, H, W)``; points as float32 ``(N, 2)``; text
        as int64 token ids ``(N, text.MAX_TOKENS)``, ``text.PAD`` after the words.
        ``x_val`` is a balanced validation set held out of the training pool
        (see :func:`hold_out_validation`); tune on it, report test beside it.
    y_train, y_val, y_test : ndarray of int64, shape (N,)
        Classes ``0 .. K-1``.
    class_names : tuple of str
    hflip : bool
        Whether a horizontal flip preserves the label (False for digits).
    vocab : tuple of str
        Text only: the word of each token id (built from ``x_train``).
    synonyms : ndarray of int64, shape (len(vocab), text.MAX_SYNONYMS), optional
        Text only: in-vocabulary WordNet synonyms of each token id, -1 after (see ``text.synonym_table``).
    """

    name: str
    kind: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]
    hflip: bool
    x_val: np.ndarray | None = None
    y_val: np.ndarray | None = None
    skipped: tuple[str, ...] = ()  # files of a folder dataset left out (no image extension), relative to its root
    vocab: tuple[str, ...] = ()
    synonyms: np.ndarray | None = None

    def skipped_note(self) -> str:
        """'' or a sentence saying how many files were skipped, with a few of their names."""
        if not self.skipped:
            return ""
        names = ", ".join(self.skipped[:3]) + (", …" if len(self.skipped) > 3 else "")
        return (f"Skipped {len(self.skipped)} file{'s' * (len(self.skipped) != 1)} without an image extension "
                f"({names}).")

    @property
    def num_classes(self) -> int:
        """Number of classes ``K``."""
        return len(self.class_names)

    @property
    def input_shape(self) -> tuple:
        """Shape of one example: ``(C, H, W)``, ``(2,)``, or ``(L, V)`` for text: ``L`` token ids from a
        vocabulary of ``V`` (a sentence's one-hot shape, stored as ids), so a text model learns its vocabulary
        size from the shape as an image model learns its channels."""
        if self.kind == "text":
            return (self.x_train.shape[1], len(self.vocab))
        return tuple(self.x_train.shape[1:])


def default_counts(dataset: Dataset) -> tuple[int, int]:
    """Default ``(N_1, M_1)`` for a dataset, capped so the head class fits.

    Parameters
    ----------
    dataset : Dataset

    Returns
    -------
    n1, m1 : int
        ``DEFAULT_COUNTS[name]`` for built-ins, else ``(1500, 3000)``; then
        ``n1 <= available`` and ``m1 <= available - n1`` where ``available``
        is the number of training examples of class 0.
    """
    n1, m1 = DEFAULT_COUNTS.get(dataset.name, _FOLDER_COUNTS)
    available = int(np.sum(dataset.y_train == 0))
    n1 = min(n1, available)
    return n1, min(m1, available - n1)


def load_dataset(source: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> Dataset:
    """Load a built-in dataset or a dataset folder.

    Parameters
    ----------
    source : str or path-like
        ``"digits"``, ``"toy2d"``, ``"wordnet"``, a CIFAR-10 python-pickle folder (holding
        ``data_batch_1..5`` and ``test_batch``, directly or in
        ``cifar-10-batches-py/``), an ImageFolder root with ``train/`` and
        ``test/`` each holding one sub-folder per class, or user text (see ``text.py``).
    cache_dir : str or path-like, optional
        Where decoded ImageFolder arrays are cached; None disables caching.

    Returns
    -------
    Dataset

    Raises
    ------
    DatasetError
        If ``source`` is neither a built-in nor a readable dataset folder or file, or is not a built-in on a
        read-only server (``access.read_only``).
    """
    source = os.fspath(source)
    if read_only() and source not in BUILTIN:
        # Checked before the path is touched: a read-only server tells nothing about its files, not even whether
        # one exists, and writes no cache.
        raise DatasetError(f"This server is read-only ({READ_ONLY_ENV}): it loads only the built-in datasets "
                           f"({', '.join(BUILTIN)}), not a path such as {source!r}.")
    ds = hold_out_validation(_load(source, cache_dir))
    return _tokenized(ds) if ds.kind == "text" else ds


def validation_size(name: str, y_train: np.ndarray) -> int:
    """Validation images per class: ``VAL_PER_CLASS`` for built-ins, else ``min(500, smallest class // 10)``, >= 1.

    >>> validation_size("digits", np.zeros(10, dtype=int)), validation_size("/data/x", np.repeat([0, 1], [5000, 80]))
    (30, 8)
    """
    if name in VAL_PER_CLASS:
        return VAL_PER_CLASS[name]
    return max(1, min(_FOLDER_VAL_MAX, int(np.bincount(y_train).min()) // 10))


def hold_out_validation(ds: Dataset) -> Dataset:
    """Move ``validation_size`` images of every class from train to a validation set (fixed draw, seed 1).

    The draw depends on the dataset only, so every run on a dataset is validated on the same images.
    """
    per_class = validation_size(ds.name, ds.y_train)
    counts = np.bincount(ds.y_train, minlength=ds.num_classes)
    if counts.min() <= per_class:
        k = int(counts.argmin())
        raise DatasetError(f"{ds.name}: class {ds.class_names[k]!r} has {counts[k]} training example(s); sslviz holds "
                           f"out {per_class} per class for validation and needs at least one more to train on")
    rng = np.random.default_rng(1)
    val = np.sort(np.concatenate([rng.choice(np.flatnonzero(ds.y_train == k), per_class, replace=False)
                                  for k in range(ds.num_classes)]))
    keep = np.setdiff1d(np.arange(len(ds.y_train)), val)
    return dataclasses.replace(ds, x_train=ds.x_train[keep], y_train=ds.y_train[keep],
                               x_val=ds.x_train[val], y_val=ds.y_train[val])


def _load(source: str, cache_dir) -> Dataset:
    if source == "digits":
        return _load_digits()
    if source == "toy2d":
        return _load_toy2d()
    if source == "wordnet":
        return _load_wordnet()
    root = Path(source).expanduser()
    if not root.exists():
        if os.sep not in source and "/" not in source and not source.startswith((".", "~")):
            raise DatasetError(
                f"Unknown dataset {source!r}: expected one of {', '.join(map(repr, BUILTIN))} "
                "or the path of a CIFAR-10 or ImageFolder directory or of a text file or folder"
            )
        raise DatasetError(f"Dataset path {source!r} does not exist")
    if root.is_file() and root.suffix.lower() in text.TABLE_SUFFIXES:
        return _load_text(root)
    if not root.is_dir():
        raise DatasetError(f"Dataset path {source!r} is neither a directory nor a "
                           f"{'/'.join(text.TABLE_SUFFIXES)} text file")
    cifar = _find_cifar(root)
    if cifar is not None:
        return _load_cifar(cifar, name=str(root.resolve()))
    if _is_text_folder(root):
        return _load_text(root)
    if not (root / "train").is_dir():
        raise DatasetError(
            f"Dataset folder {source!r} has no train/ sub-folder and is not a CIFAR-10 "
            "pickle folder; expected train/<class>/<image> and test/<class>/<image>"
        )
    return _load_image_folder(root, cache_dir)


def digits_file() -> Path:
    """The digits CSV that scikit-learn installs (``load_digits`` reads it), found without importing sklearn."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetError("The built-in 'digits' dataset ships with scikit-learn: pip install scikit-learn.")
    return Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz"


def _load_digits() -> Dataset:
    """sklearn digits as uint8 (N, 1, 8, 8), with a fixed 50-per-class test set.

    Read from sklearn's own file with numpy (0.05 s) rather than through ``sklearn.datasets.load_digits``, whose
    import alone takes 0.8 s: the Setup page's split preview is on the dashboard's first paint (issue 14). A test
    checks the arrays equal ``load_digits``'s."""
    table = np.loadtxt(digits_file(), delimiter=",")  # 64 pixel columns (0-16), then the label
    x = np.round(table[:, :-1] * 255 / 16).astype(np.uint8).reshape(-1, 1, 8, 8)
    y = table[:, -1].astype(np.int64)
    rng = np.random.default_rng(0)
    test = np.sort(
        np.concatenate([rng.choice(np.flatnonzero(y == k), 50, replace=False) for k in range(10)])
    )
    train = np.setdiff1d(np.arange(len(y)), test)
    return Dataset(
        name="digits",
        kind="image",
        x_train=x[train],
        y_train=y[train],
        x_test=x[test],
        y_test=y[test],
        class_names=tuple(str(k) for k in range(10)),
        hflip=False,  # a mirrored 2 or 5 is not a digit
    )


def _load_toy2d() -> Dataset:
    """Six elongated Gaussian blobs on a ring; neighbours overlap on purpose.

    Each blob is stretched along the ring so that it overlaps its two
    neighbours, which makes a classifier's bias toward majority classes show
    up as shifted decision boundaries.
    """
    num_classes, n_train, n_test = 6, 600, 200
    radius, along, across = 1.9, 0.6, 0.3  # ring radius, tangential and radial std
    rng = np.random.default_rng(0)
    xs, ys = [], []
    for k in range(num_classes):
        angle = 2 * np.pi * k / num_classes
        radial = np.array([np.cos(angle), np.sin(angle)])
        tangent = np.array([-np.sin(angle), np.cos(angle)])
        noise = rng.standard_normal((n_train + n_test, 2)) * [along, across]
        xs.append(radius * radial + noise[:, :1] * tangent + noise[:, 1:] * radial)
        ys.append(np.full(n_train + n_test, k))
    x = np.stack(xs).astype(np.float32)  # (K, n_train + n_test, 2)
    y = np.stack(ys).astype(np.int64)
    return Dataset(
        name="toy2d",
        kind="points",
        x_train=x[:, :n_train].reshape(-1, 2),
        y_train=y[:, :n_train].reshape(-1),
        x_test=x[:, n_train:].reshape(-1, 2),
        y_test=y[:, n_train:].reshape(-1),
        class_names=tuple("ABCDEF"),
        hflip=False,
    )


def _is_text_folder(root: Path) -> bool:
    """A folder holding ``train.<csv|tsv|jsonl>``, or whose class folders (under ``train/`` if there is one) hold
    ``.txt`` files and no images (an ImageFolder's stray README.txt stays a skipped file)."""
    if text.split_tables(root) is not None:
        return True
    base = root / "train" if (root / "train").is_dir() else root
    found_text = False
    for folder in (d for d in base.iterdir() if d.is_dir()):
        for path in folder.rglob("*"):
            suffix = path.suffix.lower()
            if suffix in IMAGE_EXTENSIONS:  # the first image settles it: no walk over a whole image tree
                return False
            found_text |= suffix == text.TEXT_SUFFIX
    return found_text


def _load_wordnet() -> Dataset:
    """WordNet noun glosses labelled by lexicographer file (``text.wordnet_corpus``), a stratified test draw."""
    try:
        texts, labels, names = text.wordnet_corpus()
    except text.TextError as exc:
        raise DatasetError(str(exc)) from None
    return _text_dataset("wordnet", np.array(texts, dtype=object), labels, names)


def _load_text(root: Path) -> Dataset:
    """User text (``text.read_text_source``): classes ordered by training frequency, the test set given or drawn."""
    try:
        (texts, labels), test = text.read_text_source(root)
    except text.TextError as exc:
        raise DatasetError(str(exc)) from None
    except OSError as exc:
        raise DatasetError(f"Text dataset {str(root)!r} could not be read: {exc}") from None
    if not texts:
        raise DatasetError(f"Text dataset {str(root)!r} has no .txt files in <class>/ sub-folders")
    counts = Counter(labels)
    if len(counts) < 2:
        raise DatasetError(f"Text dataset {str(root)!r}: the {text.LABEL_FIELD!r} field has only one class "
                           f"({next(iter(counts))!r}); need at least 2")
    names = tuple(sorted(counts, key=lambda c: (-counts[c], c)))  # class 0 = the most frequent
    index = {c: k for k, c in enumerate(names)}
    y = np.array([index[c] for c in labels], dtype=np.int64)
    x = np.array(texts, dtype=object)
    if test is None:
        return _text_dataset(str(root.resolve()), x, y, names)
    unknown = sorted(set(test[1]) - set(names))
    if unknown:
        raise DatasetError(f"Text dataset {str(root)!r}: the test set's {text.LABEL_FIELD!r} field has classes "
                           f"the training set lacks: {unknown[:5]}")
    return Dataset(name=str(root.resolve()), kind="text", x_train=x, y_train=y,
                   x_test=np.array(test[0], dtype=object),
                   y_test=np.array([index[c] for c in test[1]], dtype=np.int64), class_names=names, hflip=False)


def _text_dataset(name: str, x: np.ndarray, y: np.ndarray, names: tuple[str, ...]) -> Dataset:
    """Raw texts with ``TEST_FRACTION`` of each class drawn as the test set (seed 0)."""
    test = stratified_sample(y, TEST_FRACTION, np.random.default_rng(0))
    train = np.setdiff1d(np.arange(len(y)), test)
    return Dataset(name=name, kind="text", x_train=x[train], y_train=y[train], x_test=x[test], y_test=y[test],
                   class_names=names, hflip=False)


def stratified_sample(y: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of ``round(fraction * n_k)`` examples of every class ``k`` (at least 1), drawn by ``rng``.

    >>> stratified_sample(np.array([0] * 10 + [1] * 3), 0.2, np.random.default_rng(0)).size
    3
    """
    return np.sort(np.concatenate([
        rng.choice(idx, max(1, round(fraction * idx.size)), replace=False)
        for idx in (np.flatnonzero(y == k) for k in range(int(y.max()) + 1))]))


def _tokenized(ds: Dataset) -> Dataset:
    """Raw texts as token ids, with a vocabulary from the training pool (after validation was held out) and the
    WordNet synonym table of that vocabulary (empty rows when WordNet is not installed)."""
    vocab = text.build_vocabulary(ds.x_train)
    return dataclasses.replace(
        ds, x_train=text.encode(ds.x_train, vocab), x_val=text.encode(ds.x_val, vocab),
        x_test=text.encode(ds.x_test, vocab), vocab=vocab, synonyms=text.synonym_table(vocab, text.wordnet_synonyms()))


def _find_cifar(root: Path) -> Path | None:
    """The folder holding CIFAR-10 pickles (root or its cifar-10-batches-py/), or None."""
    for folder in (root, root / "cifar-10-batches-py"):
        present = [f for f in _CIFAR_FILES if (folder / f).is_file()]
        if present:
            missing = sorted(set(_CIFAR_FILES) - set(present))
            if missing:
                raise DatasetError(
                    f"CIFAR-10 folder {str(folder)!r} is missing {', '.join(missing)}"
                )
            return folder
    return None


def _load_cifar(folder: Path, name: str) -> Dataset:
    """Read the CIFAR-10 python pickles (already uint8, so no cache is needed)."""
    train = [_read_cifar_batch(folder / f) for f in _CIFAR_TRAIN]
    x_test, y_test = _read_cifar_batch(folder / "test_batch")
    meta = folder / "batches.meta"
    if meta.is_file():
        names = tuple(n.decode() for n in _unpickle(meta)[b"label_names"])
    else:
        names = tuple(str(k) for k in range(int(y_test.max()) + 1))
    return Dataset(
        name=name,
        kind="image",
        x_train=np.concatenate([x for x, _ in train]),
        y_train=np.concatenate([y for _, y in train]),
        x_test=x_test,
        y_test=y_test,
        class_names=names,
        hflip=True,
    )


class _ArraysOnly(pickle.Unpickler):
    """Unpickler that builds numpy arrays and plain containers only: a crafted pickle cannot run code."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only numpy arrays are expected")
        return super().find_class(module, name)


def _unpickle(path: Path) -> dict:
    """Load one CIFAR pickle (a local file the user pointed us at) without running code from it."""
    try:
        with open(path, "rb") as f:
            return _ArraysOnly(f, encoding="bytes").load()
    except (OSError, pickle.UnpicklingError, EOFError, ValueError) as exc:
        raise DatasetError(f"CIFAR-10 file {str(path)!r} could not be read: {exc}") from exc


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One batch as uint8 (N, 3, 32, 32) images and int64 labels."""
    batch = _unpickle(path)
    try:
        x = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        y = np.asarray(batch[b"labels"], dtype=np.int64)
    except (KeyError, ValueError, TypeError) as exc:
        raise DatasetError(f"CIFAR-10 file {str(path)!r} is not a CIFAR-10 batch: {exc}") from exc
    return x, y


def _list_split(root: Path, split: str) -> dict[str, list[Path]]:
    """Map class name -> sorted files under root/split/<class>/ (hidden files skipped)."""
    folder = root / split
    if not folder.is_dir():
        raise DatasetError(f"Dataset folder {str(root)!r} has no {split}/ sub-folder")
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    return {c: _list_files(folder / c) for c in classes}


def _list_files(folder: Path) -> list[Path]:
    """Sorted files under ``folder``, recursively, skipping hidden files and folders."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        found.extend(Path(dirpath, f) for f in filenames if not f.startswith("."))
    return sorted(found)


def _keep_images(files: dict[str, list[Path]], root: Path) -> tuple[dict[str, list[Path]], list[str]]:
    """Split each class's files into images (by extension, as ImageFolder) and the skipped rest (relative paths)."""
    kept = {c: [p for p in paths if p.suffix.lower() in IMAGE_EXTENSIONS] for c, paths in files.items()}
    skipped = [str(p.relative_to(root)) for paths in files.values() for p in paths
               if p.suffix.lower() not in IMAGE_EXTENSIONS]
    return kept, skipped


def _check_layout(root: Path, train: dict, test: dict) -> None:
    """Raise DatasetError for empty, single-class or mismatched train/test folders."""
    if not any(train.values()):
        raise DatasetError(f"Dataset folder {str(root)!r} has no images in train/<class>/")
    if len(train) < 2:
        raise DatasetError(
            f"Dataset folder {str(root)!r} has only one class ({', '.join(train)}) in train/; "
            "need at least 2"
        )
    if set(train) != set(test):
        missing = sorted(set(train) - set(test))
        extra = sorted(set(test) - set(train))
        raise DatasetError(
            f"Dataset folder {str(root)!r}: test/ classes differ from train/ "
            f"(missing in test: {missing}; extra in test: {extra})"
        )
    for split, files in (("train", train), ("test", test)):
        empty = [c for c, paths in files.items() if not paths]
        if empty:
            raise DatasetError(f"Dataset folder {str(root)!r} has no images in {split}/ for {empty}")


def _cache_key(root: Path, files: list[Path]) -> str:
    """Hash of the absolute root and each file's relative path, size and mtime."""
    h = hashlib.sha256(str(root.resolve()).encode())
    for p in files:
        st = p.stat()
        h.update(f"{p.relative_to(root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


def _load_image_folder(root: Path, cache_dir) -> Dataset:
    """Decode an ImageFolder tree, or read its cached arrays."""
    train, skipped_train = _keep_images(_list_split(root, "train"), root)
    test, skipped_test = _keep_images(_list_split(root, "test"), root)
    _check_layout(root, train, test)
    class_names = tuple(train)
    train_files = [p for c in class_names for p in train[c]]
    test_files = [p for c in class_names for p in test[c]]
    y_train = np.repeat(np.arange(len(class_names)), [len(train[c]) for c in class_names])
    y_test = np.repeat(np.arange(len(class_names)), [len(test[c]) for c in class_names])

    cache = None
    if cache_dir is not None:
        cache = Path(cache_dir) / f"imagefolder-{_cache_key(root, train_files + test_files)}.npz"
    arrays = _read_cache(cache) if cache is not None else None
    if arrays is None:
        arrays = _decode_all(train_files + test_files, len(train_files))
        if cache is not None:
            _write_cache(cache, x_train=arrays[0], x_test=arrays[1])
    x_train, x_test = arrays
    return Dataset(
        name=str(root.resolve()),
        kind="image",
        x_train=x_train,
        y_train=y_train.astype(np.int64),
        x_test=x_test,
        y_test=y_test.astype(np.int64),
        class_names=class_names,
        hflip=True,
        skipped=tuple(skipped_train + skipped_test),
    )


def _decode_all(files: list[Path], n_first: int) -> tuple[np.ndarray, np.ndarray]:
    """Decode ``files`` to one uint8 (N, 3, H, W) array and split it at ``n_first``.

    Sizes are read from the headers first, so images of mixed sizes are resized
    to 32x32 while decoding instead of being held at full size.
    """
    # PIL releases the GIL while decoding, so threads help on multi-core machines;
    # chunks keep per-future overhead small next to a ~0.2 ms decode of a tiny image.
    workers = min(8, os.cpu_count() or 1)
    chunks = [files[i : i + 500] for i in range(0, len(files), 500)]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        sizes = set().union(*pool.map(lambda c: {_image_size(p) for p in c}, chunks))
        common = next(iter(sizes)) if len(sizes) == 1 else None
        # Keep a common size the models take (cnn_digits: up to 16x16; cnn32 / WRN: 32x32), else resize.
        target = common if common and (max(common) <= 16 or common == _RESIZE_TO) else _RESIZE_TO
        images = [
            im for c in pool.map(lambda c: [_decode_image(p, target) for p in c], chunks) for im in c
        ]
    x = np.stack(images).transpose(0, 3, 1, 2)  # (N, H, W, 3) -> (N, 3, H, W)
    x = np.ascontiguousarray(x)
    return x[:n_first], x[n_first:]


def _image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the image header; DatasetError names a non-image file."""
    try:
        with Image.open(path) as im:
            return im.size
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DatasetError(f"File {str(path)!r} is not a readable image: {exc}") from exc


def _decode_image(path: Path, size: tuple[int, int]) -> np.ndarray:
    """Decode one image to uint8 (H, W, 3) RGB at ``size`` (width, height)."""
    try:
        with Image.open(path) as im:
            if im.mode != "RGB":
                im = im.convert("RGB")
            if im.size != size:
                im = im.resize(size, Image.Resampling.BILINEAR)
            return np.asarray(im, dtype=np.uint8)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DatasetError(f"File {str(path)!r} is not a readable image: {exc}") from exc


def _read_cache(path: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """Cached (x_train, x_test), or None if absent or unreadable (then we re-decode)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            return npz["x_train"], npz["x_test"]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        return None


def _write_cache(path: Path, **arrays: np.ndarray) -> None:
    """Write the cache atomically so a concurrent reader never sees a partial file."""
    write_atomically(path, lambda f: np.savez(f, **arrays))
