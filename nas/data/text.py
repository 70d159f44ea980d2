"""Text corpora: CPython's bundled documentation, or the user's .txt / .jsonl / .parquet files."""

from __future__ import annotations

import importlib
import inspect
import json
import warnings

from nas.data.sources import Source

# Pure-Python standard library modules whose docstrings add prose to the built-in corpus.
_DOCSTRING_MODULES = (
    "argparse", "ast", "asyncio", "base64", "bisect", "calendar", "collections", "configparser", "contextlib",
    "copy", "csv", "dataclasses", "datetime", "decimal", "difflib", "email.message", "enum", "fractions",
    "functools", "heapq", "http.client", "inspect", "ipaddress", "json", "logging", "pathlib", "pickle",
    "pprint", "random", "shutil", "socket", "statistics", "string", "subprocess", "tarfile", "tempfile",
    "textwrap", "threading", "typing", "unittest", "urllib.parse", "uuid", "zipfile",
)


def python_docs() -> list[str]:
    """pydoc_data's topic pages plus docstrings of a fixed list of stdlib modules: no download, deterministic."""
    from pydoc_data.topics import topics

    documents = [topics[key] for key in sorted(topics)]
    seen = set()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in _DOCSTRING_MODULES:
            try:
                module = importlib.import_module(name)
            except ImportError:
                continue
            for obj in [module, *(v for _, v in sorted(vars(module).items()) if inspect.isclass(v) or inspect.isfunction(v))]:
                doc = inspect.getdoc(obj)
                if doc and len(doc) > 80 and doc not in seen:
                    seen.add(doc)
                    documents.append(doc)
    return documents


def read_text_files(source: Source, text_field: str) -> list[str]:
    documents: list[str] = []
    for path in source.files:
        suffix = path.suffix.lower()
        if suffix == ".txt":
            documents.extend(part for part in path.read_text(encoding="utf-8", errors="replace").split("\n\n") if part.strip())
        elif suffix == ".jsonl":
            with path.open(encoding="utf-8") as handle:
                for number, line in enumerate(handle, 1):
                    if not line.strip():
                        continue
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise ValueError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
                    text = record.get(text_field) if isinstance(record, dict) else None
                    if not isinstance(text, str):
                        raise ValueError(f"{path}:{number}: no text field {text_field!r} (set data.text_field)")
                    documents.append(text)
        elif suffix == ".parquet":
            try:
                import pyarrow.parquet as pq
            except ImportError:
                raise ValueError("reading .parquet needs pyarrow: pip install 'ssl-nas[parquet]'") from None
            table = pq.read_table(path)
            if text_field not in table.column_names:
                raise ValueError(f"{path}: no column {text_field!r} (columns: {', '.join(table.column_names)})")
            documents.extend(t for t in table.column(text_field).to_pylist() if isinstance(t, str))
    if not documents:
        raise ValueError(f"{source.spec!r} holds no text")
    return documents


def load_documents(source: Source, text_field: str = "text") -> list[str]:
    if source.builtin == "python-docs":
        return python_docs()
    return read_text_files(source, text_field)
