"""Where trial checkpoints live: ``NAS_STORAGE_URI``, a local or shared folder (default: ``NAS_HOME``) or an object
store (``s3://bucket/prefix``, with ``NAS_STORAGE_ENDPOINT`` for an S3-compatible server such as MinIO).

On a cluster a trial's checkpoint is written by whichever node ran it; Ray Tune uploads it to this storage through
pyarrow's file systems, and the trial records where it went (``weights_path``): a path for a folder, a URI for an
object store, which ``nas export`` on any machine can read back. Credentials come from the usual AWS variables
(``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``) and travel with the file system object to the
Ray workers.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from nas.errors import UserError
from nas.settings import nas_home

if TYPE_CHECKING:
    import pyarrow.fs

STORAGE_URI_ENV = "NAS_STORAGE_URI"
ENDPOINT_ENV = "NAS_STORAGE_ENDPOINT"
MARKER_FILE = ".complete"


class StorageError(UserError, ValueError):
    pass


def storage_uri() -> str:
    return os.environ.get(STORAGE_URI_ENV) or str(nas_home())


def is_remote(location: str) -> bool:
    return "://" in location and not location.startswith("file://")


def tune_storage(folder: str = "ray_results") -> tuple[str, pyarrow.fs.FileSystem | None]:
    """Ray's ``storage_path`` and ``storage_filesystem`` for experiments under ``folder`` of the storage."""
    return ray_storage(storage_location(folder))


def ray_storage(location: str) -> tuple[str, pyarrow.fs.FileSystem | None]:
    """``location`` as Ray's ``storage_path`` and ``storage_filesystem`` (None: a local or shared folder)."""
    if not is_remote(location):
        return location, None
    filesystem, path = filesystem_for(location)
    return path, filesystem


def storage_location(*parts: str) -> str:
    """``parts`` joined under the storage: a local path, or a URI in an object store."""
    uri = storage_uri()
    if not is_remote(uri):
        return str(Path(uri.removeprefix("file://")).resolve().joinpath(*parts))
    return "/".join([uri.rstrip("/"), *parts])


def filesystem_for(uri: str) -> tuple[pyarrow.fs.FileSystem, str]:
    """pyarrow's file system for ``uri`` and the path inside it; S3 honours ``NAS_STORAGE_ENDPOINT``."""
    import pyarrow.fs

    parsed = urlparse(uri)
    if parsed.scheme == "s3":
        endpoint = os.environ.get(ENDPOINT_ENV)
        options: dict = {
            "access_key": os.environ.get("AWS_ACCESS_KEY_ID"),
            "secret_key": os.environ.get("AWS_SECRET_ACCESS_KEY"),
            "region": os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
        }
        if endpoint:
            address = urlparse(endpoint)
            options.update(endpoint_override=address.netloc or address.path, scheme=address.scheme or "https")
        return pyarrow.fs.S3FileSystem(
            **{k: v for k, v in options.items() if v is not None}
        ), f"{parsed.netloc}{parsed.path}"
    try:
        return pyarrow.fs.FileSystem.from_uri(uri)
    except (ValueError, OSError) as error:
        raise StorageError(f"{STORAGE_URI_ENV}={uri!r} is not a storage pyarrow can open: {error}") from None


def checkpoint_location(checkpoint) -> str:
    """What a trial records of its Tune checkpoint: the local path, or ``scheme://path`` in an object store."""
    import pyarrow.fs

    filesystem = getattr(checkpoint, "filesystem", None)
    if filesystem is None or isinstance(filesystem, pyarrow.fs.LocalFileSystem):
        return checkpoint.path
    return f"{filesystem.type_name}://{checkpoint.path}"


def open_location(location: str) -> tuple[pyarrow.fs.FileSystem, str]:
    """The file system and path of any location, local ones included (one code path for listing and reading)."""
    if is_remote(location):
        return filesystem_for(location)
    import pyarrow.fs

    return pyarrow.fs.LocalFileSystem(), str(Path(location.removeprefix("file://")).resolve())


def fetch_folder(location: str, into: Path) -> Path:
    """A local folder with the files at ``location``: the folder itself when local, else a copy in ``into``."""
    if not is_remote(location):
        return Path(location.removeprefix("file://"))
    import pyarrow.fs

    filesystem, path = filesystem_for(location)
    into.mkdir(parents=True, exist_ok=True)
    try:
        pyarrow.fs.copy_files(
            path, str(into), source_filesystem=filesystem, destination_filesystem=pyarrow.fs.LocalFileSystem()
        )
    except OSError as error:
        raise StorageError(f"cannot read {location}: {error}") from None
    return into


def publish_folder(folder: Path, location: str) -> str:
    """Copy the files of ``folder`` to ``location`` (a path or an object-store URI); returns ``location``.

    Used for what another machine must read back: an export written to the storage, the study's tokenizer.
    """
    import pyarrow.fs

    filesystem, path = open_location(location)
    try:
        pyarrow.fs.copy_files(
            str(Path(folder).resolve()),
            path,
            source_filesystem=pyarrow.fs.LocalFileSystem(),
            destination_filesystem=filesystem,
        )
    except OSError as error:
        raise StorageError(f"cannot write {location}: {error}") from None
    return location


def shared_copy(folder: Path, *parts: str) -> str:
    """Where any machine can read ``folder`` (a cache of this one): the folder itself when no ``NAS_STORAGE_URI``
    is set (one machine), else its copy at ``parts`` under the storage, written once."""
    if not os.environ.get(STORAGE_URI_ENV):
        return str(folder)
    location = storage_location(*parts)
    filesystem, path = open_location(location)
    import pyarrow.fs

    try:
        if filesystem.get_file_info(f"{path}/{MARKER_FILE}").type == pyarrow.fs.FileType.File:
            return location
    except OSError as error:
        raise StorageError(f"cannot read {location}: {error}") from None
    publish_folder(folder, location)
    with filesystem.open_output_stream(f"{path}/{MARKER_FILE}") as marker:  # written last: the copy is whole
        marker.write(b"complete\n")
    return location
