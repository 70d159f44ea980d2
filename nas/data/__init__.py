"""Data for proxies: built-in corpora, user files, a cached WordPiece tokenizer, prepared tensors."""

from nas.catalog import Source, resolve_source

__all__ = ["Source", "resolve_source"]
