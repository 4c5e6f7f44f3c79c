"""Sessions: time-ordered item events grouped into sessions, with bookings and markets.

The format a user brings (Airbnb, KDD 2018, trains on click sessions of this shape) is a
CSV file with a header and one event per line:

    session_id,item_id,timestamp,booked,market
    s1,listing_17,1700000000,0,paris
    s1,listing_4,1700000300,1,paris

session_id and item_id are strings; timestamp an integer (seconds); booked 0/1 (the event
is the session's booking; at most one per session counts — the last); market a string
(the listing's market / city; any grouping of items whose negatives should be drawn from
the same pool). Events are sorted by (session, timestamp) on load.

``sessions_from_interactions`` builds the same structure from (user, item, timestamp)
logs by splitting each user's time-ordered events where the gap exceeds ``max_gap``
(Airbnb: a new session after 30 minutes of inactivity); ``max_gap=None`` keeps one
session per user (item2vec's "basket" is the user's whole history).
"""

import csv
import dataclasses

import numpy as np

FIELDS = ("session_id", "item_id", "timestamp", "booked", "market")


@dataclasses.dataclass
class SessionLog:
    """Events sorted by (session, timestamp).

    session [n] int session index; item [n] int item index into ``item_names``;
    timestamp [n] int64; booked [n] bool; market [n] int index into ``market_names``
    (the market of the event's item). ``item_market`` [num_items] is each item's market.
    """

    session: np.ndarray
    item: np.ndarray
    timestamp: np.ndarray
    booked: np.ndarray
    market: np.ndarray
    item_names: list
    market_names: list

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


def read_session_csv(path):
    """Reads the documented CSV format (module docstring) into a SessionLog.

    Raises ValueError naming the file and line for bytes that are not UTF-8, a missing
    column, a malformed line, a non-integer timestamp or a booked flag other than 0/1.
    """
    rows = {k: [] for k in FIELDS}
    # Binary and decoded line by line (csv takes any iterator of str) so that a bad byte
    # is reported with its line; text mode would only say "position 8191" of a buffer.
    with open(path, "rb") as f:
        reader = csv.DictReader(_utf8_lines(path, f))
        missing = [k for k in FIELDS if k not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: the header must name {', '.join(FIELDS)}; missing "
                             f"{missing} (got {reader.fieldnames})")
        for row in reader:
            line = reader.line_num
            if None in row or any(row[k] is None or row[k] == "" for k in FIELDS):
                raise ValueError(f"{path}, line {line}: expected {len(FIELDS)} non-empty "
                                 f"fields {FIELDS}, got {row}")
            try:
                ts = int(row["timestamp"])
            except ValueError:
                raise ValueError(f"{path}, line {line}: timestamp must be an integer, got "
                                 f"{row['timestamp']!r}") from None
            if row["booked"] not in ("0", "1"):
                raise ValueError(f"{path}, line {line}: booked must be 0 or 1, got "
                                 f"{row['booked']!r}")
            for k in FIELDS:
                rows[k].append(row[k])
            rows["timestamp"][-1] = ts
    if not rows["item_id"]:
        raise ValueError(f"{path}: no events after the header")
    session, _ = _index(rows["session_id"])
    item, item_names = _index(rows["item_id"])
    market, market_names = _index(rows["market"])
    return SessionLog(session, item, np.asarray(rows["timestamp"], np.int64),
                      np.asarray(rows["booked"]) == "1", market, item_names, market_names)


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
    ``min_length`` events loses its last event to evaluation, and its booking is taken
    from the events that remain (a booking that is the held-out event is not seen in
    training). Sessions with a single event carry no skip-gram pair and are dropped.

    Returns (train, booked, held, dropped): train = list of int item arrays (sessions of
    >= 2 events, last event removed when held out), booked = int [len(train)] each
    training session's last booked item or -1, held = (query item = the event before the
    held-out one, held-out item, set of the session's training items) per held-out
    session, dropped = number of single-event sessions.
    """
    if isinstance(min_length, bool) or not isinstance(min_length, int) or min_length < 3:
        raise ValueError(f"min_length must be an int >= 3, got {min_length!r}")
    train, booked, held, dropped = [], [], [], 0
    for a, b in log.session_bounds():
        items, flags = log.item[a:b], log.booked[a:b]
        if b - a < 2:
            dropped += 1
            continue
        if b - a >= min_length:
            held.append((int(items[-2]), int(items[-1]), set(int(i) for i in items[:-1])))
            items, flags = items[:-1], flags[:-1]
        hits = np.flatnonzero(flags)
        train.append(np.asarray(items, np.int64))
        booked.append(int(items[hits[-1]]) if hits.size else -1)
    return train, np.asarray(booked, np.int64), held, dropped
