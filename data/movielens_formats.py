"""The MovieLens file formats, parsed into a MovieLens (raw tables): ML-100K's u.data /
u.item / u.user, recbole's atomic files, ML-1M / 10M's ``::``-separated .dat files and
ML-20M / 25M / latest's CSVs. A malformed line is reported with its file and number."""

import csv
import dataclasses
import io
import re

import numpy as np

# u.genre of ML-100K, in column order of u.item (also the vocabulary of ML-1M/20M).
ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
    "Romance", "Sci-Fi", "Thriller", "War", "Western",
)

# ML-1M users.dat occupation codes.
ML1M_OCCUPATIONS = (
    "other", "academic/educator", "artist", "clerical/admin", "college/grad student",
    "customer service", "doctor/health care", "executive/managerial", "farmer",
    "homemaker", "K-12 student", "lawyer", "programmer", "retired", "sales/marketing",
    "scientist", "self-employed", "technician/engineer", "tradesman/craftsman",
    "unemployed", "writer",
)


@dataclasses.dataclass
class MovieLens:
    """Raw MovieLens tables, column arrays keyed by name.

    ratings: user_id, movie_id (int64), rating (float32), timestamp (int64), in file order.
    users:   user_id, age (int64, -1 unknown), gender, occupation, zip (str); or None when
             the release has no user file (20M/25M/latest).
    movies:  movie_id (int64), title (str, without the year), year (int64, 0 unknown),
             genres (tuple of str per movie).
    """

    ratings: dict
    users: dict | None
    movies: dict
    source: str = ""


def _lines(text):
    return text.splitlines()


def parse_ratings(text, sep, *, where, header=False):
    """Parses user, movie, rating, timestamp lines; ValueError names the bad line number."""
    lines = _lines(text)
    start = 1 if header else 0
    users, movies, ratings, stamps = [], [], [], []
    for lineno in range(start, len(lines)):
        line = lines[lineno].strip()
        if not line:
            continue
        parts = line.split(sep) if sep else line.split()
        try:
            if len(parts) != 4:
                raise ValueError(f"expected 4 fields, got {len(parts)}")
            u, m, r, t = int(parts[0]), int(parts[1]), float(parts[2]), int(float(parts[3]))
        except ValueError as e:
            raise ValueError(
                f"{where}: malformed rating at line {lineno + 1}: {line[:80]!r} ({e})") from None
        users.append(u)
        movies.append(m)
        ratings.append(r)
        stamps.append(t)
    if not users:
        raise ValueError(f"{where}: no ratings found")
    return {
        "user_id": np.asarray(users, np.int64),
        "movie_id": np.asarray(movies, np.int64),
        "rating": np.asarray(ratings, np.float32),
        "timestamp": np.asarray(stamps, np.int64),
    }


_YEAR_IN_TITLE = re.compile(r"\s*\((\d{4})\)\s*$")


def _split_title(title):
    """'Toy Story (1995)' -> ('Toy Story', 1995); no year -> (title, 0)."""
    title = title.strip()
    m = _YEAR_IN_TITLE.search(title)
    if m:
        return title[: m.start()].strip(), int(m.group(1))
    return title, 0


def _movies_table(ids, titles, years, genres):
    return {
        "movie_id": np.asarray(ids, np.int64),
        "title": np.asarray(titles, dtype=object),
        "year": np.asarray(years, np.int64),
        "genres": np.asarray([tuple(g) for g in genres] + [()], dtype=object)[:-1],
    }


def _users_table(ids, ages, genders, occupations, zips):
    return {
        "user_id": np.asarray(ids, np.int64),
        "age": np.asarray(ages, np.int64),
        "gender": np.asarray(genders, dtype=object),
        "occupation": np.asarray(occupations, dtype=object),
        "zip": np.asarray(zips, dtype=object),
    }


def _rows(text, sep, num_fields, *, where, header=False):
    """Yields the fields of each non-blank line (after an optional header line); a line
    with another number of fields is a ValueError naming ``where`` and its line number."""
    lines = _lines(text)
    first = 1
    if header:
        lines, first = lines[1:], 2
    label = "tab" if sep == "\t" else repr(sep)
    for lineno, line in enumerate(lines, start=first):
        if not line.strip():
            continue
        parts = line.split(sep)
        if len(parts) != num_fields:
            raise ValueError(f"{where}: malformed line {lineno}: expected {num_fields} "
                             f"{label} fields, got {len(parts)}")
        yield parts


def _parse_users(text, sep, *, where, header=False):
    """user_id, age, gender, occupation, zip per line (ML-100K's u.user, recbole's .user)."""
    uids, ages, genders, occs, zips = [], [], [], [], []
    for parts in _rows(text, sep, 5, where=where, header=header):
        uids.append(int(parts[0]))
        ages.append(int(parts[1]))
        genders.append(parts[2])
        occs.append(parts[3])
        zips.append(parts[4].strip())
    return _users_table(uids, ages, genders, occs, zips)


def parse_ml100k(udata, uitem, uuser, *, where="ml-100k"):
    """Parses the texts of ML-100K's u.data (tab), u.item and u.user ('|')."""
    ratings = parse_ratings(udata, "\t", where=f"{where}/u.data")
    ids, titles, years, genres = [], [], [], []
    for parts in _rows(uitem, "|", 5 + len(ML100K_GENRES), where=f"{where}/u.item"):
        title, year = _split_title(parts[1])
        if not year and parts[2][-4:].isdigit():  # release date like 01-Jan-1995
            year = int(parts[2][-4:])
        ids.append(int(parts[0]))
        titles.append(title)
        years.append(year)
        genres.append([g for g, flag in zip(ML100K_GENRES, parts[5:]) if flag.strip() == "1"])
    users = _parse_users(uuser, "|", where=f"{where}/u.user")
    return MovieLens(ratings, users, _movies_table(ids, titles, years, genres), source=where)


def parse_recbole_ml100k(inter, user, item, *, where="recbole ml-100k"):
    """Parses recbole's atomic files (tab-separated with a typed header line)."""
    ratings = parse_ratings(inter, "\t", where=f"{where}.inter", header=True)
    ids, titles, years, genres = [], [], [], []
    for parts in _rows(item, "\t", 4, where=f"{where}.item", header=True):
        ids.append(int(parts[0]))
        titles.append(parts[1].strip())
        years.append(int(parts[2]) if parts[2].strip().isdigit() else 0)
        genres.append(parts[3].split())
    users = _parse_users(user, "\t", where=f"{where}.user", header=True)
    return MovieLens(ratings, users, _movies_table(ids, titles, years, genres), source=where)


def parse_ml1m(ratings_dat, movies_dat, users_dat=None, *, where="ml-1m", ratings=None):
    """Parses ML-1M's (and ML-10M's) '::'-separated ratings.dat, movies.dat and (optional)
    users.dat; ``ratings``: the ratings table already parsed (ratings_dat is then unused)."""
    if ratings is None:
        ratings = parse_ratings(ratings_dat, "::", where=f"{where}/ratings.dat")
    ids, titles, years, genres = [], [], [], []
    for parts in _rows(movies_dat, "::", 3, where=f"{where}/movies.dat"):
        title, year = _split_title(parts[1])
        ids.append(int(parts[0]))
        titles.append(title)
        years.append(year)
        genres.append([g for g in parts[2].strip().split("|") if g])
    users = None
    if users_dat is not None:
        uids, ages, genders, occs, zips = [], [], [], [], []
        # ML-1M's users.dat orders gender before age and codes occupations as numbers.
        for parts in _rows(users_dat, "::", 5, where=f"{where}/users.dat"):
            uids.append(int(parts[0]))
            genders.append(parts[1])
            ages.append(int(parts[2]))
            occ = int(parts[3])
            occs.append(ML1M_OCCUPATIONS[occ] if 0 <= occ < len(ML1M_OCCUPATIONS) else str(occ))
            zips.append(parts[4].strip())
        users = _users_table(uids, ages, genders, occs, zips)
    return MovieLens(ratings, users, _movies_table(ids, titles, years, genres), source=where)


def parse_ml_csv(ratings_csv, movies_csv, *, where="ml-latest", ratings=None):
    """Parses the 20M / 25M / latest ratings.csv and movies.csv (with header lines);
    ``ratings``: the ratings table already parsed (ratings_csv is then unused)."""
    if ratings is None:
        ratings = parse_ratings(ratings_csv, ",", where=f"{where}/ratings.csv", header=True)
    ids, titles, years, genres = [], [], [], []
    reader = csv.reader(io.StringIO(movies_csv))
    for lineno, row in enumerate(reader, start=1):
        if lineno == 1 or not row:
            continue
        if len(row) != 3:
            raise ValueError(f"{where}/movies.csv: malformed line {lineno}: expected 3 "
                             f"fields, got {len(row)}")
        title, year = _split_title(row[1])
        ids.append(int(row[0]))
        titles.append(title)
        years.append(year)
        genres.append([g for g in row[2].split("|") if g and g != "(no genres listed)"])
    return MovieLens(ratings, None, _movies_table(ids, titles, years, genres), source=where)
