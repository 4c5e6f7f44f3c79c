"""``interactions_dataset``: a log's files streamed into ``tf.data`` batches, ids mapped to rows
by the vocabularies, sharded by file across workers.
"""


import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from twotower.data.interactions import iter_batches
from twotower.data.log_files import list_files

def _tf_dtype(arrow_type, tf):
    if pa.types.is_integer(arrow_type):
        return tf.int64
    if pa.types.is_floating(arrow_type):
        return tf.float32
    return tf.string


def interactions_dataset(path, columns=None, *, extra=(), batch_size=4096, user_vocab=None,
                         item_vocab=None, drop_unknown=True, num_shards=1, shard_index=0,
                         input_context=None, cycle_length=2, deterministic=True):
    """A streaming ``tf.data.Dataset`` over a log's files: batches of
    {"user_id", "item_id", "timestamp", *extra} (the last batch of a file may be smaller).

    Built as ``Dataset.from_tensor_slices(files)`` → ``shard`` → ``interleave`` of a
    generator that reads Arrow record batches of one file (``ParquetFile.iter_batches``),
    so memory is a few batches whatever the log's size and files are read in parallel.

    Sharding across workers is by FILE: pass ``num_shards``/``shard_index``, or the
    ``tf.distribute.InputContext`` that ``strategy.distribute_datasets_from_function``
    gives (its ``num_input_pipelines``/``input_pipeline_id``). (tf.data's automatic FILE
    auto-shard only recognises its own reader ops — TFRecordDataset and friends — not a
    Python generator, so the file list is sharded explicitly here; give each worker at
    least one shard.)

    With ``user_vocab``/``item_vocab`` (IdVocabulary) the ids come out as int64 indexes;
    rows with an unknown id are dropped (``drop_unknown``) or kept as -1.
    """
    import tensorflow as tf

    files = list_files(path)
    if input_context is not None:
        num_shards, shard_index = input_context.num_input_pipelines, \
            input_context.input_pipeline_id
    if not 0 <= shard_index < num_shards:
        raise ValueError(f"shard_index must be in [0, num_shards={num_shards}), got "
                         f"{shard_index!r}")
    if num_shards > len(files):
        raise ValueError(f"num_shards={num_shards} is more than the log's {len(files)} "
                         f"file(s) ({path}): write more shards (csv_to_parquet rows_per_shard)")
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    # output types from the first file's first batch (Parquet: its schema)
    _, _, first = next(iter_batches(files[0], columns, extra=extra, batch_size=1))
    vocabs = {"user_id": user_vocab, "item_id": item_vocab}
    spec = {}
    for name in first.schema.names:
        dtype = tf.int64 if vocabs.get(name) is not None else _tf_dtype(
            first.schema.field(name).type, tf)
        spec[name] = tf.TensorSpec([None], dtype)

    # Arrow work (reading, id lookup: a hash table of the vocabulary per call) is done on
    # blocks of at least 64K rows, then cut into batch_size batches
    block = max(int(batch_size), 1 << 16)

    def blocks(file):
        for _, _, b in iter_batches(file, columns, extra=extra, batch_size=block):
            out = {}
            for name in spec:
                col = b.column(name)
                if vocabs.get(name) is not None:
                    out[name] = vocabs[name].lookup(col)
                elif spec[name].dtype == tf.string:
                    out[name] = np.asarray(pc.cast(col, pa.string()).to_pylist(), dtype=object)
                else:
                    out[name] = col.to_numpy(zero_copy_only=False)
            if drop_unknown and (user_vocab is not None or item_vocab is not None):
                keep = np.ones(b.num_rows, bool)
                for name in ("user_id", "item_id"):
                    if vocabs[name] is not None:
                        keep &= out[name] >= 0
                if not keep.all():
                    out = {k: v[keep] for k, v in out.items()}
            if len(out["item_id"]):
                yield out

    def generate(file):
        file = file.decode() if isinstance(file, bytes) else str(file)
        for out in blocks(file):
            n = len(out["item_id"])
            for start in range(0, n, batch_size):
                yield {k: v[start:start + batch_size] for k, v in out.items()}

    ds = tf.data.Dataset.from_tensor_slices(files)
    if num_shards > 1:
        ds = ds.shard(num_shards, shard_index)
    return ds.interleave(
        lambda f: tf.data.Dataset.from_generator(generate, args=(f,), output_signature=spec),
        cycle_length=max(1, min(cycle_length, len(files))), block_length=1,
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
