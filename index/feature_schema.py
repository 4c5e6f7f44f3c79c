"""The towers' inputs as JSON: what each input of the query or item tower takes (its
name, type, width, padding and bounds), how a JSON row becomes the tower's arrays, and
the 400-worthy :class:`FeatureError` that names the row, the feature and the form.

``Retriever.feature_schema("query" | "item")`` gives the :class:`FeatureSchema` of a
served index; the server describes it in ``/health`` and in its OpenAPI schema.
"""

import math

import numpy as np
import tensorflow as tf

from twotower.data.external_ids import INT64_MAX, INT64_MIN
from twotower.index import towers_io

FLOAT_LIMIT = 1e15          # |x| of a JSON number fed to a tower or the index
ID_FEATURES = {"query": "user_id", "item": "item_id"}
OOV_INT, OOV_STR = -1, "[UNK]"  # Keras IntegerLookup / StringLookup's out-of-vocabulary tokens
_JSON_TYPES = {"string": "a string", "integer": "an integer", "number": "a number",
               "boolean": "true or false"}


class FeatureError(ValueError):
    """Request features that do not fit a tower's inputs (the message names the feature
    and the form it takes)."""


def _tower_class(tower):
    if isinstance(tower, towers_io.LoadedTower):
        return tower.info.get("class")
    return type(tower).__name__


def _weight_rows(layer, attr):
    """Rows of a layer's weight (live or restored from a SavedModel), else None."""
    shape = getattr(getattr(layer, attr, None), "shape", None)
    try:
        return int(shape[0])
    except (TypeError, IndexError, ValueError):
        return None


def _json_kind(dtype):
    if dtype == tf.string:
        return "string", object
    if dtype.is_bool:
        return "boolean", bool
    if dtype.is_integer:
        return "integer", dtype.as_numpy_dtype
    if dtype.is_floating:
        return "number", np.float32 if dtype.size <= 4 else dtype.as_numpy_dtype
    return None, None


def _utf8(value):
    """Strings (nested in lists) as UTF-8 bytes, unencodable characters replaced."""
    if isinstance(value, str):
        return value.encode("utf-8", "replace")
    if isinstance(value, list):
        return [_utf8(v) for v in value]
    return value


class FeatureInput:
    """One input tensor of a tower as a JSON request gives it: one value per row.

    Attributes:
      name: the feature's key (None when the tower takes one tensor, not a dict).
      type: the JSON type of the scalars: "string", "integer", "number" or "boolean".
      dims: the dimensions of one row's value (() for a scalar); None where any length
        is taken (shorter lists are padded to the batch's longest).
      pad: what shorter lists are padded with (None: a list must have exactly its width).
      minimum, maximum: bounds of the numbers (inclusive).
      id_kind: for the id feature (``item_id`` / ``user_id`` of a FeatureTower): "int"
        or "str", the index's own ids (mapped to the ids the tower was trained on); the
        feature may then be left out or null (the out-of-vocabulary bucket).
      what: a few words on the feature (the docs).
    """

    def __init__(self, name, type_, np_dtype, dims=(), *, pad=None, minimum=None,
                 maximum=None, id_kind=None, fill=None, what=None):
        self.name, self.type, self.np_dtype = name, type_, np_dtype
        self.dims, self.pad = tuple(dims), pad
        self.minimum, self.maximum = minimum, maximum
        self.id_kind, self.fill, self.what = id_kind, fill, what

    # -- the docs --
    def _scalar_words(self):
        if self.id_kind is not None:
            return ("this index's " + ("string" if self.id_kind == "str" else "integer")
                    + " id")
        words = _JSON_TYPES[self.type]
        if self.minimum is not None and self.maximum is not None and self.type == "integer":
            if self.minimum >= 0 and self.maximum < 2 ** 62:
                words += f" in [{self.minimum}, {self.maximum}]"
        return words

    def form(self):
        """The expected form of one row's value, in words."""
        words = self._scalar_words()
        for d in reversed(self.dims):
            plural = words.replace("a string", "strings").replace("an integer", "integers") \
                .replace("a number", "numbers").replace("true or false", "booleans")
            if d is None:
                words = f"a list of {plural}"
            elif self.pad is not None:
                words = f"a list of at most {d} {plural}"
            else:
                words = f"a list of exactly {d} {plural}"
        if self.dims and self.pad is not None:
            words += f" (shorter lists are padded with {self.pad!r})"
        if self.id_kind is not None:
            words += (", or null; a known id gets its trained embedding, any other the "
                      "out-of-vocabulary bucket, as does leaving it out")
        return words

    def describe(self):
        """A JSON-able description (name, type, shape, padding, bounds, form)."""
        kind = {"str": "string", "int": "integer"}.get(self.id_kind, self.type)
        out = {"name": self.name, "type": kind, "shape": list(self.dims),
               "required": self.id_kind is None, "form": self.form()}
        if self.pad is not None and self.dims:
            out["pad"] = self.pad
        if self.minimum is not None and self.id_kind is None:
            out["minimum"] = self.minimum
        if self.maximum is not None and self.id_kind is None:
            out["maximum"] = self.maximum
        if self.what:
            out["what"] = self.what
        return out

    def json_schema(self):
        """The JSON Schema of one row's value."""
        if self.id_kind == "str":
            scalar = {"type": "string"}
        elif self.id_kind == "int":
            scalar = {"type": "integer", "minimum": INT64_MIN, "maximum": INT64_MAX}
        else:
            scalar = {"type": self.type}
            if self.minimum is not None:
                scalar["minimum"] = self.minimum
            if self.maximum is not None:
                scalar["maximum"] = self.maximum
        for d in reversed(self.dims):
            scalar = {"type": "array", "items": scalar}
            if d is not None:
                scalar["maxItems"] = d
                if self.pad is None:
                    scalar["minItems"] = d
        if self.id_kind is not None:
            scalar = {"anyOf": [scalar, {"type": "null"}]}
        return scalar

    # -- validation --
    def _where(self, label):
        return label + ("" if self.name is None else f"[{self.name!r}]")

    def _fail(self, where, problem):
        taker = f"{self.name!r}" if self.name is not None else "each row"
        raise FeatureError(f"{where}: {problem}; {taker} takes {self.form()}")

    def _scalar_ok(self, v):
        if self.type == "string":
            return isinstance(v, str)
        if self.type == "boolean":
            return isinstance(v, bool)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return False
        if self.type == "integer" and not (isinstance(v, int) or v.is_integer()):
            return False  # JSON Schema: 3.0 is an integer, 3.5 is not
        if self.type == "number" and not math.isfinite(v):
            return False
        return ((self.minimum is None or v >= self.minimum)
                and (self.maximum is None or v <= self.maximum))

    def check(self, value, where):
        """Validates one row's value (not the id feature); returns it."""
        def walk(v, depth, at):
            if depth == len(self.dims):
                if not self._scalar_ok(v):
                    self._fail(at, f"expected {self._scalar_words()}, got {v!r:.80}")
                return
            d = self.dims[depth]
            if not isinstance(v, list):
                self._fail(at, f"expected a list, got {v!r:.80}")
            if d is not None and len(v) > d:
                self._fail(at, f"{len(v)} values, more than the {d} the tower was trained "
                               "with (send at most that many)")
            if d is not None and self.pad is None and len(v) != d:
                self._fail(at, f"{len(v)} values where the tower takes exactly {d}")
            for j, x in enumerate(v):
                walk(x, depth + 1, f"{at}[{j}]")
        walk(value, 0, where)
        return value

    def array(self, values):
        """The batch of validated row values as one array, shorter lists padded (strings
        as UTF-8 bytes: a lone surrogate from JSON becomes U+FFFD, not an error)."""
        if self.type == "string":
            values = _utf8(values)
        if not self.dims:
            return np.asarray(values, dtype=self.np_dtype)
        shape = [len(values)]
        for depth, d in enumerate(self.dims):
            if d is None:
                longest = 0
                level = values
                for _ in range(depth):
                    level = [x for v in level for x in v]
                longest = max((len(v) for v in level), default=0)
                d = max(1, longest)
            shape.append(d)
        zero = self.pad if self.pad is not None else ("" if self.type == "string" else 0)
        if self.type == "string":
            zero = zero.encode()
        out = np.full(shape, zero, dtype=self.np_dtype)

        def put(dst, v, depth):
            if depth == len(self.dims) - 1:
                if len(v):
                    dst[:len(v)] = np.asarray(v, dtype=self.np_dtype) \
                        if self.np_dtype is not object else v
                return
            for j, x in enumerate(v):
                put(dst[j], x, depth + 1)

        for r, v in enumerate(values):
            put(out[r], v, 0)
        return out


class FeatureSchema:
    """What a tower takes, as JSON: one value (a tower of one tensor) or one object
    (a tower of named features) per row. Built from the tower's input signature
    (:func:`~twotower.index.towers_io.input_spec`) and, for twotower's own towers, its
    layers (id ranges, the out-of-vocabulary bucket of a FeatureTower's lookups).

    Attributes:
      which: "query" or "item".
      inputs: the :class:`FeatureInput` of each input (one, unnamed, for a tower that
        takes one tensor).
      rows_are_objects: whether a row is an object keyed by feature name.
    """

    def __init__(self, which, inputs, rows_are_objects, *, vocab=None):
        self.which, self.inputs = which, list(inputs)
        self.rows_are_objects = bool(rows_are_objects)
        self.vocab = vocab
        self.by_name = {i.name: i for i in self.inputs}

    @classmethod
    def of_tower(cls, tower, which, *, vocab=None):
        """The schema of ``tower`` (a live tower or a LoadedTower), or None when its
        input signature is unknown or not a tensor / a dict of tensors."""
        try:
            spec = towers_io.input_spec(tower)
        except ValueError:
            return None
        name = _tower_class(tower)
        # the layers: the live tower's, or those restored with a loaded SavedModel
        inner = (getattr(tower._module, "tower", None)
                 if isinstance(tower, towers_io.LoadedTower) else tower)
        if isinstance(spec, tf.TensorSpec):
            one = cls._input(None, spec, name, inner, which, vocab, tower=tower)
            return None if one is None else cls(which, [one], False, vocab=vocab)
        if isinstance(spec, dict) and spec and all(isinstance(v, tf.TensorSpec)
                                                  for v in spec.values()):
            inputs = [cls._input(k, spec[k], name, inner, which, vocab)
                      for k in sorted(spec)]
            if any(i is None for i in inputs):
                return None
            return cls(which, inputs, True, vocab=vocab)
        return None

    @staticmethod
    def _input(key, spec, tower_class, inner, which, vocab, tower=None):
        json_type, np_dtype = _json_kind(spec.dtype)
        if json_type is None or spec.shape.rank is None or spec.shape.rank < 1:
            return None
        dims = tuple(spec.shape.as_list()[1:])
        lo = hi = None
        if json_type == "integer":
            info = np.iinfo(np_dtype)
            lo, hi = max(int(info.min), INT64_MIN), min(int(info.max), INT64_MAX)
        elif json_type == "number":
            lo, hi = -FLOAT_LIMIT, FLOAT_LIMIT
        pad, what, id_kind, fill = None, None, None, None
        if tower_class == "FeatureTower" and key is not None:
            emb, pre = getattr(inner, "_emb", None), getattr(inner, "_pre", None)
            layer = emb.get(key) if hasattr(emb, "get") else None
            config = {f.get("name"): f for f in getattr(inner, "features", [])
                      if isinstance(f, dict) and "kind" in f}.get(key, {})
            # a dense feature is the only one preprocessed (normalised) but not embedded
            dense = config.get("kind") == "dense" or (
                layer is None and hasattr(pre, "get") and pre.get(key) is not None)
            if dense and json_type in ("integer", "number"):
                what = "a number (standardised by the tower)" if not dims else "numbers"
            elif not dims and key == ID_FEATURES[which] and json_type in ("integer", "string"):
                id_kind = ("str" if json_type == "string"
                           else (vocab.kind if vocab is not None else "int"))
                fill = OOV_STR if json_type == "string" else OOV_INT
                what = (f"the {which} id; a lookup with an out-of-vocabulary bucket")
            elif len(dims) == 1 and json_type == "string":
                pad, what = "", "a set of tokens (multi-hot)"
            elif len(dims) == 1 and json_type == "integer":
                size = config.get("vocab_size") or _weight_rows(layer, "embeddings")
                longest = config.get("max_length") or _weight_rows(layer, "positions")
                pad, lo, what = 0, 0, "a sequence of item ids, 0 = padding"
                if size:
                    hi = int(size) - 1
                if dims[0] is None and longest:
                    dims = (int(longest),)
            elif not dims and json_type == "string":
                what = "a category or a text (unseen values: the out-of-vocabulary bucket)"
            elif not dims and json_type == "integer":
                what = "a category (unseen values: the out-of-vocabulary bucket)"
        elif key is None and json_type == "integer":
            size = towers_io.id_range(tower) if tower is not None else None
            if tower_class in ("PooledIDTower", "AttentionPooledIDTower") and len(dims) == 1:
                size = size or _weight_rows(inner, "embeddings")
                pad, what = 0, "a sequence of ids, 0 = padding"
                longest = _weight_rows(inner, "positions")
                if dims[0] is None and longest:
                    dims = (longest,)
            elif not dims:
                size = size or (_weight_rows(inner, "embeddings")
                                if tower_class == "IDTower" else None)
                what = "an id the tower was trained on"
            if size:
                lo, hi = 0, int(size) - 1
        if any(d is None for d in dims) and pad is None:
            pad = "" if json_type == "string" else (0.0 if json_type == "number" else
                                                    (False if json_type == "boolean" else 0))
        return FeatureInput(key, json_type, np_dtype, dims, pad=pad, minimum=lo, maximum=hi,
                            id_kind=id_kind, fill=fill, what=what)

    # -- the docs --
    def describe(self):
        """A JSON-able description: how a row is given, and each feature."""
        if self.rows_are_objects:
            how = ("features: a list with one object per " + self.which + ", keyed by "
                   "feature name")
        else:
            how = "features: a list with one value per " + self.which
        return {"rows": "objects" if self.rows_are_objects else "values", "how": how,
                "features": [i.describe() for i in self.inputs]}

    def row_json_schema(self):
        """The JSON Schema of one row."""
        if not self.rows_are_objects:
            return self.inputs[0].json_schema()
        return {"type": "object", "additionalProperties": False,
                "properties": {i.name: i.json_schema() for i in self.inputs},
                "required": [i.name for i in self.inputs if i.id_kind is None]}

    # -- validation --
    def prepare(self, rows, *, name="features", ids=None, labels=None):
        """Validates JSON rows and returns the tower's inputs (array or dict of arrays).

        Args:
          rows: a list with one value (or one object) per row.
          name: the request field, for messages.
          ids: for the id feature, the default per row when a row leaves it out
            (external ids, e.g. the item ids of an upsert); else the out-of-vocabulary
            bucket.
          labels: how messages name each row (default ``name[row]``).

        Raises:
          FeatureError: naming the row, the feature and the form it takes.
        """
        if not isinstance(rows, list) or not rows:
            raise FeatureError(f"{name} must be a non-empty list with one "
                               f"{'object' if self.rows_are_objects else 'value'} per "
                               f"{self.which}, got {rows!r:.80}")
        labels = labels or [f"{name}[{r}]" for r in range(len(rows))]
        if not self.rows_are_objects:
            inp = self.inputs[0]
            values = [inp.check(v, inp._where(label)) for v, label in zip(rows, labels)]
            return inp.array(values)
        columns = {i.name: [] for i in self.inputs}
        for row, label in zip(rows, labels):
            if not isinstance(row, dict):
                raise FeatureError(f"{label} must be an object keyed by feature name "
                                   f"({', '.join(self.by_name)}), got {row!r:.80}")
            unknown = sorted(set(row) - set(self.by_name))
            if unknown:
                raise FeatureError(f"{label}: unknown features {unknown}; the {self.which} "
                                   f"tower takes {sorted(self.by_name)}")
            missing = [i.name for i in self.inputs if i.id_kind is None and i.name not in row]
            if missing:
                first = self.by_name[missing[0]]
                raise FeatureError(f"{label}: missing features {missing}; "
                                   f"{first.name!r} takes {first.form()}")
            for inp in self.inputs:
                where = inp._where(label)
                if inp.id_kind is not None:
                    v = row.get(inp.name)
                    if isinstance(v, float) and v.is_integer() and inp.id_kind == "int":
                        v = int(v)  # JSON Schema: 3.0 is the integer 3
                    ok = v is None or (isinstance(v, str) if inp.id_kind == "str" else (
                        isinstance(v, int) and not isinstance(v, bool)
                        and INT64_MIN <= v <= INT64_MAX))
                    if not ok:
                        inp._fail(where, f"expected {inp._scalar_words()} or null, got "
                                         f"{v!r:.80}")
                    columns[inp.name].append(v)
                else:
                    columns[inp.name].append(inp.check(row[inp.name], where))
        out = {}
        for inp in self.inputs:
            values = columns[inp.name]
            out[inp.name] = (self._ids(inp, values, ids) if inp.id_kind is not None
                             else inp.array(values))
        return out

    def _ids(self, inp, values, defaults):
        """The id feature's column: given ids mapped to the tower's ids; left out or
        null: the row's default id, else the out-of-vocabulary token."""
        if defaults is not None:
            values = [d if v is None else v for v, d in zip(values, defaults)]
        if inp.type == "string":
            return np.asarray(_utf8([inp.fill if v is None else v for v in values]),
                              dtype=object)
        out = np.full(len(values), inp.fill, dtype=np.int64)
        given = [j for j, v in enumerate(values) if v is not None]
        if given:
            ext = [values[j] for j in given]
            if self.vocab is not None:
                vocab = self.vocab
                try:
                    internal = vocab._find(vocab._coerce(ext, inp.name, empty_ok=True,
                                                         kind=vocab.kind, lookup=True))
                except ValueError as e:
                    raise FeatureError(f"{inp.name!r}: {e}") from None
            else:
                internal = np.asarray(ext, dtype=np.int64)
            out[given] = np.where(internal >= 0, internal, inp.fill)
        return out
