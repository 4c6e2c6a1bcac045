"""Benchmark datasets: a folder of images under the data root with a ``MANIFEST.tsv`` listing them.

The manifest is tab-separated with a header row; the columns used here are ``file`` (path inside
the folder), ``width``, ``height``, ``mode`` and ``sha256``. The data root is ``$DIP_DATA``
(``data/`` by default), so a dataset ``Set5`` lives in ``$DIP_DATA/Set5/``.
"""

from __future__ import annotations

import csv
import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path

from dip.errors import DipError

MANIFEST = "MANIFEST.tsv"
REQUIRED_COLUMNS = ("file", "width", "height", "mode", "sha256")


@dataclass(frozen=True)
class DatasetImage:
    name: str  # the manifest's ``file`` entry
    path: Path
    width: int
    height: int
    mode: str
    sha256: str

    @property
    def stem(self) -> str:
        return Path(self.name).with_suffix("").as_posix().replace("/", "_")


def sha256_of(path: Path) -> str:
    """The sha256 of the file at ``path``, read once per version of the file: each fit of a sweep or experiment
    digests its inputs, the pre-images' AlexNet weights (some 233 MB) among them. Writing, replacing or moving
    another file into its place changes the times or the inode that the version is known by."""
    status = path.stat()
    return _sha256(path.resolve(), status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns,
                   status.st_ctime_ns)


@functools.lru_cache(maxsize=256)
def _sha256(path: Path, *version: int) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(folder: Path) -> list[DatasetImage]:
    """The images ``folder/MANIFEST.tsv`` lists, in its order (nothing is checked on disk)."""
    manifest = folder / MANIFEST
    try:
        with manifest.open(newline="") as handle:
            rows = list(csv.DictReader(handle, delimiter="\t"))
    except OSError as error:
        raise DipError(f"cannot read dataset manifest {manifest}: {error.strerror or error}") from None
    missing = [column for column in REQUIRED_COLUMNS if rows and column not in rows[0]]
    if not rows or missing:
        what = f"no column {', '.join(missing)}" if missing else "no images"
        raise DipError(f"bad dataset manifest {manifest}: {what}")
    try:
        return [
            DatasetImage(row["file"], folder / row["file"], int(row["width"]), int(row["height"]), row["mode"],
                         row["sha256"].strip().lower())
            for row in rows
        ]
    except (TypeError, ValueError) as error:
        raise DipError(f"bad dataset manifest {manifest}: {error}") from None


def open_dataset(root: str | Path, name: str, images: list[str] | None = None,
                 verify_checksums: bool = True) -> list[DatasetImage]:
    """The images of dataset ``name`` under ``root`` (all, or those named in ``images``, in the
    manifest's order), each checked to exist and, with ``verify_checksums``, to match its sha256.

    Every problem is a one-line ``DipError`` naming the folder or file it expected.
    """
    folder = Path(root).expanduser() / name
    if not folder.is_dir():
        raise DipError(f"dataset {name} not found: expected the folder {folder.resolve()} "
                       f"(set DIP_DATA to the folder holding the datasets)")
    entries = read_manifest(folder)
    if images is not None:
        listed = {entry.name for entry in entries}
        unknown = [image for image in images if image not in listed]
        if unknown:
            raise DipError(f"{', '.join(unknown)} not in {folder / MANIFEST} (it lists: {', '.join(sorted(listed))})")
        entries = [entry for entry in entries if entry.name in set(images)]
    for entry in entries:
        if not entry.path.is_file():
            raise DipError(f"dataset {name} is incomplete: {entry.path} is missing")
        if verify_checksums and sha256_of(entry.path) != entry.sha256:
            raise DipError(f"checksum mismatch for {entry.path} (expected sha256 {entry.sha256} from {MANIFEST})")
    return entries
