"""Arrow IPC shards of tokenized text: `{field}-{k:05d}.arrow`, written atomically.

Each shard is an Arrow IPC *stream* file (the format `datasets.Dataset.from_file` reads;
`pyarrow.ipc.open_stream` and pandas through pyarrow read it too). Columns:

    id              string                  product_id or review_id
    tokens          list<string>            token strings (lower-cased if asked)
    token_start     list<int32>             character offsets into the manifest's `text`;
    token_end       list<int32>             text[start:end] is the token's source, -1 for
                                            special tokens such as [CLS]
    token_ids       list<int32>             static and ids modes
    attention_mask  list<int8>              ids mode (all ones: rows are not padded)
    features        list<fixed_size_list<float16, D>>   features mode, [num_tokens, D]

The schema metadata key `mrhp_prep.embed_text` holds JSON: mode, field, tokenizer,
vocabulary file, vector source or model, dim and the stage settings.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pyarrow as pa

from ..arrow_files import read_table, write_stream

METADATA_KEY = b"mrhp_prep.embed_text"


def shard_name(field: str, index: int) -> str:
    return f"{field}-{index:05d}.arrow"


def shard_schema(mode: str, dim: int | None, metadata: dict) -> pa.Schema:
    """The schema of one field's shards in `mode` ("static", "ids" or "features")."""
    fields = [("id", pa.string()), ("tokens", pa.list_(pa.string())),
              ("token_start", pa.list_(pa.int32())), ("token_end", pa.list_(pa.int32()))]
    if mode in ("static", "ids"):
        fields.append(("token_ids", pa.list_(pa.int32())))
    if mode == "ids":
        fields.append(("attention_mask", pa.list_(pa.int8())))
    if mode == "features":
        fields.append(("features", pa.list_(pa.list_(pa.float16(), dim))))
    return pa.schema(fields, metadata={METADATA_KEY: json.dumps(metadata, sort_keys=True)})


def _offsets(lengths: Sequence[int]) -> pa.Array:
    return pa.array(np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]).astype(np.int32))


def _int_lists(rows: Sequence[Sequence[int]], lengths, value_type) -> pa.Array:
    flat = np.fromiter((v for row in rows for v in row), dtype=value_type.to_pandas_dtype(),
                       count=int(sum(lengths)))
    return pa.ListArray.from_arrays(_offsets(lengths), pa.array(flat, type=value_type))


def record_batch(schema: pa.Schema, ids: Sequence[str], tokenized: Sequence,
                 token_ids: Sequence[Sequence[int]] | None = None,
                 features: Sequence[np.ndarray] | None = None) -> pa.RecordBatch:
    """One batch of rows; `tokenized` holds `TokenizedText`s, `features` [n_i, D] float16;
    `token_ids` one list per row, or all rows' ids as one int32 array."""
    lengths = [len(t.tokens) for t in tokenized]
    tokens = pa.ListArray.from_arrays(
        _offsets(lengths), pa.array([tok for t in tokenized for tok in t.tokens], pa.string()))
    columns = {"id": pa.array(list(ids), pa.string()), "tokens": tokens,
               "token_start": _int_lists([t.starts for t in tokenized], lengths, pa.int32()),
               "token_end": _int_lists([t.ends for t in tokenized], lengths, pa.int32())}
    names = schema.names
    if "token_ids" in names and isinstance(token_ids, np.ndarray):
        columns["token_ids"] = pa.ListArray.from_arrays(
            _offsets(lengths), pa.array(token_ids.astype(np.int32, copy=False), pa.int32()))
    elif "token_ids" in names:
        columns["token_ids"] = _int_lists(token_ids, lengths, pa.int32())
    if "attention_mask" in names:
        columns["attention_mask"] = pa.ListArray.from_arrays(
            _offsets(lengths), pa.array(np.ones(int(sum(lengths)), np.int8)))
    if "features" in names:
        dim = schema.field("features").type.value_type.list_size
        flat = (np.concatenate([np.asarray(f, np.float16).reshape(-1) for f in features])
                if features else np.zeros(0, np.float16))
        per_token = pa.FixedSizeListArray.from_arrays(pa.array(flat, pa.float16()), dim)
        columns["features"] = pa.ListArray.from_arrays(_offsets(lengths), per_token)
    return pa.RecordBatch.from_arrays([columns[n] for n in names], schema=schema)


def write_shard(path: str | Path, schema: pa.Schema, batches: Iterable[pa.RecordBatch]) -> int:
    """Stream record batches into `path` atomically (a reader never sees half a shard);
    returns the number of rows."""
    return write_stream(path, schema, batches)


def shard_paths(folder: str | Path, field: str) -> list[Path]:
    return sorted(Path(folder).glob(f"{field}-[0-9][0-9][0-9][0-9][0-9].arrow"))


def read_shard(path: str | Path) -> pa.Table:
    """One shard as a memory-mapped table."""
    return read_table(path)


def read_field(folder: str | Path, field: str) -> pa.Table:
    """All shards of one field ("product" or "review") of an embed-text folder, concatenated."""
    tables = [read_shard(p) for p in shard_paths(folder, field)]
    if not tables:
        raise FileNotFoundError(f"no {field}-*.arrow shards in {folder}")
    return pa.concat_tables(tables)


def features_array(row: pa.ListScalar) -> np.ndarray:
    """One row of the `features` column as [num_tokens, D] float16, without a Python pass.

    (`row.values.values` would be the whole column's buffer: `flatten()` honours the slice.)
    """
    per_token = row.values
    return per_token.flatten().to_numpy(zero_copy_only=False).reshape(len(row),
                                                                      per_token.type.list_size)
