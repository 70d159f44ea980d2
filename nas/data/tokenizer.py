"""A WordPiece tokenizer trained once per corpus and cached by content hash.

The trainer numbers its initial alphabet in hash-set order, so two trainings on the same corpus give the same
vocabulary under different ids, and with them different embeddings at the same seed. The ids are therefore
renumbered canonically (special tokens first, then the rest sorted) so a study or benchmark rerun trains the
same model on the same token ids.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from nas.models.transformer import CLS_ID, MASK_ID, PAD_ID, SEP_ID, UNK_ID
from nas.settings import cache_dir, staging_path

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
assert [PAD_ID, UNK_ID, CLS_ID, SEP_ID, MASK_ID] == list(range(5))
TOKENIZER_VERSION = 2  # 2: canonical ids (1 numbered the alphabet in hash order)


def corpus_hash(documents: list[str]) -> str:
    digest = hashlib.sha256()
    for document in documents:
        digest.update(document.encode("utf-8"))
        digest.update(b"\x00")
    return digest.hexdigest()[:16]


def tokenizer_dir(documents: list[str], vocab_size: int) -> tuple[Path, bool]:
    """The cached tokenizer folder for this corpus and vocabulary size; trains it on a miss. Returns (dir, hit)."""
    folder = cache_dir("tokenizers") / f"{corpus_hash(documents)}-v{vocab_size}-t{TOKENIZER_VERSION}"
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
    tokenizer.model = models.WordPiece(canonical_vocab(tokenizer.get_vocab(with_added_tokens=False)), unk_token="[UNK]")
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=1_000_000,
    )
    # A staging folder of this trainer's own, published by one rename: concurrent trainers (Ray workers,
    # benchmark processes) must not write into each other's files. Whichever renames first wins; the result is
    # the same. (Named, not mkdtemp'd: save_pretrained creates it with the usual mode for a shared NAS_HOME.)
    tmp = staging_path(folder)
    fast.save_pretrained(tmp)
    try:
        tmp.replace(folder)
    except OSError:  # another trainer published first
        shutil.rmtree(tmp, ignore_errors=True)
    return folder, False


def canonical_vocab(vocab: dict[str, int]) -> dict[str, int]:
    """The same tokens, numbered independently of the trainer's hash order: special tokens keep 0-4, the rest
    follow sorted. WordPiece matches by string, so only the ids change, never the tokenisation."""
    rest = sorted(token for token in vocab if token not in SPECIAL_TOKENS)
    return {token: index for index, token in enumerate([*SPECIAL_TOKENS, *rest])}


def load_tokenizer(folder: Path):
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast.from_pretrained(str(folder))
