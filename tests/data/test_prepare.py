from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from nas.data.prepare import prepare_data
from nas.space.sections import DataSpec


def test_builtin_text__is_tokenised_once_and_cached_for_the_next_study(nas_home):
    spec = DataSpec(source="builtin:python-docs", seq_len=32, vocab_size=512, max_samples=300)
    first = prepare_data(spec, "text", 0)
    assert not first.cache_hit and not first.info["tokenizer_cache_hit"]
    assert first.train.shape[1] == 32 and first.train.max() < 512
    assert (first.train[:, 0] == 2).all()  # [CLS] leads every sequence
    second = prepare_data(spec, "text", 0)
    assert second.cache_hit
    assert torch.equal(first.train, second.train) and torch.equal(first.val, second.val)
    # Another sequence length reuses the tokenizer (same corpus) but prepares new tensors.
    third = prepare_data(DataSpec(source="builtin:python-docs", seq_len=48, vocab_size=512, max_samples=300), "text", 0)
    assert not third.cache_hit and third.info["tokenizer_cache_hit"]
    assert len(list((nas_home / "cache" / "tokenizers").iterdir())) == 1


def test_user_text_files__txt_jsonl_and_parquet(tmp_path):
    pyarrow = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    paragraph = "Self-supervised pretraining learns representations from unlabelled data. " * 12
    (tmp_path / "a.txt").write_text("\n\n".join([paragraph] * 20))
    (tmp_path / "b.jsonl").write_text("\n".join(json.dumps({"text": paragraph}) for _ in range(20)))
    pq.write_table(pyarrow.table({"text": [paragraph] * 20}), tmp_path / "c.parquet")
    data = prepare_data(DataSpec(source=str(tmp_path / "*"), seq_len=16, vocab_size=128), "text", 0)
    assert data.train.shape[0] > 10 and data.val.shape[0] >= 1


def test_jsonl_without_the_text_field__names_file_and_line(tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"text": "fine"}\n{"body": "no text"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: no text field 'text'"):
        prepare_data(DataSpec(source=str(tmp_path / "bad.jsonl")), "text", 0)


def test_image_folder__with_class_subfolders_gives_labels(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for label in ("cats", "dogs"):
        (tmp_path / label).mkdir()
        for index in range(6):
            pixels = (rng.random((20, 20, 3)) * 255).astype("uint8")
            Image.fromarray(pixels).save(tmp_path / label / f"{index}.png")
    data = prepare_data(DataSpec(source=str(tmp_path), image_size=8, val_fraction=0.25), "image", 3)
    assert data.train.shape[1:] == (3, 8, 8)
    assert set(data.train_labels.tolist()) | set(data.val_labels.tolist()) == {0, 1}
    assert data.train.min() >= -1 and data.train.max() <= 1


def test_digits__are_split_deterministically_with_labels():
    spec = DataSpec(source="builtin:digits", image_size=16, val_fraction=0.2)
    data = prepare_data(spec, "image", 1)
    assert data.train.shape[1:] == (1, 16, 16) and data.train_labels is not None
    assert data.train.shape[0] + data.val.shape[0] == 1797


def test_tokenizer__training_twice_on_one_corpus_gives_the_same_ids(tmp_path, monkeypatch):
    """The trainer numbers its alphabet in hash order; without canonical ids a rerun of a study or benchmark would
    embed different tokens at the same seed."""
    from nas.catalog import resolve_source
    from nas.data.text import load_documents
    from nas.data.tokenizer import tokenizer_dir

    documents = load_documents(resolve_source("builtin:python-docs"), "text")[:400]
    trained = []
    for run in ("first", "second"):
        monkeypatch.setenv("NAS_HOME", str(tmp_path / run))
        folder, hit = tokenizer_dir(documents, 512)
        assert not hit
        trained.append((folder / "tokenizer.json").read_bytes())
    assert trained[0] == trained[1]


def test_text_that_is_not_utf8__is_a_data_error_naming_the_file(tmp_path):
    """A user's mistake, reported as one line by the CLI and the API, never a traceback."""
    from nas.catalog import DataError

    (tmp_path / "bad.jsonl").write_bytes(b'{"text": "caf\xe9"}\n')
    with pytest.raises(DataError, match=r"bad.jsonl: cannot be read as text"):
        prepare_data(DataSpec(source=str(tmp_path / "bad.jsonl")), "text", 0)


def test_text_that_is_mostly_not_utf8__is_refused_a_stray_byte_is_not(tmp_path):
    from nas.catalog import DataError

    (tmp_path / "binary.txt").write_bytes(bytes(range(128, 256)) * 40)
    with pytest.raises(DataError, match=r"binary.txt: not UTF-8 text \(5,120 of 5,120 characters"):
        prepare_data(DataSpec(source=str(tmp_path / "binary.txt")), "text", 0)
    (tmp_path / "mostly.txt").write_bytes(("word " * 4000).encode() + b"\xff\n")
    data = prepare_data(DataSpec(source=str(tmp_path / "mostly.txt"), seq_len=16, vocab_size=64), "text", 0)
    assert data.train.shape[0] > 0


def test_empty_or_too_small_corpora__are_refused_with_what_is_missing(tmp_path):
    from nas.catalog import DataError

    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "a.txt").write_text("")
    with pytest.raises(DataError, match="every file is empty"):
        prepare_data(DataSpec(source=str(tmp_path / "empty")), "text", 0)
    (tmp_path / "tiny.txt").write_text("hello world\n")
    with pytest.raises(
        DataError, match=r"gives only 0 sequences of 128 tokens, and training and its validation split need at least 4"
    ):
        prepare_data(DataSpec(source=str(tmp_path / "tiny.txt")), "text", 0)


def test_image_folder_with_a_few_corrupt_files__trains_on_the_rest_and_warns_with_the_count(tmp_path, caplog):
    from PIL import Image

    from nas.catalog import DataError

    rng = np.random.default_rng(0)
    for index in range(10):
        Image.fromarray((rng.random((12, 12, 3)) * 255).astype("uint8")).save(tmp_path / f"{index}.png")
    (tmp_path / "truncated.png").write_bytes((tmp_path / "0.png").read_bytes()[:40])
    (tmp_path / "not-an-image.jpg").write_text("hello")
    data = prepare_data(DataSpec(source=str(tmp_path), image_size=8, val_fraction=0.2), "image", 3)
    assert data.train.shape[0] + data.val.shape[0] == 10 and data.info["unreadable_images"] == 2
    assert "2 of 12 images" in caplog.text and "truncated.png" in caplog.text
    for index in range(4, 10):
        (tmp_path / f"{index}.png").write_bytes(b"broken")
    with pytest.raises(DataError, match=r"holds only 4 readable images \(8 more cannot be read\); at least 8"):
        prepare_data(DataSpec(source=str(tmp_path), image_size=8, val_fraction=0.2), "image", 3)


def _store_repeatedly(home: str, start) -> None:
    import os

    os.environ["NAS_HOME"] = home
    from nas.data.prepare import PreparedData, _store

    data = PreparedData(kind="text", train=torch.zeros(256, 256), val=torch.zeros(8, 256), fingerprint="shared")
    start.wait()  # all four write at once
    for _ in range(100):
        _store(data)


def test_cache_writes_from_several_processes_at_once__never_take_each_others_files(tmp_path):
    """Four runners preparing the same data at the same moment (the soak benchmark found a shared .tmp name)."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    start = context.Barrier(4)
    processes = [context.Process(target=_store_repeatedly, args=(str(tmp_path), start)) for _ in range(4)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
    assert [process.exitcode for process in processes] == [0, 0, 0, 0]
    assert [path.name for path in (tmp_path / "cache" / "data").iterdir()] == ["shared.pt"]


def test_text_encoded_with_a_given_tokenizer__keeps_its_ids_on_another_corpus(nas_home, tmp_path):
    """Full pretraining on a new corpus must use the export's token ids, not a tokenizer trained on that corpus."""
    from nas.data.tokenizer import load_tokenizer
    from nas.models.transformer import SEP_ID

    docs = prepare_data(DataSpec(source="builtin:python-docs", seq_len=32, vocab_size=512, max_samples=300), "text", 0)
    paragraph = "Zebras and quokkas graze beside the quiet estuary while herons wade. " * 10
    (tmp_path / "other.txt").write_text("\n\n".join([paragraph] * 30))
    other = DataSpec(source=str(tmp_path / "other.txt"), seq_len=32, vocab_size=512)
    own = prepare_data(other, "text", 0)
    given = prepare_data(other, "text", 0, tokenizer=Path(docs.tokenizer_dir))
    assert given.tokenizer_dir == docs.tokenizer_dir and own.tokenizer_dir != docs.tokenizer_dir
    assert given.fingerprint != own.fingerprint  # cached apart
    # The corpus is one paragraph, so its token stream repeats (paragraph ids, [SEP]): every sequence is a window.
    period = [*load_tokenizer(docs.tokenizer_dir)(paragraph, add_special_tokens=False)["input_ids"], SEP_ID]
    stream = period * 3
    for sequence in torch.cat([given.train, given.val])[:, 1:].tolist():  # after [CLS]
        assert any(stream[i : i + len(sequence)] == sequence for i in range(len(period)))
    assert not torch.equal(torch.cat([own.train, own.val]), torch.cat([given.train, given.val]))
