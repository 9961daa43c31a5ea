"""Read the records of a W&B offline run file (`run-<id>.wandb`) in tests.

The file is a LevelDB-style log: a 7-byte header, then 32 KiB blocks of records
(crc32 4 bytes, length 2, type 1: full/first/middle/last), each payload a protobuf Record.
wandb no longer ships a Python reader for it.
"""

from __future__ import annotations

import struct
from pathlib import Path

BLOCK = 32768
HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def payloads(path: Path):
    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", "not a W&B data file"
    pos, pending = HEADER, b""
    while pos + HEADER <= len(data):
        left_in_block = BLOCK - (pos % BLOCK)
        if left_in_block < HEADER:  # block trailer
            pos += left_in_block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        chunk = data[pos + HEADER : pos + HEADER + length]
        pos += HEADER + length
        if kind == FULL:
            yield chunk
        elif kind == FIRST:
            pending = chunk
        elif kind == MIDDLE:
            pending += chunk
        elif kind == LAST:
            yield pending + chunk
            pending = b""
        else:
            break


def history_and_summary(path: Path) -> tuple[list[dict], dict]:
    """[{key: json value}] per logged step, and the final summary {key: json value}."""
    from wandb.proto import wandb_internal_pb2 as pb

    history, summary = [], {}
    for raw in payloads(path):
        rec = pb.Record()
        rec.ParseFromString(raw)
        kind = rec.WhichOneof("record_type")
        if kind == "history":
            history.append({item.key or "/".join(item.nested_key): item.value_json for item in rec.history.item})
        elif kind == "summary":
            for item in rec.summary.update:
                summary[item.key or "/".join(item.nested_key)] = item.value_json
    return history, summary
