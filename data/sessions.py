"""Sessions: time-ordered item events grouped into sessions, with bookings and markets.

A user brings sessions in one of two forms; the item2vec, airbnb and eges recipes take
both (``add_session_arguments`` / ``sessions_from_args``: the same flags in each).

1. A sessions CSV (``--sessions``; Airbnb, KDD 2018, trains on click sessions of this
   shape), a header and one event per line:

       session_id,item_id,timestamp,booked,market
       s1,listing_17,1700000000,0,paris
       s1,listing_4,1700000300,1,paris

   session_id and item_id are strings; timestamp an integer (seconds, or any number that
   orders the session's events, e.g. its position); booked 0/1 (also true/false, yes/no:
   the event is the session's booking; at most one per session counts — the last; a
   booking is usually the session's last event); market a string (the listing's market /
   city; any grouping of items whose negatives should be drawn from the same pool).
   booked and market are optional (only airbnb reads them). Events are sorted by
   (session, timestamp) on load; events of one timestamp keep their file order.

2. An interaction log (``--interactions``; the two-tower recipes' format, read by
   data/interactions.py: user_id,item_id,timestamp as CSV, Parquet or a folder of
   shards). Each user's interactions in time order are one sequence, split into sessions
   where more than ``--session-gap`` seconds pass between two of them (Airbnb: 30
   minutes). Optional booked and market columns are read as in the sessions CSV.

``sessions_from_interactions`` builds the same structure from (user, item, timestamp)
arrays by splitting each user's time-ordered events where the gap exceeds ``max_gap``;
``max_gap=None`` keeps one session per user (item2vec's "basket" is the user's whole
history).
"""

import csv
import dataclasses
import os

import numpy as np

FIELDS = ("session_id", "item_id", "timestamp", "booked", "market")
REQUIRED = ("session_id", "item_id", "timestamp")
# booked-column values (lower-cased) read as a booking / as none
BOOKED_TRUE = ("1", "true", "yes")
BOOKED_FALSE = ("0", "false", "no")
# parts of a column name that suggest it holds bookings (warned about when none are read)
BOOKING_WORDS = ("book", "purchas", "reserv", "convers", "transact", "buy")


@dataclasses.dataclass
class SessionLog:
    """Events sorted by (session, timestamp).

    session [n] int session index; item [n] int item index into ``item_names``;
    timestamp [n] int64; booked [n] bool; market [n] int index into ``market_names``
    (the market of the event's item). ``item_market`` [num_items] is each item's market.
    has_booked / has_markets: whether the source had a booked / market column (without
    one, booked is all False and every event in one market); columns: the source's column
    names (for messages); source: where it was read from.
    """

    session: np.ndarray
    item: np.ndarray
    timestamp: np.ndarray
    booked: np.ndarray
    market: np.ndarray
    item_names: list
    market_names: list
    has_booked: bool = True
    has_markets: bool = True
    columns: tuple = ()
    source: str = ""

    def __post_init__(self):
        order = np.lexsort((self.timestamp, self.session))
        for name in ("session", "item", "timestamp", "booked", "market"):
            setattr(self, name, np.asarray(getattr(self, name))[order])
        self.booked = self.booked.astype(bool)
        self.item_market = np.full(len(self.item_names), -1, dtype=np.int64)
        self.item_market[self.item] = self.market
        bounds = np.flatnonzero(np.diff(self.session)) + 1
        self._starts = np.concatenate([[0], bounds])
        self._ends = np.concatenate([bounds, [self.session.size]])

    @property
    def num_items(self):
        return len(self.item_names)

    def session_bounds(self):
        """[(start, end)] event-index ranges of the sessions, in order."""
        return list(zip(self._starts.tolist(), self._ends.tolist()))

    @property
    def num_sessions(self):
        return int(self._starts.size)

    def sequences(self, min_length=1):
        """Item-index arrays, one per session, of at least ``min_length`` events."""
        return [self.item[a:b] for a, b in zip(self._starts, self._ends) if b - a >= min_length]

    def booked_items(self):
        """[num_sessions] the session's booked item index (its last booking), or -1."""
        out = np.full(self.num_sessions, -1, dtype=np.int64)
        for s, (a, b) in enumerate(zip(self._starts, self._ends)):
            hits = np.flatnonzero(self.booked[a:b])
            if hits.size:
                out[s] = self.item[a + hits[-1]]
        return out

    def item_counts(self):
        return np.bincount(self.item, minlength=self.num_items)

    @property
    def num_booked_sessions(self):
        """Sessions with at least one booked event."""
        return int(np.unique(self.session[self.booked]).size)


def _index(values):
    names, codes = np.unique(np.asarray(values, dtype=object).astype(str), return_inverse=True)
    return codes.astype(np.int64), names.tolist()


def _utf8_lines(path, f):
    """The lines of the binary file ``f`` decoded as UTF-8 (a leading byte-order mark
    dropped); a line that is not UTF-8 raises ValueError naming the file, line and byte."""
    for number, raw in enumerate(f, start=1):
        try:
            yield raw.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(f"{path}, line {number}: not UTF-8 (byte {e.start + 1} of the "
                             f"line is {raw[e.start:e.start + 1]!r}); re-encode the file as "
                             f"UTF-8") from None


def _booked_flag(value, where, column):
    v = value.strip().lower()
    if v in BOOKED_TRUE:
        return True
    if v in BOOKED_FALSE:
        return False
    raise ValueError(f"{where}: {column} must be 0 or 1 (or true/false, yes/no), got "
                     f"{value!r}")


def booking_like_columns(columns, booked_col="booked"):
    """The column names other than ``booked_col`` that look like bookings (booking,
    is_booked, purchased, reservation, converted, ...)."""
    return [c for c in columns if c != booked_col
            and any(w in str(c).lower() for w in BOOKING_WORDS)]


def read_session_csv(path, *, booked_col="booked", market_col="market"):
    """Reads the documented CSV format (module docstring) into a SessionLog.

    session_id, item_id and timestamp are required; ``booked_col`` and ``market_col``
    are read when the file has them (None: never read, as item2vec and eges do); without
    them no event is booked and every item is in one market (``has_booked`` /
    ``has_markets`` False).

    Raises ValueError naming the file and line for bytes that are not UTF-8, a missing
    column, a malformed line, a non-integer timestamp or a booked flag other than 0/1
    (true/false, yes/no).
    """
    path = os.fspath(path)
    # Binary and decoded line by line (csv takes any iterator of str) so that a bad byte
    # is reported with its line; text mode would only say "position 8191" of a buffer.
    with open(path, "rb") as f:
        reader = csv.DictReader(_utf8_lines(path, f))
        header = [h for h in (reader.fieldnames or [])]
        missing = [k for k in REQUIRED if k not in header]
        if missing:
            hint = ("; a log of user_id,item_id,timestamp goes to --interactions, which "
                    "splits each user's history into sessions" if "session_id" in missing
                    else "")
            raise ValueError(f"{path}: the header must name {', '.join(REQUIRED)} (and "
                             f"optionally booked, market); missing {missing} (got "
                             f"{reader.fieldnames}){hint}")
        has_booked = booked_col is not None and booked_col in header
        has_markets = market_col is not None and market_col in header
        fields = list(REQUIRED) + [booked_col] * has_booked + [market_col] * has_markets
        rows = {k: [] for k in fields}
        for row in reader:
            line = reader.line_num
            if None in row or any(row[k] is None or row[k] == "" for k in fields):
                raise ValueError(f"{path}, line {line}: expected non-empty fields "
                                 f"{tuple(fields)}, got {row}")
            try:
                ts = int(row["timestamp"])
            except ValueError:
                raise ValueError(f"{path}, line {line}: timestamp must be an integer, got "
                                 f"{row['timestamp']!r}") from None
            for k in fields:
                rows[k].append(row[k])
            rows["timestamp"][-1] = ts
            if has_booked:
                rows[booked_col][-1] = _booked_flag(row[booked_col], f"{path}, line {line}",
                                                    booked_col)
    if not rows["item_id"]:
        raise ValueError(f"{path}: no events after the header")
    n = len(rows["item_id"])
    session, _ = _index(rows["session_id"])
    item, item_names = _index(rows["item_id"])
    market, market_names = (_index(rows[market_col]) if has_markets
                            else (np.zeros(n, np.int64), ["(all)"]))
    booked = np.asarray(rows[booked_col], bool) if has_booked else np.zeros(n, bool)
    return SessionLog(session, item, np.asarray(rows["timestamp"], np.int64), booked, market,
                      item_names, market_names, has_booked=has_booked,
                      has_markets=has_markets, columns=tuple(header), source=path)


def read_interaction_sessions(path, columns=None, *, session_gap=None, booked_col=None,
                              market_col=None):
    """An interaction log (data/interactions.py: CSV, Parquet file or folder of shards)
    as a SessionLog: each user's interactions in time order, split into sessions where
    more than ``session_gap`` seconds pass (None: one session per user).

    Args:
      path: the log.
      columns: interactions.ColumnNames (default user_id, item_id, timestamp; aliases
        such as userId / movieId are accepted).
      session_gap: seconds > 0, or None.
      booked_col, market_col: optional columns read when the log has them (booked as in
        the sessions CSV: 0/1, true/false, yes/no); None: not read.

    Item names are the log's item ids as strings. Raises ValueError / FileNotFoundError
    as data/interactions.py does (naming the file, line or row, and the value).
    """
    from twotower.data import interactions as logs

    if session_gap is not None and not session_gap > 0:
        raise ValueError(f"session_gap must be None or > 0 seconds, got {session_gap!r}")
    first = logs.list_files(path)[0]
    logs.resolve_columns(first, columns)          # a missing column: named before reading
    header = logs.file_columns(first)
    has_booked = booked_col is not None and booked_col in header
    has_markets = market_col is not None and market_col in header
    extra = [booked_col] * has_booked + [market_col] * has_markets
    log = logs.read_interactions(path, columns, extra=tuple(extra), id_type="string")
    n = len(log)
    booked = np.zeros(n, bool)
    if has_booked:
        values = log.extra[booked_col]
        lowered = np.char.lower(np.char.strip(values.astype(str)))
        ok = np.isin(lowered, BOOKED_TRUE + BOOKED_FALSE)
        if not ok.all():
            bad = int(np.flatnonzero(~ok)[0])
            raise ValueError(f"{log.source}: row {bad + 1}: {booked_col} must be 0 or 1 (or "
                             f"true/false, yes/no), got {values[bad]!r}")
        booked = np.isin(lowered, BOOKED_TRUE)
    user, _ = _index(log.user_id)
    item, item_names = _index(log.item_id)
    if has_markets:
        values = log.extra[market_col]
        empty = np.flatnonzero(values.astype(str) == "")
        if empty.size:
            raise ValueError(f"{log.source}: row {int(empty[0]) + 1}: empty {market_col!r}")
        market, market_names = _index(values)
    else:
        market, market_names = np.zeros(n, np.int64), ["(all)"]
    order = np.lexsort((np.arange(n), log.timestamp, user))   # stable within a second
    user, item, ts = user[order], item[order], log.timestamp[order]
    session = split_sessions(user, ts, session_gap)
    return SessionLog(session, item, ts, booked[order], market[order], item_names,
                      market_names, has_booked=has_booked, has_markets=has_markets,
                      columns=tuple(header), source=os.fspath(path))


def split_sessions(user, timestamp, max_gap=None):
    """Session index per event: a new session at each new user, and after a gap > max_gap
    (seconds) between a user's consecutive events. Events must be sorted by (user, time)."""
    user = np.asarray(user)
    timestamp = np.asarray(timestamp)
    if user.shape != timestamp.shape or user.ndim != 1:
        raise ValueError(f"user and timestamp must be 1-D of one length; got shapes "
                         f"{user.shape} and {timestamp.shape}")
    if max_gap is not None and not max_gap > 0:
        raise ValueError(f"max_gap must be None or > 0 seconds, got {max_gap!r}")
    new = np.ones(user.size, dtype=bool)
    new[1:] = user[1:] != user[:-1]
    if max_gap is not None:
        new[1:] |= np.diff(timestamp) > max_gap
    return np.cumsum(new) - 1


def sessions_from_interactions(user, item, timestamp, *, item_names, market_of_item,
                               market_names, booked=None, max_gap=None):
    """A SessionLog from (user, item index, timestamp) events (module docstring).

    Args:
      item_names: names of the item indexes; market_of_item: [num_items] market index;
      booked: [n] bool booking flags (default none).
    """
    user, item, timestamp = (np.asarray(a) for a in (user, item, timestamp))
    order = np.lexsort((timestamp, user))
    user, item, timestamp = user[order], item[order], timestamp[order]
    booked = np.zeros(item.size, bool) if booked is None else np.asarray(booked, bool)[order]
    session = split_sessions(user, timestamp, max_gap)
    market = np.asarray(market_of_item)[item]
    return SessionLog(session, item, timestamp, booked, market, list(item_names),
                      list(market_names))


def movielens_booking_sessions(ml, *, max_gap_hours=1.0, booking_rating=5.0):
    """The offline adaptation of Airbnb's sessions from MovieLens (not real bookings).

    A user's ratings in time order are split into sessions where more than
    ``max_gap_hours`` pass between two ratings; the session's last rating >=
    ``booking_rating`` is its "booking"; a film's "market" is its first genre.

    Args:
      ml: a twotower.data.movielens.MovieLens.
    """
    movie_ids = np.asarray(ml.movies["movie_id"])
    position = {int(m): i for i, m in enumerate(movie_ids)}
    r = ml.ratings
    item = np.array([position[int(m)] for m in r["movie_id"]], dtype=np.int64)
    first_genre = [g[0] if len(g) else "(none)" for g in ml.movies["genres"]]
    market_of_item, market_names = _index(first_genre)
    titles = [f"{t} ({y})" if y > 0 else str(t)
              for t, y in zip(ml.movies["title"], ml.movies["year"])]
    return sessions_from_interactions(
        r["user_id"], item, r["timestamp"], item_names=titles, market_of_item=market_of_item,
        market_names=market_names, booked=np.asarray(r["rating"]) >= booking_rating,
        max_gap=max_gap_hours * 3600.0)


def leave_last_out(sequences, min_length=3):
    """Holds out the last item of every sequence of at least ``min_length`` items.

    Returns (train, held): train = each sequence as an int list, without its last item
    when held out; held = (query item = the item before it, held-out item, set of the
    items kept for training) per held-out sequence — item2vec's next-item protocol.
    """
    if isinstance(min_length, bool) or not isinstance(min_length, int) or min_length < 2:
        raise ValueError(f"min_length must be an int >= 2, got {min_length!r}")
    train, held = [], []
    for seq in sequences:
        seq = [int(i) for i in seq]
        if len(seq) >= min_length:
            train.append(seq[:-1])
            held.append((seq[-2], seq[-1], set(seq[:-1])))
        else:
            train.append(seq)
    return train, held


def split_booked_sessions(log, min_length=3):
    """Airbnb's next-click protocol on a SessionLog: every session of at least
    ``min_length`` events loses one event to evaluation, and its booking (the last booked
    event) is taken from the events that remain. Sessions with a single event carry no
    skip-gram pair and are dropped.

    The held-out event is the session's last event, except in a session whose booking is
    its last event (the natural layout of a booked session): the booking stays in
    training — it is the session's global context — and the held-out event is the last
    click before it of another item than the booked one (holding out a click of the
    booked item would put the answer in the session's booking context); a session with
    no such click after its first event holds nothing out. The query is the event just
    before the held-out one, and the items the user saw before it are not ranked.

    Returns (train, booked, held, dropped): train = list of int item arrays (sessions of
    >= 2 events, the held-out event removed), booked = int [len(train)] each training
    session's last booked item or -1, held = (query item, held-out item, set of the
    session's items before the held-out event) per held-out session, dropped = number of
    single-event sessions.
    """
    if isinstance(min_length, bool) or not isinstance(min_length, int) or min_length < 3:
        raise ValueError(f"min_length must be an int >= 3, got {min_length!r}")
    train, booked, held, dropped = [], [], [], 0
    for a, b in log.session_bounds():
        items, flags = log.item[a:b], log.booked[a:b]
        if b - a < 2:
            dropped += 1
            continue
        out = None
        if b - a >= min_length:
            out = b - a - 1
            if flags[-1]:
                others = np.flatnonzero(items[:-1] != items[-1])
                out = int(others[-1]) if others.size and others[-1] >= 1 else None
        if out is not None:
            held.append((int(items[out - 1]), int(items[out]),
                         set(int(i) for i in items[:out])))
            keep = np.arange(b - a) != out
            items, flags = items[keep], flags[keep]
        hits = np.flatnonzero(flags)
        train.append(np.asarray(items, np.int64))
        booked.append(int(items[hits[-1]]) if hits.size else -1)
    return train, np.asarray(booked, np.int64), held, dropped


def booking_warnings(log, booked_col="booked"):
    """Why a log read for its bookings may have none: a booked column with no booking
    in it, or no booked column but others whose names look like bookings. A list of
    messages (empty when bookings were found or nothing suggests there are any)."""
    where = log.source or "the sessions"
    if log.has_booked:
        if not log.booked.any():
            return [f"{where}: column {booked_col!r} marks no booking (no 1/true/yes in "
                    f"{log.session.size} events): no session is booked, so there is no "
                    f"booking context"]
        return []
    like = booking_like_columns(log.columns, booked_col)
    if like:
        return [f"{where}: no {booked_col!r} column, so no booking is read, but "
                f"{', '.join(repr(c) for c in like)} look{'s' if len(like) == 1 else ''} "
                f"like bookings: pass --booked-col {like[0]} (a column of 0/1 flags)"]
    return []


def describe(log):
    """One line: what was read."""
    lengths = np.diff(np.concatenate([log._starts, [log.session.size]]))
    return (f"{log.source}: {log.session.size} events, {log.num_sessions} sessions (median "
            f"{int(np.median(lengths))} events), {log.num_items} items"
            + (f", {log.num_booked_sessions} booked sessions" if log.has_booked else "")
            + (f", {len(log.market_names)} markets" if log.has_markets else ""))
