"""One folder holds a retriever: ScaNN searcher, item ids and vectors, towers, manifest.

    DIR/manifest.json      format, package versions, dim, distance, item count, the
                           IndexConfig (with tuned search knobs and the k tuned for),
                           sha256 of every file, and its own checksum (manifest_sha256)
    DIR/item_ids.npy       int64 [N], by ScaNN position
    DIR/item_vectors.npy   float32 [N, d] (normalised for cosine): i2i lookups, updates,
                           exact search
    DIR/scann/             searcher.serialize(relative_path=True): the folder can move
    DIR/query_tower/       SavedModel (optional) + tower.json (class, id range)
    DIR/item_tower/        SavedModel (optional) + tower.json
    DIR/user_table.npz     query-tower inputs per user, keyed by "user_id" (optional)
    DIR/user_seen.npz      items each user has seen (optional): users [U] sorted int64,
                           offsets [U + 1] int64, items (int32 or int64) — user
                           users[j] saw items[offsets[j]:offsets[j + 1]]
    DIR/user_vectors.npy   float32 [U, d]: the query tower's output for each user-table
                           row, so that u2i by user id runs no tower (optional)
    DIR/item_vocab.npy     the user's own item ids, position = internal id (optional)
    DIR/user_vocab.npy     the user's own user ids (optional)
    DIR/.twotower-artifact the marker of a folder twotower wrote

Saving builds the folder beside the target and swaps it in atomically
(twotower.artifacts.atomic_directory: an earlier index is replaced only with
overwrite=True, anything else never). Loading validates the manifest (schema, its own
checksum, format, ScaNN version, paths confined to the folder) and every file's checksum
before using anything, and refuses with a ValueError that names what is wrong.
"""

import contextlib
import hashlib
import json
import os
import platform

import numpy as np

from twotower.artifacts import MARKER, atomic_directory, sha256_file
from twotower.index.config import IndexConfig
from twotower.index.retriever import Retriever, SeenItems
from twotower.index.scann_index import ScannIndex

FORMAT = "twotower-index/2"
MANIFEST = "manifest.json"


def _versions():
    import importlib.metadata as md

    import twotower

    out = {"twotower": twotower.__version__, "python": platform.python_version()}
    for dist in ("scann", "tensorflow", "tf-keras", "tensorflow-recommenders", "numpy"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            out[dist] = None
    return out


def _checksums(root):
    sums = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root).replace(os.sep, "/")
            if os.path.islink(full):
                raise ValueError(f"index folder {root!r} holds a symbolic link {rel!r}: "
                                 "refused (every file must be inside the folder)")
            if rel not in (MANIFEST, MARKER):
                sums[rel] = sha256_file(full)
    return dict(sorted(sums.items()))


def save(path, retriever, *, query_example=None, item_example=None, extra=None,
         overwrite=False):
    """Writes ``retriever`` (or a bare ScannIndex) to the folder ``path`` atomically.

    Args:
      path: the folder. An earlier index folder there is replaced (swapped in atomically
        once the new one is complete) only with ``overwrite=True``; a folder twotower did
        not write is never replaced (twotower.artifacts.check_output_dir).
      retriever: a Retriever (its towers are saved when present) or a ScannIndex.
      query_example, item_example: optional example batches for the towers' signatures;
        without them the signature is inferred from the towers' own inputs (ID towers,
        FeatureTower specs, functional models), so saving right after ``fit`` works.
      extra: JSON-able dict stored in the manifest under "extra" (e.g. training info).

    Returns:
      The manifest dict.
    """
    from twotower.index import towers_io

    if isinstance(retriever, ScannIndex):
        retriever = Retriever(retriever)
    index = retriever.index
    # the retriever's lock keeps a concurrent upsert from changing ids/vocab mid-save
    lock = getattr(retriever, "_lock", None) or contextlib.nullcontext()
    with lock, atomic_directory(path, overwrite=overwrite, flag="index path") as tmp:
        with index._lock:
            np.save(os.path.join(tmp, "item_ids.npy"), index._ids)
            np.save(os.path.join(tmp, "item_vectors.npy"), index._vectors)
            os.makedirs(os.path.join(tmp, "scann"))
            index.searcher.serialize(os.path.join(tmp, "scann"), True)
            config = index.config.to_dict()
            size, dim = index.size, index.dim
        if retriever.user_table is not None:
            np.savez(os.path.join(tmp, "user_table.npz"),
                     **{k: (v.astype(str) if v.dtype == object else v)
                        for k, v in retriever.user_table.items()})
        if getattr(retriever, "user_vectors", None) is not None:
            np.save(os.path.join(tmp, "user_vectors.npy"), retriever.user_vectors,
                    allow_pickle=False)
        if retriever.user_seen is not None:
            # the SeenItems arrays as they are (items int32 or int64): no per-user lists,
            # no concatenated copy
            seen = SeenItems.from_mapping(retriever.user_seen)
            np.savez(os.path.join(tmp, "user_seen.npz"), users=seen.users,
                     offsets=seen.offsets, items=seen.items)
        # external ids by internal id (int64 or unicode '<U', never pickled objects)
        for name, vocab in (("item_vocab", getattr(retriever, "item_vocab", None)),
                            ("user_vocab", getattr(retriever, "user_vocab", None))):
            if vocab is not None:
                np.save(os.path.join(tmp, f"{name}.npy"), np.asarray(vocab.values),
                        allow_pickle=False)
        towers = {}
        for name, tower, example in (("query_tower", retriever.query_tower, query_example),
                                     ("item_tower", retriever.item_tower, item_example)):
            if tower is not None:
                towers_io.save_tower(tower, os.path.join(tmp, name), example)
                towers[name] = name
        manifest = {
            "format": FORMAT,
            "versions": _versions(),
            "dim": dim,
            "distance": config["distance"],
            "num_items": size,
            "config": config,
            "towers": towers,
            "extra": extra or {},
            "files": _checksums(tmp),
        }
        manifest["manifest_sha256"] = _canonical_sha256(manifest)
        with open(os.path.join(tmp, MANIFEST), "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=2, sort_keys=True)
    return manifest


MAX_MANIFEST_BYTES = 16 << 20
_TOWER_NAMES = ("query_tower", "item_tower")
_HEX = frozenset("0123456789abcdef")


def _canonical_sha256(manifest):
    """sha256 of the manifest's canonical JSON without its own checksum field: the
    manifest covers itself, so a flipped byte in it is refused like one in a data file."""
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def _confined(root, rel, where):
    """The absolute path of ``rel`` inside ``root``; refuses paths that leave it."""
    if (not isinstance(rel, str) or not rel or rel.startswith(("/", "\\")) or "\\" in rel
            or any(part in ("", ".", "..") for part in rel.split("/"))):
        raise ValueError(f"{where}: path {rel!r} is not a plain relative path inside the "
                         "index folder")
    full = os.path.realpath(os.path.join(root, rel))
    if os.path.commonpath([full, os.path.realpath(root)]) != os.path.realpath(root):
        raise ValueError(f"{where}: path {rel!r} leaves the index folder")
    return full


def _check_schema(manifest, where):
    """Types and ranges of every field :func:`read_manifest` relies on."""
    if not isinstance(manifest, dict):
        raise ValueError(f"{where} must hold a JSON object, got {type(manifest).__name__}")
    expected = {"format": str, "versions": dict, "dim": int, "distance": str,
                "num_items": int, "config": dict, "towers": dict, "extra": dict,
                "files": dict, "manifest_sha256": str}
    missing = sorted(set(expected) - set(manifest))
    if missing:
        raise ValueError(f"{where} is missing the keys {missing}")
    for key, kind in expected.items():
        value = manifest[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ValueError(f"{where}: {key!r} must be a JSON {kind.__name__}, got {value!r}"[:300])
    if manifest["dim"] < 1 or manifest["num_items"] < 0:
        raise ValueError(f"{where}: dim must be >= 1 and num_items >= 0, got "
                         f"{manifest['dim']} and {manifest['num_items']}")
    for name, rel in manifest["towers"].items():
        if name not in _TOWER_NAMES or not isinstance(rel, str):
            raise ValueError(f"{where}: towers must map {list(_TOWER_NAMES)} to folder names, "
                             f"got {name!r}: {rel!r}")
    for rel, digest in manifest["files"].items():
        if not (isinstance(digest, str) and len(digest) == 64 and set(digest) <= _HEX):
            raise ValueError(f"{where}: files[{rel!r}] must be a sha256 hex digest, "
                             f"got {digest!r}"[:300])


def read_manifest(path):
    """Reads and validates ``path/manifest.json`` and the files it lists.

    Checked, in order: the file is UTF-8 JSON of bounded size and depth; its schema (every
    key the loader uses, with its type); its own checksum (``manifest_sha256``: sha256 of
    the canonical JSON of the other keys); the format and ScaNN version; every path in it
    stays inside the folder; the folder holds exactly the listed files (no symbolic
    links) with the listed sha256.

    Raises:
      ValueError: naming the folder or file and what is wrong.
    """
    mpath = os.path.join(path, MANIFEST)
    if not os.path.isdir(path) or not os.path.isfile(mpath):
        raise ValueError(f"{path!r} is not a twotower index folder (no {MANIFEST})")
    if os.path.getsize(mpath) > MAX_MANIFEST_BYTES:
        raise ValueError(f"{mpath!r} is larger than {MAX_MANIFEST_BYTES} bytes: not a manifest")
    with open(mpath, "rb") as f:
        raw = f.read()
    try:
        manifest = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ValueError(f"{mpath!r} is not UTF-8 (byte {e.start}): {e.reason}") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{mpath!r} is not valid JSON: {e}") from None
    except RecursionError:
        raise ValueError(f"{mpath!r} is nested too deeply to be a manifest") from None
    _check_schema(manifest, repr(mpath))
    if manifest["manifest_sha256"] != _canonical_sha256(manifest):
        raise ValueError(f"{mpath!r} does not match its own checksum (manifest_sha256): "
                         "the manifest was changed after it was written")
    if manifest["format"] != FORMAT:
        raise ValueError(f"index folder {path!r} has format {manifest['format']!r}; "
                         f"this twotower reads {FORMAT!r}: rebuild or re-save the index")
    saved_scann = manifest["versions"].get("scann")
    ours = _versions()["scann"]
    if saved_scann != ours:
        raise ValueError(f"index folder {path!r} was written with scann {saved_scann!r}, "
                         f"this environment has scann {ours!r}: rebuild the index")
    for rel in list(manifest["files"]) + list(manifest["towers"].values()):
        _confined(path, rel, repr(mpath))
    expected = manifest["files"]
    actual = _checksums(path)
    missing = sorted(set(expected) - set(actual))
    extra = sorted(set(actual) - set(expected))
    changed = sorted(k for k in set(expected) & set(actual) if expected[k] != actual[k])
    if missing or extra or changed:
        raise ValueError(f"index folder {path!r} does not match its manifest: "
                         f"missing {missing}, unexpected {extra}, changed {changed}")
    return manifest


def load(path, *, load_towers=True):
    """Loads a folder written by :func:`save`; returns a Retriever (towers when saved)."""
    from scann.scann_ops.py import scann_ops_pybind

    from twotower.index import towers_io

    manifest = read_manifest(path)
    ids = np.load(os.path.join(path, "item_ids.npy"))
    vectors = np.load(os.path.join(path, "item_vectors.npy"))
    if vectors.shape != (manifest["num_items"], manifest["dim"]) or len(ids) != len(vectors):
        raise ValueError(f"index folder {path!r}: vectors {vectors.shape} / ids {ids.shape} "
                         f"do not match the manifest ({manifest['num_items']}, "
                         f"{manifest['dim']})")
    try:
        config = IndexConfig.from_dict(manifest["config"])
    except (TypeError, ValueError, KeyError) as e:
        raise ValueError(f"index folder {path!r}: manifest 'config' is not an IndexConfig: "
                         f"{e}") from None
    searcher = scann_ops_pybind.load_searcher(os.path.join(path, "scann"))
    index = ScannIndex(searcher, ids, vectors, config)
    towers = {}
    if load_towers:
        for name in manifest.get("towers", {}):
            towers[name] = towers_io.load_tower(os.path.join(path, name))
    user_table = user_seen = None
    if os.path.exists(os.path.join(path, "user_table.npz")):
        with np.load(os.path.join(path, "user_table.npz"), allow_pickle=False) as z:
            user_table = {k: z[k] for k in z.files}
    if os.path.exists(os.path.join(path, "user_seen.npz")):
        with np.load(os.path.join(path, "user_seen.npz"), allow_pickle=False) as z:
            users, offsets, items = z["users"], z["offsets"], z["items"]
        try:  # the arrays themselves, no dict (older folders have the same keys)
            user_seen = SeenItems(users, offsets, items)
        except ValueError as e:
            raise ValueError(f"index folder {path!r}: user_seen.npz: {e}") from None
    user_vectors = None
    if user_table is not None and os.path.exists(os.path.join(path, "user_vectors.npy")):
        user_vectors = np.load(os.path.join(path, "user_vectors.npy"), allow_pickle=False)
    vocabs = {}  # external ids, when the folder has them (older folders: internal ids)
    for name in ("item_vocab", "user_vocab"):
        if os.path.exists(os.path.join(path, f"{name}.npy")):
            vocabs[name] = np.load(os.path.join(path, f"{name}.npy"), allow_pickle=False)
    retriever = Retriever(index, towers.get("query_tower"), towers.get("item_tower"),
                          user_table=user_table, user_seen=user_seen,
                          user_vectors=user_vectors, **vocabs)
    retriever.manifest = manifest
    return retriever
