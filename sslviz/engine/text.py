"""Text as data: the offline WordNet corpus and lexicon, user text files, and the tokenizer.

The built-in ``wordnet`` corpus is WordNet 3.0 as Debian's ``wordnet-base`` installs it (``/usr/share/wordnet``):
every noun synset's gloss is a sentence, labelled by its lexicographer file (``noun.artifact``, ``noun.person``,
...), a naturally long-tailed topic classification. The same files give the synonyms the strong augmentation
replaces and inserts words with (EDA). Nothing is downloaded; the parsed files are kept per process.

User text is a CSV, TSV or JSONL file with a ``text`` and a ``label`` field (or a folder holding ``train.<ext>``
and ``test.<ext>``), or a folder with one sub-folder of ``.txt`` files per class (``root/<class>/*.txt``, or
``root/train/<class>/`` and ``root/test/<class>/``). Classes are ordered by training frequency, so class 0 is the
head. Errors name the file, the row (line) and the field.
"""
from __future__ import annotations

import csv
import io
import json
import os
import re
from collections import Counter
from functools import lru_cache
from pathlib import Path

import numpy as np

WORDNET_DIR = Path("/usr/share/wordnet")  # where wordnet-base puts WordNet 3.0; SSLVIZ_WORDNET points elsewhere
WORDNET_INSTALL = "sudo apt-get install wordnet-base"
WORDNET_POS = ("noun", "verb", "adj", "adv")
# Lexicographer file numbers of the noun files (WordNet's lexnames(5WN), 3..28).
NOUN_LEXFILES = {
    3: "Tops", 4: "act", 5: "animal", 6: "artifact", 7: "attribute", 8: "body", 9: "cognition", 10: "communication",
    11: "event", 12: "feeling", 13: "food", 14: "group", 15: "location", 16: "motive", 17: "object", 18: "person",
    19: "phenomenon", 20: "plant", 21: "possession", 22: "process", 23: "quantity", 24: "relation", 25: "shape",
    26: "state", 27: "substance", 28: "time",
}
WORDNET_CLASSES = 10  # the corpus keeps the 10 largest noun files: 11,587 (artifact) down to 2,983 (substance)

TEXT_FIELD, LABEL_FIELD = "text", "label"
TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl")
TEXT_SUFFIX = ".txt"

PAD, UNK = 0, 1  # token ids of padding and of words outside the vocabulary
SPECIALS = ("<pad>", "<unk>")
MAX_TOKENS = 32  # sequence length: 98% of the WordNet glosses fit (median 11 words); longer texts are cut
MAX_VOCAB = 20_000  # most frequent training words, then <unk>
MAX_SYNONYMS = 8  # per word: the most frequent in-vocabulary synonyms
_TOKEN = re.compile(r"[^\W_]+(?:'[^\W_]+)?")  # letters and digits of any script (Unicode \w without "_")
# Function words get no synonyms and are no synonym, as in EDA (Wei & Zou 2019): WordNet would turn "in" into
# "indiana" and "a" into "adenine". The usual English list (NLTK's, as EDA uses).
STOP_WORDS = frozenset("""
i me my myself we our ours ourselves you your yours yourself yourselves he him his himself she her hers herself it
its itself they them their theirs themselves what which who whom this that these those am is are was were be been
being have has had having do does did doing a an the and but if or because as until while of at by for with about
against between into through during before after above below to from up down in out on off over under again
further then once here there when where why how all any both each few more most other some such no nor not only own
same so than too very s t can will just don should now
""".split())


class TextError(ValueError):
    """Bad text input; the message names the file, row and field (data.DatasetError derives from it)."""


# -- tokenizer ---------------------------------------------------------------------
def tokenize(text: str) -> list[str]:
    """Lower-cased words and numbers; punctuation splits and is dropped.

    >>> tokenize("A man's hat (e.g. a FEDORA), 2 sizes")
    ['a', "man's", 'hat', 'e', 'g', 'a', 'fedora', '2', 'sizes']
    >>> tokenize("Café naïve Straße, Ελληνικά")
    ['café', 'naïve', 'straße', 'ελληνικά']
    """
    return _TOKEN.findall(text.lower())


def build_vocabulary(texts, max_size: int = MAX_VOCAB) -> tuple[str, ...]:
    """``SPECIALS`` then the ``max_size`` most frequent words of ``texts`` (ties by first appearance).

    >>> build_vocabulary(["b a b", "c b"])
    ('<pad>', '<unk>', 'b', 'a', 'c')
    """
    counts = Counter(w for t in texts for w in tokenize(t))
    return SPECIALS + tuple(w for w, _ in counts.most_common(max_size))


def encode(texts, vocab: tuple[str, ...], max_len: int = MAX_TOKENS) -> np.ndarray:
    """Token ids ``(N, max_len)`` int64: words left-aligned, truncated, ``PAD`` after, ``UNK`` outside ``vocab``.

    >>> encode(["b a z"], ("<pad>", "<unk>", "a", "b"), max_len=4).tolist()
    [[3, 2, 1, 0]]
    """
    index = {w: i for i, w in enumerate(vocab)}
    out = np.full((len(texts), max_len), PAD, dtype=np.int64)
    for row, text in enumerate(texts):
        ids = [index.get(w, UNK) for w in tokenize(text)[:max_len]]
        out[row, :len(ids)] = ids
    return out


def decode(ids, vocab: tuple[str, ...]) -> str:
    """The words of one id sequence, padding dropped.

    >>> decode([3, 1, 0, 0], ("<pad>", "<unk>", "a", "b"))
    'b <unk>'
    """
    return " ".join(vocab[int(i)] for i in ids if int(i) != PAD)


def synonym_table(vocab: tuple[str, ...], synonyms: dict[str, frozenset[str]], width: int = MAX_SYNONYMS) -> np.ndarray:
    """``(V, width)`` int64: for each vocabulary word, the ids of its in-vocabulary synonyms (most frequent first),
    ``-1`` after; the augmentation draws replacements and insertions from it with tensor ops. ``STOP_WORDS`` have
    none and are none.

    >>> vocab = ("<pad>", "<unk>", "car", "auto", "cat", "in")
    >>> synonym_table(vocab, {"car": frozenset({"auto", "machine", "in"}), "in": frozenset({"car"})}, 2).tolist()
    [[-1, -1], [-1, -1], [3, -1], [-1, -1], [-1, -1], [-1, -1]]
    """
    index = {w: i for i, w in enumerate(vocab) if w not in STOP_WORDS}
    table = np.full((len(vocab), width), -1, dtype=np.int64)
    for i, word in enumerate(vocab):
        if word in STOP_WORDS:
            continue
        ids = sorted(index[s] for s in synonyms.get(word, ()) if s in index and s != word)[:width]
        table[i, :len(ids)] = ids
    return table


# -- WordNet -----------------------------------------------------------------------
def wordnet_dir() -> Path:
    """``$SSLVIZ_WORDNET`` (read at each call, so a running dashboard sees it) or ``WORDNET_DIR``."""
    return Path(os.environ.get("SSLVIZ_WORDNET") or WORDNET_DIR)


def wordnet_available(root: Path | None = None) -> bool:
    """Whether the WordNet data files are installed (``wordnet-base``) in ``root`` (default ``wordnet_dir()``)."""
    root = Path(root or wordnet_dir())
    return all((root / f"data.{pos}").is_file() for pos in WORDNET_POS)


def wordnet_missing_message(root: Path | None = None) -> str:
    """What to do when the WordNet files are absent."""
    return (f"The 'wordnet' dataset reads WordNet 3.0 from {str(root or wordnet_dir())!r}, which is not installed "
            f"here. Install it with `{WORDNET_INSTALL}` (Debian/Ubuntu; about 30 MB, no download at run time), or point "
            "SSLVIZ_WORDNET at a folder holding data.noun, data.verb, data.adj and data.adv.")


def wordnet_corpus(root: Path | None = None) -> tuple[tuple[str, ...], np.ndarray, tuple[str, ...]]:
    """``(glosses, labels, class names)`` of the ``WORDNET_CLASSES`` largest noun lexicographer files, classes by
    size (class 0 = noun.artifact). Raises TextError saying how to install WordNet when it is absent."""
    root = Path(root or wordnet_dir())
    if not wordnet_available(root):
        raise TextError(wordnet_missing_message(root))
    return _parse_corpus(root)


def wordnet_synonyms(root: Path | None = None) -> dict[str, frozenset[str]]:
    """Single-word lemma -> the other single-word lemmas of every synset it is in (all parts of speech); empty when
    WordNet is not installed (user text then gets no synonym replacement or insertion)."""
    root = Path(root or wordnet_dir())
    return _parse_synonyms(root) if wordnet_available(root) else {}


@lru_cache(maxsize=2)
def _parse_corpus(root: Path):
    """Parsed once per process (0.2 s)."""
    by_file: dict[int, list[str]] = {}
    for lexfile, _, gloss in _synsets(root / "data.noun"):
        by_file.setdefault(lexfile, []).append(gloss)
    largest = sorted(by_file, key=lambda k: (-len(by_file[k]), k))[:WORDNET_CLASSES]
    texts = tuple(g for k in largest for g in by_file[k])
    labels = np.repeat(np.arange(len(largest), dtype=np.int64), [len(by_file[k]) for k in largest])
    return texts, labels, tuple(f"noun.{NOUN_LEXFILES[k]}" for k in largest)


@lru_cache(maxsize=2)
def _parse_synonyms(root: Path) -> dict[str, frozenset[str]]:
    """Parsed once per process (0.5 s)."""
    found: dict[str, set[str]] = {}
    for pos in WORDNET_POS:
        for _, lemmas, _ in _synsets(root / f"data.{pos}"):
            words = {w for w in lemmas if _TOKEN.fullmatch(w)}
            for w in words:
                found.setdefault(w, set()).update(words - {w})
    return {w: frozenset(s) for w, s in found.items() if s}


def _synsets(path: Path):
    """``(lexfile number, lemmas, gloss)`` per synset line of one WordNet ``data.<pos>`` file."""
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith("  "):  # the licence header
                continue
            head, _, gloss = line.partition(" | ")
            fields = head.split()
            n_words = int(fields[3], 16)
            # Adjective lemmas may carry a syntactic marker: "galore(ip)".
            lemmas = tuple(re.sub(r"\(.*\)$", "", w).lower() for w in fields[4:4 + 2 * n_words:2])
            yield int(fields[1]), lemmas, gloss.strip()


# -- user text ---------------------------------------------------------------------
def read_table(path: Path) -> tuple[list[str], list[str]]:
    """``(texts, labels)`` of a CSV, TSV or JSONL file with ``text`` and ``label`` fields.

    Raises TextError naming the file, the line and the field: wrong encoding, a missing field, an empty text or
    label, a line that is not JSON.
    """
    raw = path.read_bytes()
    # surrogateescape keeps undecodable bytes as lone surrogates, so the row and field holding them can be named.
    content = raw.decode("utf-8-sig" if raw.startswith(b"\xef\xbb\xbf") else "utf-8", errors="surrogateescape")
    rows = _json_rows(path, content) if path.suffix.lower() == ".jsonl" else _delimited_rows(path, content)
    texts, labels = [], []
    for line, row in rows:
        values = []
        for field in (TEXT_FIELD, LABEL_FIELD):
            value = row.get(field)
            value = "" if value is None else str(value)
            if _has_surrogate(value):
                raise TextError(f"File {str(path)!r}, line {line}: the {field!r} field is not UTF-8 text (byte "
                                f"{_bad_byte(value)}); save the file as UTF-8.")
            if not value.strip() or (field == TEXT_FIELD and not tokenize(value)):
                raise TextError(f"File {str(path)!r}, line {line}: the {field!r} field is empty"
                                + (" (no words)" if value.strip() else "") + ".")
            values.append(value.strip() if field == LABEL_FIELD else value)
        texts.append(values[0])
        labels.append(values[1])
    if not texts:
        raise TextError(f"File {str(path)!r} has no rows.")
    return texts, labels


def _delimited_rows(path: Path, content: str):
    """``(line, row dict)`` of a CSV (comma) or TSV (tab) file with a header row naming the fields."""
    # TSV has no quoting: a text that starts with '"' is text (with CSV quoting it would swallow the next lines).
    tsv = path.suffix.lower() == ".tsv"
    reader = csv.DictReader(io.StringIO(content, newline=""), delimiter="\t" if tsv else ",",
                            quoting=csv.QUOTE_NONE if tsv else csv.QUOTE_MINIMAL)
    columns = reader.fieldnames or []
    missing = [f for f in (TEXT_FIELD, LABEL_FIELD) if f not in columns]
    if missing:
        raise TextError(f"File {str(path)!r}, line 1: the header has no {missing[0]!r} column (columns: "
                        f"{', '.join(map(repr, columns)) or 'none'}); name the columns {TEXT_FIELD!r} and "
                        f"{LABEL_FIELD!r}.")
    for row in reader:
        yield reader.line_num, row


def _json_rows(path: Path, content: str):
    """``(line, object)`` of a JSON-lines file; blank lines are skipped."""
    # split("\n"), not splitlines(): JSON may hold U+2028 and friends raw, which splitlines() would cut at.
    for line, text in enumerate(content.split("\n"), start=1):
        if not text.strip():
            continue
        try:
            row = json.loads(text)
        except json.JSONDecodeError as exc:
            raise TextError(f"File {str(path)!r}, line {line}: not a JSON object ({exc.msg}).") from None
        if not isinstance(row, dict):
            raise TextError(f"File {str(path)!r}, line {line}: expected a JSON object with {TEXT_FIELD!r} and "
                            f"{LABEL_FIELD!r}, got {type(row).__name__}.")
        missing = [f for f in (TEXT_FIELD, LABEL_FIELD) if f not in row]
        if missing:
            raise TextError(f"File {str(path)!r}, line {line}: no {missing[0]!r} field (fields: "
                            f"{', '.join(map(repr, row)) or 'none'}).")
        yield line, row


def read_text_folder(folder: Path) -> tuple[list[str], list[str]]:
    """``(texts, labels)`` of ``folder/<class>/*.txt`` (one text per file; other files are not read)."""
    texts, labels = [], []
    for class_dir in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for path in sorted(f for f in class_dir.rglob("*") if f.suffix.lower() == TEXT_SUFFIX and f.is_file()):
            raw = path.read_bytes()
            try:
                text = raw.decode("utf-8-sig")
            except UnicodeDecodeError as exc:
                line = raw[:exc.start].count(b"\n") + 1
                raise TextError(f"File {str(path)!r}, line {line}: the {TEXT_FIELD!r} field is not UTF-8 text (byte "
                                f"0x{raw[exc.start]:02x}); save the file as UTF-8.") from None
            if not tokenize(text):
                raise TextError(f"File {str(path)!r}, line 1: the {TEXT_FIELD!r} field is empty"
                                + (" (no words)" if text.strip() else "") + ".")
            texts.append(text)
            labels.append(class_dir.name)
    return texts, labels


def split_tables(root: Path) -> tuple[Path, Path | None] | None:
    """``(train file, test file or None)`` of a folder holding ``train.<ext>`` (and ``test.<ext>``), else None."""
    tests = [root / f"test{suffix}" for suffix in TABLE_SUFFIXES if (root / f"test{suffix}").is_file()]
    for suffix in TABLE_SUFFIXES:
        if (root / f"train{suffix}").is_file():
            return root / f"train{suffix}", tests[0] if tests else None  # train.csv with test.tsv: both read
    return None


def read_text_source(root: Path) -> tuple[tuple[list[str], list[str]], tuple[list[str], list[str]] | None]:
    """The training ``(texts, labels)`` and the given test set, or None when the source has none (it is drawn)."""
    if root.is_file():
        return read_table(root), None
    tables = split_tables(root)
    if tables is not None:
        train, test = tables
        return read_table(train), (read_table(test) if test is not None else None)
    if (root / "train").is_dir():
        test = root / "test"
        return read_text_folder(root / "train"), (read_text_folder(test) if test.is_dir() else None)
    return read_text_folder(root), None


def _has_surrogate(value: str) -> bool:
    return any("\udc80" <= ch <= "\udcff" for ch in value)


def _bad_byte(value: str) -> str:
    """The first undecodable byte of a surrogate-escaped string, as 0x.."""
    ch = next(ch for ch in value if "\udc80" <= ch <= "\udcff")
    return f"0x{ord(ch) - 0xdc00:02x}"
