"""Text corpora: CPython's bundled documentation, or the user's .txt / .jsonl / .parquet files."""

from __future__ import annotations

import ast
import json
import platform
import sysconfig
from pathlib import Path

from nas.catalog import DataError, Source
from nas.settings import cache_dir, staging_path

CORPUS_VERSION = 2  # bump when python_docs() changes what it collects
_PYTHON_DOCS: list[str] = []  # this process's copy: the corpus is the same for every study on this Python

# Parts of the standard library left out of the built-in corpus: tests, GUI demos, vendored and generated code.
_SKIPPED_STDLIB_PARTS = {
    "site-packages",
    "dist-packages",
    "test",
    "tests",
    "idlelib",
    "tkinter",
    "turtledemo",
    "lib2to3",
    "ensurepip",
    "pydoc_data",
    "__pycache__",
}


def python_docs() -> list[str]:
    """pydoc_data's topic pages plus every docstring of the pure-Python standard library (modules, classes,
    functions), read with ``ast`` (nothing is imported, so nothing runs): no download, deterministic for a
    given Python. About 2 MB of English prose on programming, cached per Python version under NAS_HOME."""
    if _PYTHON_DOCS:
        return list(_PYTHON_DOCS)
    cache = cache_dir("corpus") / f"python-docs-{platform.python_version()}-v{CORPUS_VERSION}.json"
    if cache.is_file():
        _PYTHON_DOCS.extend(json.loads(cache.read_text(encoding="utf-8")))
        return list(_PYTHON_DOCS)
    from pydoc_data.topics import topics

    documents = [topics[key] for key in sorted(topics)]
    seen: set[str] = set()
    root = Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(root.rglob("*.py")):
        if _SKIPPED_STDLIB_PARTS & set(path.relative_to(root).parts):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError, OSError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc and len(doc) > 80 and doc not in seen:
                    seen.add(doc)
                    documents.append(doc)
    tmp = staging_path(cache)
    tmp.write_text(json.dumps(documents), encoding="utf-8")
    tmp.replace(cache)
    _PYTHON_DOCS.extend(documents)
    return documents


def read_text_files(source: Source, text_field: str) -> list[str]:
    documents: list[str] = []
    for path in source.files:
        try:
            documents.extend(_read_text_file(path, text_field))
        except DataError:
            raise
        except ValueError as exc:  # not UTF-8 (UnicodeDecodeError), a corrupt parquet (pyarrow's ArrowInvalid)
            raise DataError(f"{path}: cannot be read as text ({type(exc).__name__}: {exc})") from None
    if not documents:
        raise DataError(f"{source.spec!r} holds no text")
    return documents


def _read_text_file(path: Path, text_field: str) -> list[str]:
    """The documents of one .txt (paragraphs), .jsonl (``text_field`` of each line) or .parquet file."""
    suffix = path.suffix.lower()
    if suffix == ".txt":
        content = path.read_text(encoding="utf-8", errors="replace")  # a stray byte in a large corpus is tolerated
        undecodable = content.count("\ufffd")
        if undecodable > max(10, len(content) // 100):
            raise DataError(
                f"{path}: not UTF-8 text ({undecodable:,} of {len(content):,} characters cannot be decoded)"
            )
        return [part for part in content.split("\n\n") if part.strip()]
    if suffix == ".jsonl":
        documents: list[str] = []
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
                text = record.get(text_field) if isinstance(record, dict) else None
                if not isinstance(text, str):
                    raise DataError(f"{path}:{number}: no text field {text_field!r} (set data.text_field)")
                documents.append(text)
        return documents
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError("reading .parquet needs pyarrow: pip install 'ssl-nas[parquet]'") from None
    table = pq.read_table(path)
    if text_field not in table.column_names:
        raise DataError(f"{path}: no column {text_field!r} (columns: {', '.join(table.column_names)})")
    return [t for t in table.column(text_field).to_pylist() if isinstance(t, str)]


def load_documents(source: Source, text_field: str = "text") -> list[str]:
    if source.builtin == "python-docs":
        return python_docs()
    return read_text_files(source, text_field)
