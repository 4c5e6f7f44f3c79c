"""Warm start: a two-tower recipe trains on a new day's log from the model of an earlier
run (``--warm-start PREV_OUT``).

What an earlier run leaves for this, in ``PREV_OUT/warm_start/`` (written with its
``--out`` by :func:`save_state`):

    state.json     format, the recipe (its module), the model settings, both towers'
                   FeatureTower configs (every feature spec with its vocabulary), the
                   feature columns and their kinds, the sha256 of the two files below
    arrays.npz     every tower weight, the loss's weights (the streaming frequency
                   estimator's arrays and clock, a learned temperature), and the Adam
                   slots (m, v) of every trainable weight with the optimizer's step count
    item_vocab.npy, user_vocab.npy   the log's own ids by internal id

The merge (:func:`merge_towers`) is by external id, never by position, because every
log numbers its ids afresh (most frequent first):

* **ids** (``user_id`` / ``item_id`` embeddings, the history's item table): the new
  towers take the new log's vocabularies; a row of an id the previous model knew is its
  previous row, copied; a new id's row is initialised as a fresh tower's would be (the
  initializer, under the recipe's seed). An id of today's data that today's log does
  not train (an item only in ``--items``) keeps its previous row too; an id absent from
  today's data is not in today's towers.
* **feature columns** (categorical values, text tokens, multi-hot tokens): the
  vocabulary is the previous one followed by today's new values, each known value
  keeping its row; numeric columns keep the previous mean and variance; feature widths
  stay the previous ones, so the MLP weights are copied as they are.
* **the streaming frequency estimator** (Yi et al. 2019, data/frequency.py): its clock
  (step, occurrences) carries on; each known item's last sighting and gap estimate move
  to the item's new bucket; an item it has not seen (new today) counts as seen at the
  warm-start moment with the median known gap — left unseen, its first gap would run
  from the stream's origin days ago (p̂ = 1/t, far too rare: −log Q would inflate its
  logit and training would push the item down until ~1/α sightings wash it out).
* **the optimizer**: Adam's first and second moments of every known row and of every
  dense weight, and its step count (Adam's bias correction needs the count that goes
  with the moments); new rows start at zero moments, as in a fresh optimizer.

So, before any new step, every known id with unchanged features is embedded exactly as
the previous model embedded it. An entity whose features changed, or that carries a
text or multi-hot token the previous tower had no row for (its mean now includes that
token), is embedded from its new features.

With no training to follow (``--epochs 0``: an "empty day"), new ids get the previous
OOV bucket's row instead of a random one — what the previous model gives any unknown
id, so a new item is embedded from its features — and a new history item a zero row.

Refused, with one line naming PREV_OUT and what differs: a folder twotower did not
write, one without ``warm_start/`` (``--no-export`` runs write it too; runs without
``--out`` leave nothing to start from), another recipe, other tower shapes (``--dim``,
``--hidden``, ``--history-pooling``, history on/off), other feature columns or kinds,
ids of another type (integer vs string).
"""

import dataclasses
import json
import os

import numpy as np
import tensorflow as tf

from twotower.artifacts import is_twotower_artifact, sha256_file
from twotower.data.external_ids import ExternalIds
from twotower.data.frequency import StreamingFrequencyEstimator

STATE_DIR = "warm_start"
STATE_FILE = "state.json"
ARRAYS_FILE = "arrays.npz"
FORMAT = "twotower-warm-start/1"
ID_FEATURES = {"user_id": "user", "item_id": "item"}   # categorical id features → side
HISTORY_FEATURE = "history"
# model settings that must match (the towers' shapes)
SHAPE_SETTINGS = ("dim", "hidden", "history_pooling")
_SLOTS = ("m", "v")


class WarmStartError(ValueError):
    """A ``--warm-start`` folder that cannot start this run (names the folder and why)."""


# -- what a run leaves --------------------------------------------------------------------

def _tower_parts(tower):
    """(key, variable) for every weight of a FeatureTower, keyed by its role (feature name
    and position), not by Keras' variable names (which depend on what else the process
    built)."""
    parts = []
    for f in tower.features:
        name = f["name"]
        for where, layers in (("emb", tower._emb), ("pre", tower._pre)):
            layer = layers.get(name)
            if layer is not None:
                parts += [(f"{where}/{name}/{j}", v) for j, v in enumerate(layer.weights)]
    for i, layer in enumerate(tower._hidden):
        parts += [(f"hidden/{i}/{j}", v) for j, v in enumerate(layer.weights)]
    parts += [(f"out/{j}", v) for j, v in enumerate(tower._out.weights)]
    seen = {id(v) for _, v in parts}
    rest = [v for v in tower.weights if id(v) not in seen]
    if rest:
        raise WarmStartError(f"tower {tower.name!r} has weights outside its features and "
                             f"MLP ({rest[0].name}); warm start handles FeatureTowers only")
    return parts


def _row_table(tower, name):
    """The variable whose rows are indexed by feature ``name``'s values, or None."""
    f = next(f for f in tower.features if f["name"] == name)
    layer = tower._emb.get(name)
    if layer is None or f["kind"] in ("dense", "hashed"):
        return None
    if f["kind"] == "multi_hot":
        return layer.kernel
    return layer.embeddings


def _estimator(loss):
    found = [m for m in loss.submodules if isinstance(m, StreamingFrequencyEstimator)]
    return found[0] if found else None


def _loss_parts(loss):
    """(key, variable) of the loss's weights: the estimator's by name, the rest in order."""
    est = _estimator(loss)
    parts = []
    if est is not None:
        parts += [(f"loss/estimator/{k}", getattr(est, k))
                  for k in ("step", "occurrences", "last_seen", "delta")]
    seen = {id(v) for _, v in parts}
    parts += [(f"loss/other/{j}", v)
              for j, v in enumerate(w for w in loss.weights if id(w) not in seen)]
    return parts


def _model_parts(model):
    return ([(f"query_tower/{k}", v) for k, v in _tower_parts(model.query_tower)]
            + [(f"item_tower/{k}", v) for k, v in _tower_parts(model.item_tower)]
            + _loss_parts(model.retrieval_loss))


def _slot_variables(optimizer, variable):
    """Adam's (m, v) slot variables of ``variable``, or None when the optimizer has none
    for it (not built, or not an Adam of tf.keras)."""
    index = getattr(optimizer, "_index_dict", None)
    if not index or not hasattr(optimizer, "_momentums"):
        return None
    at = index.get(optimizer._var_key(variable))
    if at is None:
        return None
    return optimizer._momentums[at], optimizer._velocities[at]


def _json_safe(obj):
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def save_state(folder, model, data, config):
    """Writes ``folder`` (a recipe's ``OUT/warm_start``): what :func:`load_previous`
    reads to start the next run from this model (module docstring)."""
    os.makedirs(folder, exist_ok=True)
    arrays = {}
    parts = _model_parts(model)
    for key, var in parts:
        arrays[key] = np.asarray(var.numpy())
    optimizer = getattr(model, "optimizer", None)
    slots = 0
    if optimizer is not None:
        for key, var in parts:
            if not var.trainable:
                continue
            pair = _slot_variables(optimizer, var)
            if pair is not None:
                for s, slot in zip(_SLOTS, pair):
                    arrays[f"slot/{s}/{key}"] = np.asarray(slot.numpy())
                slots += 1
        if slots:
            arrays["slot/iterations"] = np.asarray(optimizer.iterations.numpy())
    np.savez(os.path.join(folder, ARRAYS_FILE), **arrays)
    files = {ARRAYS_FILE: None}
    for side in ("item", "user"):
        vocab = getattr(data, f"{side}_vocab", None)
        if vocab is not None:
            np.save(os.path.join(folder, f"{side}_vocab.npy"), np.asarray(vocab),
                    allow_pickle=False)
            files[f"{side}_vocab.npy"] = None
    state = {
        "format": FORMAT,
        "recipe": type(config).__module__,
        "settings": {k: _json_safe(getattr(config, k)) for k in SHAPE_SETTINGS
                     if hasattr(config, k)},
        "towers": {name: _json_safe(getattr(model, name).get_config())
                   for name in ("query_tower", "item_tower")},
        "item_kinds": _json_safe(dict(getattr(data, "item_kinds", None) or {})),
        "user_kinds": _json_safe(dict(getattr(data, "user_kinds", None) or {})),
        "estimator": (_estimator(model.retrieval_loss).get_config()["num_buckets"]
                      if _estimator(model.retrieval_loss) is not None else None),
        "optimizer_slots": bool(slots),
        "files": {k: sha256_file(os.path.join(folder, k)) for k in files},
    }
    with open(os.path.join(folder, STATE_FILE), "w", encoding="utf-8") as f:
        json.dump(state, f, indent=1, sort_keys=True)
    return state


# -- reading and checking an earlier run -----------------------------------------------------

@dataclasses.dataclass
class PreviousModel:
    """An earlier run's state (:func:`load_previous`): ``state`` (state.json),
    ``arrays`` (name → array), ``item_vocab`` / ``user_vocab`` (external ids by internal
    id), ``path`` (PREV_OUT)."""

    path: str
    state: dict
    arrays: dict
    item_vocab: np.ndarray
    user_vocab: np.ndarray

    def tower_spec(self, tower, name):
        return next((f for f in self.state["towers"][tower]["features"]
                     if f["name"] == name), None)


def _fail(path, why):
    raise WarmStartError(f"--warm-start {path!r}: {why}")


def read_state(path):
    """Reads and checks ``PATH/warm_start/state.json`` (no arrays): the folder is one
    twotower wrote, the state's format is this one. Returns the state dict."""
    if not isinstance(path, str) or not path:
        raise WarmStartError(f"--warm-start must be a folder, got {path!r}")
    if not os.path.isdir(path):
        _fail(path, "no such folder")
    if not is_twotower_artifact(path):
        _fail(path, "not a folder twotower wrote (no .twotower-artifact marker)")
    state_path = os.path.join(path, STATE_DIR, STATE_FILE)
    if not os.path.isfile(state_path):
        _fail(path, f"has no {STATE_DIR}/{STATE_FILE} (written by a two-tower recipe's "
              "--out since warm start exists; retrain once with --out)")
    try:
        with open(state_path, encoding="utf-8") as f:
            state = json.load(f)
    except (OSError, ValueError) as e:
        _fail(path, f"unreadable {STATE_DIR}/{STATE_FILE} ({e})")
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        _fail(path, f"{STATE_DIR}/{STATE_FILE} has format "
              f"{state.get('format') if isinstance(state, dict) else None!r}, this twotower "
              f"reads {FORMAT!r}")
    for key in ("recipe", "settings", "towers", "item_kinds", "user_kinds", "files"):
        if key not in state:
            _fail(path, f"{STATE_DIR}/{STATE_FILE} lacks {key!r}")
    return state


def check_settings(path, state, config):
    """Refuses another recipe or other tower shapes than ``config``'s (before any data
    is read)."""
    recipe = type(config).__module__
    if state["recipe"] != recipe:
        _fail(path, f"written by recipe {state['recipe'].rsplit('.', 1)[-1]!r}, not "
              f"{recipe.rsplit('.', 1)[-1]!r}")
    for key, old in state["settings"].items():
        new = _json_safe(getattr(config, key, None))
        if new != old:
            _fail(path, f"other tower shapes: --{key.replace('_', '-')} was {old!r} there, "
                  f"{new!r} now")


def load_previous(path, config):
    """Reads PREV_OUT for ``config``'s run: the state (checked as :func:`read_state`,
    :func:`check_settings`), its files' checksums, the arrays and vocabularies.
    Returns a :class:`PreviousModel`."""
    state = read_state(path)
    check_settings(path, state, config)
    folder = os.path.join(path, STATE_DIR)
    for name, digest in state["files"].items():
        full = os.path.join(folder, name)
        if os.path.basename(name) != name or not os.path.isfile(full):
            _fail(path, f"{STATE_DIR}/{name} is missing")
        if sha256_file(full) != digest:
            _fail(path, f"{STATE_DIR}/{name} does not match its checksum in {STATE_FILE}")
    with np.load(os.path.join(folder, ARRAYS_FILE), allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    vocabs = {}
    for side in ("item", "user"):
        p = os.path.join(folder, f"{side}_vocab.npy")
        if not os.path.isfile(p):
            _fail(path, f"trained on MovieLens (no {side} vocabulary): warm start takes a "
                  "folder of a run on --interactions")
        vocabs[side] = np.load(p, allow_pickle=False)
    return PreviousModel(path, state, arrays, vocabs["item"], vocabs["user"])


def check_data(prev, data):
    """Refuses a log whose feature columns, kinds or id types differ from the previous
    run's."""
    for side in ("item", "user"):
        old = prev.state[f"{side}_kinds"]
        new = _json_safe(dict(getattr(data, f"{side}_kinds", None) or {}))
        if old != new:
            gone = sorted(set(old) - set(new))
            added = sorted(set(new) - set(old))
            changed = sorted(k for k in set(old) & set(new) if old[k] != new[k])
            what = "; ".join(x for x in (
                f"missing {gone}" if gone else "", f"new {added}" if added else "",
                ", ".join(f"{k!r} was {old[k]} there, {new[k]} now" for k in changed))
                if x)
            _fail(prev.path, f"other {side} feature columns ({what})")
        vocab = getattr(data, f"{side}_vocab", None)
        if vocab is None:
            _fail(prev.path, "warm start needs --interactions (a log with its own ids)")
        old_kind = "string" if getattr(prev, f"{side}_vocab").dtype.kind == "U" else "integer"
        new_kind = "string" if np.asarray(vocab).dtype.kind == "U" else "integer"
        if old_kind != new_kind:
            _fail(prev.path, f"its {side} ids are {old_kind}s, this log's are {new_kind}s")


# -- the merge ----------------------------------------------------------------------------

def _old_internal(prev_vocab, new_vocab, new_internal):
    """The previous internal id of each new internal id (-1: new)."""
    ext = np.asarray(new_vocab)[np.asarray(new_internal, np.int64)]
    if len(ext) == 0:
        return np.zeros(0, np.int64)
    return ExternalIds(prev_vocab).find(ext)


def _merge_feature(kind, name, new, old, prev, data, side, fresh):
    """(merged spec, row map) of one feature. The row map gives, for each row of the new
    table, the previous row (>= 0), -1 (keep the fresh initialisation) or -2 (zeros)."""
    if old is None or old["kind"] != kind:
        _fail(prev.path, f"other feature columns: {side} tower feature {name!r} is "
              f"{kind} now, {old['kind'] if old else 'absent'} there")
    if name in ID_FEATURES and kind == "categorical":
        vocab_side = ID_FEATURES[name]
        old_pos = np.full(len(getattr(prev, f"{vocab_side}_vocab")), -1, np.int64)
        old_vocab = np.asarray(old["vocabulary"], np.int64)
        old_pos[old_vocab] = np.arange(len(old_vocab))
        # today's vocabulary, then every id of today's data the previous model had a
        # row for but today's log does not train (an item only in --items today)
        new_vocab = np.asarray(new["vocabulary"], np.int64)
        today = getattr(data, f"{vocab_side}_vocab")
        everyone = _old_internal(getattr(prev, f"{vocab_side}_vocab"), today,
                                 np.arange(len(today)))
        kept = np.flatnonzero(everyone >= 0)
        kept = kept[~np.isin(kept, new_vocab)]
        kept = kept[old_pos[everyone[kept]] >= 0]
        new_vocab = np.concatenate([new_vocab, kept])
        new = dict(new, vocabulary=new_vocab.tolist())
        old_ids = everyone[new_vocab]
        known = old_ids >= 0
        src_pos = np.where(known, old_pos[np.maximum(old_ids, 0)], -1)
        k = old["num_oov"]
        rows = np.full(k + len(new_vocab), -1, np.int64)
        rows[:k] = np.arange(k)                          # the OOV buckets: carried
        rows[k:] = np.where(src_pos >= 0, src_pos + k, -1 if fresh else 0)
        return dict(new, dim=old["dim"], num_oov=k), rows
    if name == HISTORY_FEATURE and kind == "sequence":
        n = data.num_items
        old_ids = _old_internal(prev.item_vocab, data.item_vocab, np.arange(n))
        rows = np.empty(n + 1, np.int64)
        rows[0] = 0
        rows[1:] = np.where(old_ids >= 0, old_ids + 1, -1 if fresh else -2)
        return dict(old, vocab_size=n + 1), rows
    if kind in ("categorical", "text", "multi_hot"):
        vocab = list(old["vocabulary"])
        if fresh:
            have = set(vocab)
            vocab += [v for v in new["vocabulary"] if v not in have]
        offset = {"categorical": old.get("num_oov", 1), "text": 2, "multi_hot": 1}[kind]
        rows = np.full(offset + len(vocab), -1, np.int64)
        rows[:offset + len(old["vocabulary"])] = np.arange(offset + len(old["vocabulary"]))
        return dict(old, vocabulary=vocab), rows
    return dict(old), None                           # dense, hashed: the previous spec


def merge_towers(prev, data, query_tower, item_tower, *, fresh=True):
    """New FeatureTowers for ``data`` whose weights are the previous model's, merged by
    external id (module docstring), built and filled. ``query_tower`` / ``item_tower``
    are the towers the recipe built for ``data`` (their feature lists must be the
    previous ones). ``fresh``: new rows keep their fresh initialisation (training
    follows); else they take the OOV bucket's row (history: zeros).

    Returns (query tower, item tower, row maps {weight key: row map})."""
    from twotower.data.retrieval_task import item_inputs
    from twotower.towers.feature_tower import FeatureTower

    check_data(prev, data)
    out, maps = [], {}
    for tower_name, tower in (("query_tower", query_tower), ("item_tower", item_tower)):
        if not isinstance(tower, FeatureTower):
            _fail(prev.path, f"the recipe's {tower_name} is a {type(tower).__name__}; warm "
                  "start handles FeatureTowers")
        config = tower.get_config()
        old_config = prev.state["towers"][tower_name]
        new_names = [f["name"] for f in config["features"]]
        old_names = [f["name"] for f in old_config["features"]]
        if new_names != old_names:
            _fail(prev.path, f"other feature columns: the {tower_name} reads {new_names} now, "
                  f"{old_names} there")
        for key in ("output_dim", "hidden_units", "l2_normalize", "activation"):
            if _json_safe(config[key]) != old_config[key]:
                _fail(prev.path, f"other tower shapes: {tower_name} {key} is "
                      f"{_json_safe(config[key])!r} now, {old_config[key]!r} there")
        specs, row_maps = [], {}
        for f in config["features"]:
            spec, rows = _merge_feature(f["kind"], f["name"], f,
                                        prev.tower_spec(tower_name, f["name"]), prev, data,
                                        tower_name.split("_")[0], fresh)
            specs.append(spec)
            if rows is not None:
                row_maps[f["name"]] = rows
        merged = FeatureTower.from_config(dict(config, features=specs))
        out.append((tower_name, merged, row_maps))
    q, i = out[0][1], out[1][1]
    # built on raw features first, as fit builds them (the signature a saved tower keeps)
    q(_first_queries(data), training=False)
    i(item_inputs(data, np.arange(min(2, data.num_items))), training=False)
    for tower_name, tower, row_maps in out:
        tables = {id(_row_table(tower, n)): n for n in row_maps}
        for key, var in _tower_parts(tower):
            full = f"{tower_name}/{key}"
            name = tables.get(id(var))
            rows = row_maps.get(name) if name is not None else None
            if rows is not None:
                maps[full] = rows
            var.assign(_carried(prev, full, var.numpy(), rows))
    return q, i, maps


def _first_queries(data):
    """The query-tower inputs of two training examples."""
    from twotower.data.retrieval_task import example_inputs

    return example_inputs(data)[0]


def _carried(prev, key, current, rows):
    """The new value of a weight: the previous array (rows remapped by ``rows``) where
    the previous model had it, ``current`` (the fresh value) elsewhere."""
    if key not in prev.arrays:
        _fail(prev.path, f"other tower shapes: the previous model has no weight {key!r}")
    old = prev.arrays[key]
    if rows is None:
        if old.shape != current.shape:
            _fail(prev.path, f"other tower shapes: {key} is {list(current.shape)} now, "
                  f"{list(old.shape)} there")
        return old.astype(current.dtype)
    if old.shape[1:] != current.shape[1:] or len(rows) != len(current):
        _fail(prev.path, f"other tower shapes: {key} is {list(current.shape)} now, "
              f"{list(old.shape)} there")
    out = np.array(current)
    have = rows >= 0
    out[have] = old[rows[have]]
    out[rows == -2] = 0
    return out


def carry_loss_state(prev, model, *, new_item_prior=True):
    """Copies the loss's weights into ``model.retrieval_loss`` (call once the model is
    built): a learned temperature as it was; the streaming frequency estimator's clock,
    and each known item's last sighting and gap moved to its new bucket. With
    ``new_item_prior`` (training follows), an item the estimator has not seen (new, or
    never sampled) counts as seen at the current clock with the median gap of the seen
    items; without it, it stays unseen (the state is the previous one, merged)."""
    loss = model.retrieval_loss
    est = _estimator(loss)
    has_old = "loss/estimator/step" in prev.arrays
    if (est is not None) != has_old:
        _fail(prev.path, "another loss: the streaming frequency estimator (logQ) is "
              f"{'on' if est is not None else 'off'} now, {'on' if has_old else 'off'} there")
    for key, var in _loss_parts(loss):
        if key.startswith("loss/estimator/"):
            continue
        var.assign(_carried(prev, key, var.numpy(), None))
    if est is None:
        return
    for k in ("step", "occurrences"):
        est_var = getattr(est, k)
        est_var.assign(prev.arrays[f"loss/estimator/{k}"].astype(est_var.dtype.as_numpy_dtype))
    data_items = _estimator_items(model)
    old_nb = len(prev.arrays["loss/estimator/delta"])
    new_nb = est.num_buckets
    old_ids = _old_internal(prev.item_vocab, data_items, np.arange(len(data_items)))
    last = np.zeros(new_nb, np.int64)
    delta = np.zeros(new_nb, np.float32)
    known = np.flatnonzero(old_ids >= 0)
    buckets = known % new_nb
    last[buckets] = prev.arrays["loss/estimator/last_seen"][old_ids[known] % old_nb]
    delta[buckets] = prev.arrays["loss/estimator/delta"][old_ids[known] % old_nb]
    if new_item_prior:
        # An item the stream has not seen would measure its first gap from the stream's
        # origin, days ago: p̂ = 1/t, far rarer than any item is, and −log Q would boost
        # its logit until ~1/α sightings wash that out (the model learns to push it
        # down). Instead it counts as seen now with the median known item's gap.
        seen = delta > 0
        unseen = np.flatnonzero(~seen[:min(new_nb, len(data_items))])
        if seen.any() and len(unseen):
            last[unseen] = int(prev.arrays["loss/estimator/occurrences"])
            delta[unseen] = np.median(delta[seen])
    est.last_seen.assign(last)
    est.delta.assign(delta)


def _estimator_items(model):
    vocab = getattr(model, "_twotower_item_vocab", None)
    if vocab is None:
        raise WarmStartError("carry_loss_state needs the model's item vocabulary "
                             "(set by WarmStart.apply)")
    return vocab


class CarryOptimizer(tf.keras.callbacks.Callback):
    """At train begin: builds the optimizer's slots and fills Adam's moments of every
    carried weight (rows remapped as the weights were; new rows zero) and its step
    count. List it first among fit's callbacks."""

    def __init__(self, prev, maps):
        super().__init__()
        self.prev, self.maps = prev, maps
        self.carried = 0

    def on_train_begin(self, logs=None):
        carry_optimizer(self.prev, self.model, self.maps)


def carry_optimizer(prev, model, maps):
    """Fills ``model.optimizer``'s Adam slots from the previous run (CarryOptimizer).
    Returns the number of weights whose slots were carried (0 when the previous run left
    none)."""
    optimizer = model.optimizer
    if "slot/iterations" not in prev.arrays:
        return 0
    optimizer.build(model.trainable_variables)
    carried = 0
    for key, var in _model_parts(model):
        if not var.trainable or f"slot/m/{key}" not in prev.arrays:
            continue
        pair = _slot_variables(optimizer, var)
        if pair is None:
            continue
        for s, slot in zip(_SLOTS, pair):
            old_key = f"slot/{s}/{key}"
            slot.assign(_carried_slot(prev, old_key, slot.numpy(), maps.get(key)))
        carried += 1
    if carried:
        optimizer.iterations.assign(int(prev.arrays["slot/iterations"]))
    return carried


def _carried_slot(prev, key, current, rows):
    old = prev.arrays[key]
    if rows is None:
        return old.astype(current.dtype) if old.shape == current.shape else current
    out = np.zeros_like(current)
    have = rows >= 0
    out[have] = old[rows[have]]
    return out


class WarmStart:
    """The warm start of one run: ``WarmStart(PREV_OUT, config)`` reads and checks the
    previous run (before any data is read); :meth:`towers` merges the recipe's towers for
    the new data; :meth:`apply` carries the loss state into the built model and returns
    the callback that carries the optimizer's slots."""

    def __init__(self, path, config):
        self.prev = load_previous(path, config)
        self.fresh = int(getattr(config, "epochs", 1)) > 0
        self.maps = {}
        self.data = None

    def towers(self, data, query_tower, item_tower):
        self.data = data
        q, i, self.maps = merge_towers(self.prev, data, query_tower, item_tower,
                                       fresh=self.fresh)
        return q, i

    def apply(self, model):
        """Builds ``model`` (as fit does) and carries the loss state; returns the
        CarryOptimizer callback for fit."""
        from twotower.data.retrieval_task import example_inputs

        data = self.data
        model.__dict__["_twotower_item_vocab"] = np.asarray(data.item_vocab)
        query, item = example_inputs(data)
        model({"query": query, "item": item}, training=False)
        carry_loss_state(self.prev, model, new_item_prior=self.fresh)
        return CarryOptimizer(self.prev, self.maps)

    def without_training(self, model, config):
        """The "empty day" (``--epochs 0``): compiles ``model`` with Adam and carries the
        optimizer's slots (so that the state this run leaves is the previous one, merged),
        trains nothing. Returns fit's statistics for no step."""
        model.compile(optimizer=tf.keras.optimizers.Adam(config.lr))
        carry_optimizer(self.prev, model, self.maps)
        return {"train_seconds": 0.0, "examples_per_sec": float("nan"),
                "resumed_at_step": 0, "warm_start_steps": 0}
