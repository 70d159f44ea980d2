"""A WordPiece tokenizer trained once per corpus and cached by content hash."""

from __future__ import annotations

import hashlib
from pathlib import Path

from nas.models.transformer import CLS_ID, MASK_ID, PAD_ID, SEP_ID, UNK_ID
from nas.settings import cache_dir

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
assert [PAD_ID, UNK_ID, CLS_ID, SEP_ID, MASK_ID] == list(range(5))


def corpus_hash(documents: list[str]) -> str:
    digest = hashlib.sha256()
    for document in documents:
        digest.update(document.encode("utf-8"))
        digest.update(b"\x00")
    return digest.hexdigest()[:16]


def tokenizer_dir(documents: list[str], vocab_size: int) -> tuple[Path, bool]:
    """The cached tokenizer folder for this corpus and vocabulary size; trains it on a miss. Returns (dir, hit)."""
    folder = cache_dir("tokenizers") / f"{corpus_hash(documents)}-v{vocab_size}"
    if (folder / "tokenizer.json").is_file():
        return folder, True
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=False)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False)
    tokenizer.train_from_iterator(documents, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
        sep_token="[SEP]", mask_token="[MASK]", model_max_length=1_000_000,
    )
    tmp = folder.with_name(folder.name + ".tmp")
    fast.save_pretrained(tmp)
    tmp.replace(folder) if not folder.exists() else None  # atomic publish; a concurrent trainer may have won
    return folder, False


def load_tokenizer(folder: Path):
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast.from_pretrained(str(folder))
