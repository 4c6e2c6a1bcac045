"""Read an offline W&B run file (``run-*.wandb``): a 7-byte header, then LevelDB-log records
(32 KiB blocks; each chunk: crc32c, little-endian length, type FULL/FIRST/MIDDLE/LAST) holding
``wandb_internal_pb2.Record`` messages. Lets tests check what an offline run logged."""

from __future__ import annotations

import json
import struct
from pathlib import Path

from wandb.proto import wandb_internal_pb2

BLOCK = 32 * 1024
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path):
    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    offset, pending = 7, b""
    while offset + 7 <= len(data):
        room = BLOCK - offset % BLOCK
        if room < 7:
            offset += room
            continue
        length, kind = struct.unpack("<HB", data[offset + 4 : offset + 7])
        chunk = data[offset + 7 : offset + 7 + length]
        offset += 7 + length
        if kind == 0 and length == 0:
            continue
        pending = chunk if kind in (FULL, FIRST) else pending + chunk
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record


def summary(run_dir: Path) -> dict:
    """The final summary of the single offline run under ``run_dir/wandb``."""
    (run_file,) = Path(run_dir).glob("wandb/offline-run-*/run-*.wandb")
    values: dict = {}
    for record in records(run_file):
        if record.WhichOneof("record_type") == "summary":
            for item in record.summary.update:
                values[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    return values


def run_info(run_dir: Path):
    (run_file,) = Path(run_dir).glob("wandb/offline-run-*/run-*.wandb")
    for record in records(run_file):
        if record.WhichOneof("record_type") == "run":
            return record.run
    raise AssertionError(f"no run record in {run_file}")
