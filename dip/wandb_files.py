"""Reading offline W&B run files (``run-*.wandb``) without the W&B service: what a run logged, for
the dashboard. Imports only W&B's protobuf messages, so it stays light."""

from __future__ import annotations

import json
import struct
from pathlib import Path

BLOCK = 32 * 1024
FULL, FIRST, LAST = 1, 2, 4


def offline_run_records(run_file: Path):
    """The ``wandb_internal_pb2.Record`` messages of an offline run file (``run-*.wandb``).

    The file is a 7-byte header (``:W&B``, magic, version), then a LevelDB log: 32 KiB blocks of
    chunks, each ``crc32c (4) | length (2, little-endian) | type (1: full, 2: first, 3: middle,
    4: last) | data``; a block's tail shorter than a chunk header is padding.
    """
    from google.protobuf.message import DecodeError
    from wandb.proto import wandb_internal_pb2

    data = Path(run_file).read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{run_file} is not a W&B run file")
    offset, pending = 7, b""
    while offset + 7 <= len(data):
        room = BLOCK - offset % BLOCK
        if room < 7:
            offset += room
            continue
        length, kind = struct.unpack("<HB", data[offset + 4 : offset + 7])
        chunk = data[offset + 7 : offset + 7 + length]
        offset += 7 + length
        if kind == 0 and length == 0:  # zero padding
            continue
        pending = chunk if kind in (FULL, FIRST) else pending + chunk
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            try:
                record.ParseFromString(pending)
            except DecodeError:
                raise ValueError(f"{run_file} holds a damaged record") from None
            yield record


def offline_history(run_file: Path) -> list[dict]:
    """The rows an offline run logged with ``log`` / ``log_metrics``, values decoded from JSON."""
    rows = []
    for record in offline_run_records(run_file):
        if record.WhichOneof("record_type") == "history":
            rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                         for item in record.history.item})
    return rows
