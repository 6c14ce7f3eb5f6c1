"""Text as a third kind of data: loading (each format, each bad input), tokenizer, models, EDA augmentation, a run."""
import json

import numpy as np
import pandas as pd
import pytest
import torch

from sslviz.engine import augment, text
from sslviz.engine.config import from_preset
from sslviz.engine.data import DatasetError, load_dataset
from sslviz.engine.device import default_model_name
from sslviz.engine.models import build_model
from sslviz.engine.registry import Pipeline, Run
from sslviz.engine.previews import preview_text_views
from sslviz.engine.trainer import prepare, train

needs_wordnet = pytest.mark.skipif(not text.wordnet_available(),
                                   reason=f"WordNet is not installed here ({text.WORDNET_INSTALL})")

# Three classes of unequal size: 'sport' (12) > 'food' (8) > 'art' (5); words unique to each class.
SENTENCES = {
    "sport": [f"the team won match {i} with a late goal" for i in range(12)],
    "food": [f"bake bread number {i} with flour and butter" for i in range(8)],
    "art": [f"paint canvas {i} in oil colours" for i in range(5)],
}


def _rows():
    return [(t, c) for c, ts in SENTENCES.items() for t in ts]


def _write_csv(path, rows, delimiter=",", header=("text", "label")):
    import csv
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, delimiter=delimiter)
        w.writerow(header)
        w.writerows(rows)
    return path


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps({"text": t, "label": c}) + "\n" for t, c in rows), encoding="utf-8")
    return path


def _write_folder(root, rows):
    for i, (t, c) in enumerate(rows):
        (root / c).mkdir(parents=True, exist_ok=True)
        (root / c / f"{i}.txt").write_text(t, encoding="utf-8")
    return root


# --- loading: each format ---------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl", "txt-folder"])
def test_each_format_loads_with_classes_by_frequency_and_a_stratified_test_draw(tmp_path, fmt):
    rows = _rows()
    source = {"csv": lambda: _write_csv(tmp_path / "d.csv", rows),
              "tsv": lambda: _write_csv(tmp_path / "d.tsv", rows, delimiter="\t"),
              "jsonl": lambda: _write_jsonl(tmp_path / "d.jsonl", rows),
              "txt-folder": lambda: _write_folder(tmp_path / "d", rows)}[fmt]()
    ds = load_dataset(source)
    assert ds.kind == "text" and ds.class_names == ("sport", "food", "art")  # class 0 = the most frequent
    # 20% of each class drawn as test (at least 1), 1 per class held out for validation, the rest trains.
    assert np.bincount(ds.y_test).tolist() == [2, 2, 1]
    assert np.bincount(ds.y_val).tolist() == [1, 1, 1]
    assert np.bincount(ds.y_train).tolist() == [9, 5, 3]
    assert ds.x_train.dtype == np.int64 and ds.x_train.shape == (17, text.MAX_TOKENS)
    assert ds.input_shape == (text.MAX_TOKENS, len(ds.vocab))  # L token ids from a vocabulary of V
    # Every training sentence decodes back to its words: the labels stayed with their texts.
    originals = {t for t, _ in rows}
    for ids, y in zip(ds.x_train, ds.y_train):
        sentence = text.decode(ids, ds.vocab)
        assert sentence in originals
        assert {"sport": "team", "food": "bread", "art": "canvas"}[ds.class_names[y]] in sentence


@pytest.mark.parametrize("fmt", ["csv-pair", "txt-train-test"])
def test_a_given_test_set_is_kept(tmp_path, fmt):
    rows, test_rows = _rows(), [("a late goal again", "sport"), ("oil on canvas", "art")]
    if fmt == "csv-pair":
        _write_csv(tmp_path / "train.csv", rows)
        _write_csv(tmp_path / "test.csv", test_rows)
    else:
        _write_folder(tmp_path / "train", rows)
        _write_folder(tmp_path / "test", test_rows)
    ds = load_dataset(tmp_path)
    assert sorted((text.decode(x, ds.vocab), ds.class_names[y]) for x, y in zip(ds.x_test, ds.y_test)) == [
        ("a late goal <unk>", "sport"), ("oil <unk> canvas", "art")]
    assert len(ds.y_train) + len(ds.y_val) == len(rows)


def test_vocabulary_comes_from_the_training_pool_only(tmp_path):
    rows = _rows() + [("zebra zebra zebra", "art")]
    _write_csv(tmp_path / "train.csv", rows)
    _write_csv(tmp_path / "test.csv", [("giraffe team", "sport")])
    ds = load_dataset(tmp_path)
    assert "giraffe" not in ds.vocab and ds.x_test[0, 0] == text.UNK
    held_out = {text.decode(x, ds.vocab) for x in ds.x_val}
    trained = {text.decode(x, ds.vocab) for x in ds.x_train}
    # A word only in a validation sentence is unknown too ("zebra" trains only if that sentence was not held out).
    assert ("zebra" in ds.vocab) == ("zebra zebra zebra" in trained) != ("zebra zebra zebra" in held_out)


# --- loading: each bad input names file, row and field -----------------------------------
def test_empty_text_names_file_line_and_field(tmp_path):
    rows = _rows()
    rows[3] = ("  ", "sport")
    path = _write_csv(tmp_path / "d.csv", rows)
    with pytest.raises(DatasetError, match=r"File '.*d.csv', line 5: the 'text' field is empty\."):
        load_dataset(path)


def test_punctuation_only_text_has_no_words(tmp_path):
    path = _write_jsonl(tmp_path / "d.jsonl", _rows()[:2] + [("?!", "art")])
    with pytest.raises(DatasetError, match=r"d.jsonl', line 3: the 'text' field is empty \(no words\)"):
        load_dataset(path)


def test_empty_label_is_named(tmp_path):
    path = _write_csv(tmp_path / "d.tsv", _rows()[:2] + [("some words", "")], delimiter="\t")
    with pytest.raises(DatasetError, match=r"d.tsv', line 4: the 'label' field is empty"):
        load_dataset(path)


def test_empty_txt_file_is_named(tmp_path):
    root = _write_folder(tmp_path / "d", _rows())
    (root / "art" / "blank.txt").write_text("\n\n")
    with pytest.raises(DatasetError, match=r"File '.*blank.txt', line 1: the 'text' field is empty"):
        load_dataset(root)


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "txt-folder"])
def test_one_class_is_refused(tmp_path, fmt):
    rows = [(t, "sport") for t, _ in _rows()]
    source = {"csv": lambda: _write_csv(tmp_path / "d.csv", rows),
              "jsonl": lambda: _write_jsonl(tmp_path / "d.jsonl", rows),
              "txt-folder": lambda: _write_folder(tmp_path / "d", rows)}[fmt]()
    with pytest.raises(DatasetError, match=r"the 'label' field has only one class \('sport'\); need at least 2"):
        load_dataset(source)


def test_missing_column_lists_the_columns(tmp_path):
    path = _write_csv(tmp_path / "d.csv", _rows(), header=("sentence", "label"))
    with pytest.raises(DatasetError, match=r"d.csv', line 1: the header has no 'text' column \(columns: 'sentence', "
                                           r"'label'\)"):
        load_dataset(path)


def test_missing_json_field_names_the_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "a b", "label": "x"}\n{"text": "c d", "class": "y"}\n')
    with pytest.raises(DatasetError, match=r"d.jsonl', line 2: no 'label' field \(fields: 'text', 'class'\)"):
        load_dataset(path)


def test_line_that_is_not_json(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "a b", "label": "x"}\n{"text": oops}\n')
    with pytest.raises(DatasetError, match=r"d.jsonl', line 2: not a JSON object"):
        load_dataset(path)


def test_wrong_encoding_names_line_field_and_byte(tmp_path):
    path = tmp_path / "d.csv"
    body = "text,label\nthe team won,sport\n".encode() + "café au lait,food\n".encode("latin-1")
    path.write_bytes(body)
    with pytest.raises(DatasetError, match=r"d.csv', line 3: the 'text' field is not UTF-8 text \(byte 0xe9\)"):
        load_dataset(path)


def test_wrong_encoding_of_a_txt_file(tmp_path):
    root = _write_folder(tmp_path / "d", _rows())
    (root / "food" / "latin.txt").write_bytes("pain\nau café".encode("latin-1"))
    with pytest.raises(DatasetError, match=r"latin.txt', line 2: the 'text' field is not UTF-8 text \(byte 0xe9\)"):
        load_dataset(root)


def test_test_classes_unknown_to_training(tmp_path):
    _write_csv(tmp_path / "train.csv", _rows())
    _write_csv(tmp_path / "test.csv", [("a poem", "poetry")])
    with pytest.raises(DatasetError, match=r"test set's 'label' field has classes the training set lacks: "
                                           r"\['poetry'\]"):
        load_dataset(tmp_path)


def test_an_image_folder_with_a_readme_stays_an_image_folder(tmp_path):
    from PIL import Image
    for split in ("train", "test"):
        for c in ("a", "b"):
            (tmp_path / split / c).mkdir(parents=True)
            for i in range(3 if split == "train" else 1):
                Image.new("RGB", (8, 8)).save(tmp_path / split / c / f"{i}.png")
    (tmp_path / "train" / "a" / "README.txt").write_text("notes")
    assert load_dataset(tmp_path).kind == "image"


def test_missing_wordnet_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("SSLVIZ_WORDNET", str(tmp_path))
    with pytest.raises(DatasetError, match=r"not installed here\. Install it with `sudo apt-get install wordnet-base`"):
        load_dataset("wordnet")
    assert text.wordnet_synonyms() == {}  # user text still loads, without synonym augmentation


# --- tokenizer --------------------------------------------------------------------------
def test_tokenizer_pads_truncates_and_marks_unknown_words():
    vocab = text.build_vocabulary(["b a b", "c b"])
    assert vocab == ("<pad>", "<unk>", "b", "a", "c")  # by frequency after the specials
    ids = text.encode(["A b, Z!", " ".join(["c"] * 50)], vocab, max_len=6)
    assert ids.tolist() == [[3, 2, 1, 0, 0, 0], [4] * 6]
    assert text.decode(ids[0], vocab) == "a b <unk>"


def test_vocabulary_is_capped_by_frequency():
    assert text.build_vocabulary(["x y y z z z"], max_size=2) == ("<pad>", "<unk>", "z", "y")


# --- models -----------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["text_bow", "text_cnn"])
def test_text_model_shapes_features_and_padding(name):
    torch.manual_seed(0)
    model = build_model(name, input_shape=(12, 50), num_classes=4)
    ids = torch.randint(2, 50, (3, 12))
    ids[:, 7:] = text.PAD
    feats = model.backbone(ids)
    assert feats.shape == (3, model.feature_dim) and model(ids).shape == (3, 4)
    # Padding is not a word: more of it changes nothing.
    longer = torch.cat([ids, torch.zeros(3, 5, dtype=torch.long)], 1)
    torch.testing.assert_close(model.backbone(longer), feats)
    model(ids).sum().backward()
    assert model.backbone[0].embed.weight.grad[text.PAD].abs().sum() == 0


def test_text_model_sizes_and_default_choice():
    from sslviz.engine.models import count_parameters
    small = count_parameters(build_model("text_bow", input_shape=(32, 20_002), num_classes=10))
    large = count_parameters(build_model("text_cnn", input_shape=(32, 20_002), num_classes=10))
    assert 1_200_000 < small < 1_400_000 < 2_500_000 < large < 3_500_000
    assert default_model_name((32, 9), "cpu") == "text_bow" and default_model_name((32,), "cpu") == "mlp"
    assert default_model_name((32, 9), "cuda") == "text_cnn"


def test_text_and_image_models_refuse_each_others_data():
    with pytest.raises(ValueError, match=r"Model 'text_bow' needs text: input shape \(L, V\), L token ids from a "
                                         r"vocabulary of V\. Got \(3, 32, 32\) instead\."):
        build_model("text_bow", input_shape=(3, 32, 32), num_classes=10)
    with pytest.raises(ValueError, match=r"Model 'mlp' needs input shape \(D,\), e\.g\. \(2,\)\. Got \(32, 100\) instead"):
        build_model("mlp", input_shape=(32, 100), num_classes=10)
    with pytest.raises(ValueError, match=r"Model 'cnn32' needs input shape \(C, 32, 32\)\. Got \(32, 100\) instead"):
        build_model("cnn32", input_shape=(32, 100), num_classes=10)


# --- augmentation ---------------------------------------------------------------------------
VOCAB = ("<pad>", "<unk>", "big", "large", "huge", "dog", "cat", "runs", "the")
SYN = torch.tensor(text.synonym_table(VOCAB, {"big": frozenset({"large", "huge"}), "large": frozenset({"big"}),
                                               "huge": frozenset({"big"})}))


def _batch(n=400):
    row = [8, 2, 5, 7, 2, 6, 4, 3, 0, 0, 0, 0]  # "the big dog runs big cat huge large"
    return torch.tensor([row] * n)


def test_weak_view_drops_a_few_words_and_keeps_order():
    x = _batch()
    g = torch.Generator().manual_seed(0)
    weak = augment.weak_text(x, generator=g)
    kept = (weak != text.PAD).sum(1).float()
    assert 8 * 0.85 < kept.mean() < 8 * 0.95 and kept.min() >= 1
    for row in weak[:20].tolist():  # a subsequence of the sentence, left-aligned
        words = [w for w in row if w]
        it = iter(x[0].tolist())
        assert all(w in it for w in words) and row[:len(words)] == words


def test_strength_zero_is_the_weak_view_and_views_are_reproducible():
    x = _batch(50)
    weak = augment.weak_text(x, generator=torch.Generator().manual_seed(3))
    strong = augment.strong_text(x, torch.zeros(50), SYN, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(strong, weak)
    a = augment.strong_text(x, torch.ones(50), SYN, generator=torch.Generator().manual_seed(3))
    b = augment.strong_text(x, torch.ones(50), SYN, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, b)


def test_replacements_and_insertions_come_from_the_lexicon():
    x = _batch()
    out = augment.strong_text(x, torch.full((len(x),), 5.0), SYN, generator=torch.Generator().manual_seed(1))
    sentence = set(x[0].tolist()) - {text.PAD}
    new = set(out.unique().tolist()) - sentence - {text.PAD}
    assert new == set()  # only words of the sentence and their synonyms ("large", "huge" are both in it)
    # Without synonyms nothing is replaced or inserted: word counts can only fall.
    bare = augment.strong_text(x, torch.full((len(x),), 5.0), torch.full_like(SYN, -1),
                               generator=torch.Generator().manual_seed(1))
    assert ((bare != text.PAD).sum(1) <= 8).all()
    big = augment._replace_synonyms(x, torch.ones(len(x)), SYN, torch.Generator().manual_seed(0))
    assert set(big[:, 1].tolist()) == {3, 4} and (big[:, 2] == 5).all()  # "big" -> large/huge; "dog" has none


@needs_wordnet
def test_wordnet_synonyms_are_wordnet_lemmas(wordnet):
    ds, _ = wordnet
    syn = text.wordnet_synonyms()
    assert {"large", "big"} <= syn["great"] | syn["large"] and "car" in syn["auto"]
    table = torch.as_tensor(ds.synonyms)
    x = torch.as_tensor(ds.x_train[:256])
    out = augment._replace_synonyms(x, torch.ones(len(x)), table, torch.Generator().manual_seed(0))
    changed = (out != x).nonzero().tolist()
    assert len(changed) > 100
    for b, i in changed:
        assert ds.vocab[out[b, i]] in syn[ds.vocab[x[b, i]]]


def _changed_fraction(x: torch.Tensor, view: torch.Tensor) -> float:
    """Share of word positions whose token differs from the original sentence."""
    words = x != text.PAD
    return float(((view != x) & words).sum() / words.sum())


@needs_wordnet
def test_strong_view_of_a_rare_class_changes_more_words_than_of_a_head_class(wordnet):
    ds, p = wordnet
    cfg = from_preset("balanced", dataset="wordnet")  # aug_class_alpha 0.5, the same base aug_strength for all
    counts = torch.as_tensor(p.split.labeled_counts, dtype=torch.float32)
    tech = Pipeline(cfg, Run(ds.num_classes, torch.device("cpu"), counts, len(p.split.unlabeled_idx), cfg.steps))
    head, rare = 0, ds.num_classes - 1
    x = torch.as_tensor(ds.x_train[:512])
    table = torch.as_tensor(ds.synonyms)
    changed = {}
    for k in (head, rare):
        strength = tech("strong_strength", torch.full((len(x),), cfg.aug_strength), torch.full((len(x),), k))
        view = augment.strong_text(x, strength, table, generator=torch.Generator().manual_seed(0))
        changed[k] = _changed_fraction(x, view)
    assert strength[0] == pytest.approx(3.0)  # (400 / 8) ** 0.5 capped at 3
    assert changed[rare] > changed[head] + 0.15
    # and plain FixMatch treats both alike
    plain = Pipeline(from_preset("fixmatch"), Run(ds.num_classes, torch.device("cpu"), counts, 1, 10))
    assert plain("strong_strength", torch.ones(2), torch.tensor([head, rare])).tolist() == [1.0, 1.0]


# --- the built-in corpus and a run --------------------------------------------------------
@pytest.fixture(scope="module")
def wordnet():
    if not text.wordnet_available():
        pytest.skip(f"WordNet is not installed here ({text.WORDNET_INSTALL})")
    cfg = from_preset("fixmatch", dataset="wordnet")
    p = prepare(cfg)
    return p.dataset, p


@needs_wordnet
def test_wordnet_corpus_is_naturally_long_tailed(wordnet):
    ds, p = wordnet
    total = np.bincount(ds.y_train) + np.bincount(ds.y_val) + np.bincount(ds.y_test)
    assert ds.class_names[:3] == ("noun.artifact", "noun.person", "noun.plant")
    assert total.tolist() == [11587, 11087, 8030, 7509, 6650, 5607, 3544, 3209, 3039, 2983]
    assert np.bincount(ds.y_val).tolist() == [100] * 10
    assert p.split.labeled_counts.tolist() == [400, 258, 167, 108, 70, 45, 29, 19, 12, 8]  # default gamma 50
    assert "fabric woven from goat hair" in text.decode(ds.x_train[0], ds.vocab)


@needs_wordnet
def test_preview_shows_head_and_rare_sentences_with_their_views(wordnet):
    ds, p = wordnet
    frame = pd.DataFrame(preview_text_views(from_preset("balanced", dataset="wordnet"), p, per_class=2))
    assert frame["class_name"].tolist() == ["noun.artifact"] * 2 + ["noun.substance"] * 2
    assert frame["strength"].tolist() == [1.0, 1.0, 3.0, 3.0]
    rare = frame[frame["strength"] == 3.0]
    assert (rare["sentence"] != rare["strong"]).all()  # at strength 3 every sentence changes (at 1 a short one may not)
    for sentence, weak in zip(frame["sentence"], frame["weak"]):  # the weak view only drops words
        words = iter(sentence.split())
        assert all(w in words for w in weak.split())


@needs_wordnet
def test_a_short_run_end_to_end(wordnet):
    ds, p = wordnet
    cfg = from_preset("balanced", dataset="wordnet", steps=40, batch_size=16, mu=2, log_every=10, eval_every=20,
                      device="cpu")
    records = []
    out = train(cfg, on_log=records.append, prepared=p)
    assert out["status"] == "finished" and out["model"] == "text_bow"
    assert [r["step"] for r in records] == [10, 20, 30, 40]
    assert sum(c["n_pl"] for c in records[-1]["classes"]) == 10 * 2 * 16
    assert len(out["test_recall"]) == 10 and 0.1 < out["val_balanced_accuracy"] <= 1  # above chance after 40 steps


@needs_wordnet
@pytest.mark.parametrize("preset", ["fixmatch-abc", "fixmatch-acr", "fixmatch-darp", "freematch"])
def test_feature_and_pass_techniques_run_on_text(wordnet, preset):
    _, p = wordnet  # ABC and ACR add heads on the text features; DARP and FreeMatch read the whole unlabeled set
    cfg = from_preset(preset, dataset="wordnet", steps=12, batch_size=8, mu=2, log_every=4, eval_every=4,
                      checkpoint_every=4, device="cpu")
    out = train(cfg, prepared=p)
    assert out["status"] == "finished" and np.isfinite(out["val_balanced_accuracy"])


def test_readme_test_command_installs_the_corpus_and_the_dashboard_command_does_not_need_it():
    from pathlib import Path
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    test_command = next(line for line in readme.splitlines() if "pytest" in line and "apt-get install" in line)
    assert "wordnet-base" in test_command.split("apt-get install", 1)[1].split("&&")[0]
    dashboard = next(line for line in readme.splitlines() if "streamlit run" in line)
    assert "apt-get" not in dashboard


def test_jsonl_with_a_raw_line_separator_in_a_text_loads(tmp_path):
    """JSON allows U+2028 raw in a string (json.dumps(..., ensure_ascii=False) writes it so)."""
    rows = [{"text": f"first part\u2028second part {i}", "label": "a" if i % 2 else "b"} for i in range(8)]
    path = tmp_path / "texts.jsonl"
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    texts, labels = text.read_table(path)
    assert len(texts) == 8 and "second part 0" in texts[0] and labels[:2] == ["b", "a"]


def test_loader_edge_cases_upper_case_txt_mixed_table_formats_and_tsv_quotes(tmp_path):
    # .TXT files count as text files, as the folder check says they do.
    for label in ("art", "food"):
        (tmp_path / "folder" / label).mkdir(parents=True)
        for i in range(3):
            (tmp_path / "folder" / label / f"{i}.TXT").write_text(f"a {label} text number {i}")
    texts, labels = text.read_text_folder(tmp_path / "folder")
    assert len(texts) == 6 and sorted(set(labels)) == ["art", "food"]
    # train.csv beside test.tsv: the given test set is read, not drawn from training.
    (tmp_path / "mixed").mkdir()
    pd.DataFrame({"text": ["one word", "two words"], "label": ["a", "b"]}).to_csv(tmp_path / "mixed" / "train.csv",
                                                                                 index=False)
    (tmp_path / "mixed" / "test.tsv").write_text("text\tlabel\n\"quoted start\tb\nplain text\ta\n")
    train, test = text.split_tables(tmp_path / "mixed")
    assert train.name == "train.csv" and test.name == "test.tsv"
    # A TSV text starting with a quote is text: the next line stays its own row.
    texts, labels = text.read_table(test)
    assert texts == ['"quoted start', "plain text"] and labels == ["b", "a"]
