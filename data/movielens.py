"""MovieLens ratings, users and movies, and the retrieval data built from them.

Three roads to MovieLens 100K (docs/data.md):

* the GroupLens zip by URL (https://files.grouplens.org/datasets/movielens/ml-100k.zip),
  downloaded once into the cache ($TWOTOWER_DATA, default ~/.cache/twotower);
* a local folder (or zip) with u.data / u.item / u.user;
* offline, the recbole 1.2.1 wheel (``pip download --no-deps recbole==1.2.1``), whose zip
  holds recbole/dataset_example/ml-100k/ml-100k.{inter,user,item}; it is read straight
  from the zip, recbole is never installed or imported.

The other releases, by URL (``load_movielens("ml-1m")``: the GroupLens zip is downloaded
once into the same cache) or from a local folder or zip: 1M and 10M (``::``-separated
ratings.dat / movies.dat, and users.dat for 1M) and 20M / 25M / latest-small (ratings.csv,
movies.csv; no user file). Their ratings files (up to 25 million lines) are parsed by
pyarrow's CSV reader; a malformed line is reported with its line number.

A ratings.csv without movies.csv is not MovieLens but a plain interaction log: read it
with ``twotower.data.interactions`` (``--interactions`` on the command line).

``load_movielens`` returns a ``MovieLens`` (raw tables); ``prepare_retrieval`` turns it
into implicit feedback, a split (leave-last-out by timestamp per user, or a global temporal
split), each interaction's preceding history (last N items) and the feature tables the
feature towers read.

Reference: F. M. Harper, J. A. Konstan. The MovieLens Datasets: History and Context.
ACM TiiS 5(4), 2015.
"""

import glob
import os
import subprocess
import sys
import urllib.request
import zipfile

import numpy as np

from twotower.data.movielens_formats import (ML1M_OCCUPATIONS, ML100K_GENRES,  # noqa: F401
                                             MovieLens, parse_ml1m, parse_ml100k,
                                             parse_ml_csv, parse_ratings,
                                             parse_recbole_ml100k)
from twotower.data.retrieval_task import (RetrievalConfig, RetrievalData, Split,  # noqa: F401
                                          positions_in, retrieval_task)

ML100K_URL = "https://files.grouplens.org/datasets/movielens/ml-100k.zip"
GROUPLENS = "https://files.grouplens.org/datasets/movielens/"
# release name -> zip on GroupLens (each zip holds one top folder with the release's files)
RELEASES = {
    "ml-100k": "ml-100k.zip",
    "ml-1m": "ml-1m.zip",
    "ml-10m": "ml-10m.zip",
    "ml-20m": "ml-20m.zip",
    "ml-25m": "ml-25m.zip",
    "ml-latest-small": "ml-latest-small.zip",
}
RECBOLE_SPEC = "recbole==1.2.1"
RECBOLE_PREFIX = "recbole/dataset_example/ml-100k/ml-100k"

# ML-1M's age codes, used as the age buckets for every release (a code is the lower edge).
AGE_BUCKETS = (1, 18, 25, 35, 45, 50, 56)


def data_home():
    """The cache folder: $TWOTOWER_DATA, or ~/.cache/twotower."""
    return os.environ.get("TWOTOWER_DATA") or os.path.join(
        os.path.expanduser("~"), ".cache", "twotower")




# ----------------------------------------------------------------------------- parsing

# ----------------------------------------------------------------------------- roads

def _read_text(path_or_zip, name, encoding="latin-1"):
    errors = "replace" if encoding == "utf-8" else "strict"
    if isinstance(path_or_zip, zipfile.ZipFile):
        return path_or_zip.read(name).decode(encoding, errors=errors)
    with open(os.path.join(path_or_zip, name), encoding=encoding, errors=errors) as f:
        return f.read()


_LAYOUTS = (  # (detect file, required files, optional files, parser kind)
    ("u.data", ("u.data", "u.item", "u.user"), (), "100k"),
    ("ratings.dat", ("ratings.dat", "movies.dat"), ("users.dat",), "1m"),
    ("ratings.csv", ("ratings.csv", "movies.csv"), (), "csv"),
)


def _arrow_ratings(open_binary, name, where):
    """Parses a ratings.dat ('::') or ratings.csv (header) with pyarrow's CSV reader —
    seconds for ML-25M where a Python loop takes minutes. On a malformed file the Python
    parser is run on the text to name the bad line."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    dat = name.endswith(".dat")
    names = ["user_id", "_a", "movie_id", "_b", "rating", "_c", "timestamp"] if dat else \
        ["user_id", "movie_id", "rating", "timestamp"]
    types = {"user_id": pa.int64(), "movie_id": pa.int64(), "rating": pa.float32(),
             "timestamp": pa.float64()}
    try:
        with open_binary(name) as f:
            t = pacsv.read_csv(
                f, read_options=pacsv.ReadOptions(column_names=names, skip_rows=0 if dat else 1),
                # '::' is two single-character ':' delimiters with an empty field between
                parse_options=pacsv.ParseOptions(delimiter=":" if dat else ","),
                convert_options=pacsv.ConvertOptions(
                    include_columns=list(types), column_types=types))
        for col in t.columns:
            if col.null_count:
                raise pa.ArrowInvalid("empty field")
    except pa.ArrowInvalid as e:
        with open_binary(name) as f:
            text = f.read().decode("latin-1")
        parse_ratings(text, "::" if dat else ",", where=f"{where}/{name}", header=not dat)
        raise ValueError(f"{where}/{name}: malformed ratings ({e})") from None
    if t.num_rows == 0:
        raise ValueError(f"{where}/{name}: no ratings found")
    out = {k: t.column(k).to_numpy() for k in types}
    out["user_id"] = out["user_id"].astype(np.int64)
    out["movie_id"] = out["movie_id"].astype(np.int64)
    out["rating"] = out["rating"].astype(np.float32)
    out["timestamp"] = out["timestamp"].astype(np.int64)
    return out


def _load_layout(names, read, where, open_binary=None):
    """Detects the release from file names and parses; names missing files."""
    for detect, required, optional, kind in _LAYOUTS:
        if detect not in names:
            continue
        missing = [f for f in required if f not in names]
        if missing:
            hint = (" (a ratings.csv without movies.csv is a plain interaction log: pass it "
                    "with --interactions, twotower.data.interactions.read_interactions)"
                    if kind == "csv" else "")
            raise FileNotFoundError(
                f"MovieLens folder {where!r} is missing {', '.join(missing)} "
                f"(a {detect} layout needs {', '.join(required)}){hint}")
        if kind == "100k":
            return parse_ml100k(*[read(f) for f in required], where=where)
        ratings = _arrow_ratings(open_binary, detect, where) if open_binary else None
        texts = [None if ratings is not None else read(detect), read(required[1])]
        if kind == "1m":
            users = read("users.dat") if "users.dat" in names else None
            return parse_ml1m(*texts, users, where=where, ratings=ratings)
        return parse_ml_csv(*texts, where=where, ratings=ratings)
    raise FileNotFoundError(
        f"no MovieLens files in {where!r}: expected u.data (100K), ratings.dat (1M) or "
        f"ratings.csv (20M/25M/latest); it is missing u.data, u.item and u.user (for your "
        f"own interaction log, pass it with --interactions)")


def load_folder(path):
    """Loads MovieLens from a local folder (100K u.*, 1M *.dat, or 20M/25M/latest *.csv)."""
    if not os.path.isdir(path):
        raise FileNotFoundError(f"MovieLens folder {path!r} does not exist")
    names = set(os.listdir(path))
    return _load_layout(names, lambda f: _read_text(path, f, _encoding(f)), path,
                        lambda f: open(os.path.join(path, f), "rb"))


def _encoding(name):
    # 20M/25M/latest .csv files are UTF-8; 100K, 1M and 10M are Latin-1
    return "utf-8" if name.endswith(".csv") else "latin-1"


def load_zip(path):
    """Loads MovieLens from a GroupLens zip (files inside one top folder, e.g. ml-100k/)."""
    if not zipfile.is_zipfile(path):
        hint = (" To train on your own interaction log (user_id,item_id,timestamp), pass it "
                "with --interactions (twotower.data.interactions.read_interactions)."
                if path.endswith((".csv", ".tsv", ".parquet", ".txt", ".gz")) else "")
        raise ValueError(f"MovieLens source {path!r} is not a zip file nor a MovieLens "
                         f"folder.{hint}")
    with zipfile.ZipFile(path) as z:
        by_base = {}
        for n in z.namelist():
            if not n.endswith("/"):
                by_base.setdefault(os.path.basename(n), n)
        return _load_layout(set(by_base), lambda f: _read_text(z, by_base[f], _encoding(f)),
                            path, lambda f: z.open(by_base[f]))


def load_recbole_wheel(path):
    """Reads ML-100K from recbole's wheel zip (recbole/dataset_example/ml-100k/) offline."""
    with zipfile.ZipFile(path) as z:
        names = set(z.namelist())
        parts = {}
        for ext in ("inter", "user", "item"):
            name = f"{RECBOLE_PREFIX}.{ext}"
            if name not in names:
                raise FileNotFoundError(f"recbole wheel {path!r} is missing {name}")
            parts[ext] = z.read(name).decode("utf-8", errors="replace")
    return parse_recbole_ml100k(parts["inter"], parts["user"], parts["item"],
                                where=f"{os.path.basename(path)}:ml-100k")


def find_recbole_wheel(cache_dir=None):
    """The recbole-1.2.1 wheel in the cache folder, or None."""
    hits = sorted(glob.glob(os.path.join(cache_dir or data_home(), "recbole-1.2.1-*.whl")))
    return hits[0] if hits else None


def fetch_recbole_wheel(cache_dir=None):
    """Runs ``pip download --no-deps recbole==1.2.1`` into the cache; returns the path."""
    cache_dir = cache_dir or data_home()
    found = find_recbole_wheel(cache_dir)
    if found:
        return found
    os.makedirs(cache_dir, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", RECBOLE_SPEC,
           "-d", cache_dir]
    done = subprocess.run(cmd, capture_output=True, text=True)
    found = find_recbole_wheel(cache_dir)
    if done.returncode != 0 or not found:
        raise RuntimeError(f"could not fetch the offline MovieLens 100K ({' '.join(cmd)}): "
                           f"{done.stderr.strip()[-500:]}")
    return found


def download_release(release, cache_dir=None, url=None, progress=True):
    """Downloads a GroupLens MovieLens zip (``RELEASES``: ml-100k, ml-1m, ml-10m, ml-20m,
    ml-25m, ml-latest-small) once into the cache, atomically (a partial download is never
    taken for the file); returns its path. ``url`` overrides the GroupLens address."""
    if release not in RELEASES:
        raise ValueError(f"release must be one of {tuple(RELEASES)}, got {release!r}")
    cache_dir = cache_dir or data_home()
    target = os.path.join(cache_dir, RELEASES[release])
    if os.path.exists(target):
        return target
    url = url or GROUPLENS + RELEASES[release]
    os.makedirs(cache_dir, exist_ok=True)
    tmp = target + f".part-{os.getpid()}"
    from tqdm.auto import tqdm

    try:
        with urllib.request.urlopen(url, timeout=60) as r, open(tmp, "wb") as f:
            size = int(r.headers.get("Content-Length") or 0) or None
            with tqdm(total=size, unit="B", unit_scale=True, desc=f"downloading {release}",
                      disable=not progress) as bar:
                while chunk := r.read(1 << 20):
                    f.write(chunk)
                    bar.update(len(chunk))
        if not zipfile.is_zipfile(tmp):  # a truncated download is not a zip
            raise ValueError(f"the download of {url} is not a zip file")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return target


def download_ml100k(cache_dir=None, url=ML100K_URL):
    """Downloads the GroupLens ml-100k.zip once into the cache (atomic); returns its path."""
    return download_release("ml-100k", cache_dir, url=url)


SOURCES = ("auto", "recbole", "url") + tuple(RELEASES)


def load_movielens(source="auto", *, cache_dir=None):
    """Loads MovieLens.

    Args:
      source: a local folder or zip (any release), a release name ("ml-1m", "ml-10m",
        "ml-20m", "ml-25m", "ml-latest-small", "ml-100k": its GroupLens zip, downloaded
        once into the cache), "url" (GroupLens ml-100k.zip, cached),
        "recbole" (ML-100K from the recbole 1.2.1 wheel in the cache, fetched with pip
        when absent), or "auto": a cached ml-100k.zip, else the recbole wheel (cached or
        fetched), else the URL.
      cache_dir: the cache folder (default $TWOTOWER_DATA or ~/.cache/twotower).

    Returns:
      a MovieLens.
    """
    cache_dir = cache_dir or data_home()
    if source not in SOURCES:
        if os.path.isdir(source):
            return load_folder(source)
        if os.path.isfile(source):
            if source.endswith(".whl"):
                return load_recbole_wheel(source)
            return load_zip(source)
        raise ValueError(f"source must be a folder, a zip, or one of {SOURCES}, got {source!r}")
    if source == "url":
        return load_zip(download_ml100k(cache_dir))
    if source in RELEASES:
        return load_zip(download_release(source, cache_dir))
    if source == "recbole":
        return load_recbole_wheel(fetch_recbole_wheel(cache_dir))
    cached_zip = os.path.join(cache_dir, "ml-100k.zip")
    if os.path.exists(cached_zip):
        return load_zip(cached_zip)
    try:
        return load_recbole_wheel(fetch_recbole_wheel(cache_dir))
    except RuntimeError:
        return load_zip(download_ml100k(cache_dir))


# ----------------------------------------------------------------------------- retrieval

def age_bucket(age):
    """Maps ages to ML-1M's age codes (1, 18, 25, 35, 45, 50, 56); -1 stays -1."""
    age = np.asarray(age, np.int64)
    edges = np.asarray(AGE_BUCKETS)
    idx = np.searchsorted(edges, age, side="right") - 1
    return np.where(age < 0, -1, edges[np.clip(idx, 0, len(edges) - 1)])


def _padded_genres(genres):
    width = max(1, max((len(g) for g in genres), default=1))
    out = np.full((len(genres), width), "", dtype=object)
    for i, g in enumerate(genres):
        out[i, : len(g)] = g
    return out


def prepare_retrieval(ml, config=None):
    """Builds the retrieval task: implicit feedback, split, histories, feature tables.

    Interactions are ordered per user by timestamp (ties keep file order). Each one's
    history is the user's previous ``history_length`` positives, whatever their split, so
    a test query sees what a live system would have seen at that time.

    Args:
      ml: a MovieLens.
      config: a RetrievalConfig.

    Returns:
      a RetrievalData.
    """
    config = config or RetrievalConfig()
    r = ml.ratings
    keep = np.ones(len(r["user_id"]), bool)
    if config.min_rating is not None:
        keep &= r["rating"] >= config.min_rating
    movie_ids = ml.movies["movie_id"]
    items_raw = positions_in(movie_ids, r["movie_id"])
    keep &= items_raw >= 0  # ratings of movies missing from the movie file are dropped
    users_raw, items_raw, ts = r["user_id"][keep], items_raw[keep], r["timestamp"][keep]
    if config.min_user_interactions > 1:
        uniq, counts = np.unique(users_raw, return_counts=True)
        ok = np.isin(users_raw, uniq[counts >= config.min_user_interactions])
        users_raw, items_raw, ts = users_raw[ok], items_raw[ok], ts[ok]
    if len(users_raw) == 0:
        raise ValueError(f"no interactions left after min_rating={config.min_rating!r} and "
                         f"min_user_interactions={config.min_user_interactions!r}")

    # User table: users from the user file (all of them, for cold-start queries), plus
    # any user id only seen in ratings.
    if ml.users is not None:
        user_ids = ml.users["user_id"]
    else:
        user_ids = np.unique(r["user_id"])
    extra = np.setdiff1d(np.unique(users_raw), user_ids).astype(np.int64)
    all_user_ids = np.concatenate([user_ids, extra]).astype(np.int64)
    if ml.users is not None:
        pad = len(extra)
        users = {
            "user_id": all_user_ids,
            "age_bucket": np.concatenate([age_bucket(ml.users["age"]), -np.ones(pad, np.int64)]),
            "gender": np.concatenate([ml.users["gender"], np.full(pad, "", object)]),
            "occupation": np.concatenate([ml.users["occupation"], np.full(pad, "", object)]),
            "zip": np.concatenate([
                np.asarray([z[: config.zip_prefix] for z in ml.users["zip"]], object),
                np.full(pad, "", object)]),
        }
    else:
        users = {"user_id": all_user_ids}
    rows = positions_in(all_user_ids, users_raw)
    n_items = len(movie_ids)
    items = {
        "item_id": np.arange(n_items, dtype=np.int64),
        "movie_id": movie_ids.astype(np.int64),
        "title": np.asarray(ml.movies["title"], object),
        "year": ml.movies["year"].astype(np.int64),
        "genres": _padded_genres(ml.movies["genres"]),
    }
    # no vocabularies: MovieLens's tables carry the external ids themselves (items'
    # movie_id, users' user_id)
    return retrieval_task(rows, items_raw, ts, users, items, config, name="MovieLens")
