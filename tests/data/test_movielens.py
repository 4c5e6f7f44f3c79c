"""Tests for twotower.data.movielens on small files written in each release's format."""

import os
import zipfile

import numpy as np
import pytest

from twotower.data import movielens as ml

GENRE_FLAGS = {"Action": 1, "Comedy": 5, "Drama": 8}


def _uitem_line(mid, title, genres):
    flags = ["0"] * len(ml.ML100K_GENRES)
    for g in genres:
        flags[ml.ML100K_GENRES.index(g)] = "1"
    return f"{mid}|{title}|01-Jan-1995||http://x|" + "|".join(flags)


UDATA = "\n".join([
    "1\t10\t5\t100", "1\t20\t3\t200", "1\t30\t4\t300", "1\t40\t5\t400",
    "2\t10\t4\t150", "2\t30\t2\t250", "2\t20\t5\t350",
    "3\t10\t1\t50",
]) + "\n"
UITEM = "\n".join([
    _uitem_line(10, "Toy Story (1995)", ["Comedy"]),
    _uitem_line(20, "Heat (1995)", ["Action", "Drama"]),
    _uitem_line(30, "Casino (1995)", ["Drama"]),
    _uitem_line(40, "Unseen Movie (1996)", ["Action"]),
    _uitem_line(50, "Never Rated (1997)", ["Comedy"]),
]) + "\n"
UUSER = "1|24|M|technician|85711\n2|53|F|other|94043\n3|17|M|student|T8H1N\n4|33|F|writer|15213\n"


def _write(folder, files):
    os.makedirs(folder, exist_ok=True)
    for name, text in files.items():
        with open(os.path.join(folder, name), "w", encoding="latin-1") as f:
            f.write(text)
    return str(folder)


@pytest.fixture
def ml100k_dir(tmp_path):
    return _write(tmp_path / "ml-100k", {"u.data": UDATA, "u.item": UITEM, "u.user": UUSER})


def test_ml100k_folder_parses_ratings_users_movies(ml100k_dir):
    data = ml.load_movielens(ml100k_dir)
    assert data.ratings["user_id"].tolist() == [1, 1, 1, 1, 2, 2, 2, 3]
    assert data.ratings["rating"].dtype == np.float32
    assert data.movies["title"][0] == "Toy Story" and data.movies["year"][0] == 1995
    assert data.movies["genres"][1] == ("Action", "Drama")
    assert data.users["occupation"][2] == "student" and data.users["zip"][2] == "T8H1N"


def test_ml100k_zip_matches_folder(ml100k_dir, tmp_path):
    zpath = tmp_path / "ml-100k.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        for f in ("u.data", "u.item", "u.user"):
            z.write(os.path.join(ml100k_dir, f), f"ml-100k/{f}")
    a, b = ml.load_movielens(ml100k_dir), ml.load_movielens(str(zpath))
    for k in a.ratings:
        np.testing.assert_array_equal(a.ratings[k], b.ratings[k])
    assert list(a.movies["title"]) == list(b.movies["title"])


def test_url_road_uses_the_cached_zip_without_network(ml100k_dir, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    with zipfile.ZipFile(cache / "ml-100k.zip", "w") as z:
        for f in ("u.data", "u.item", "u.user"):
            z.write(os.path.join(ml100k_dir, f), f"ml-100k/{f}")
    # A URL that cannot resolve proves the cached file is used, not the network.
    assert ml.download_ml100k(str(cache), url="http://invalid.invalid/x.zip").endswith(
        "ml-100k.zip")
    assert len(ml.load_movielens("url", cache_dir=str(cache)).ratings["user_id"]) == 8


def test_recbole_wheel_is_read_from_the_zip(tmp_path):
    whl = tmp_path / "recbole-1.2.1-py3-none-any.whl"
    with zipfile.ZipFile(whl, "w") as z:
        z.writestr(f"{ml.RECBOLE_PREFIX}.inter",
                   "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
                   "1\t10\t5\t100\n1\t20\t3\t200\n")
        z.writestr(f"{ml.RECBOLE_PREFIX}.user",
                   "user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n"
                   "1\t24\tM\ttechnician\t85711\n")
        z.writestr(f"{ml.RECBOLE_PREFIX}.item",
                   "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
                   "10\tToy Story\t1995\tAnimation Children's Comedy\n20\tHeat\t1995\tAction\n")
    assert ml.find_recbole_wheel(str(tmp_path)) == str(whl)
    data = ml.load_movielens("recbole", cache_dir=str(tmp_path))
    assert data.ratings["movie_id"].tolist() == [10, 20]
    assert data.movies["genres"][0] == ("Animation", "Children's", "Comedy")
    assert data.users["age"].tolist() == [24]


def test_ml1m_dat_format(tmp_path):
    folder = _write(tmp_path / "ml-1m", {
        "ratings.dat": "1::1193::5::978300760\n1::661::3::978302109\n2::1193::4::978298413\n",
        "movies.dat": "1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n"
                      "661::James and the Giant Peach (1996)::Animation|Children's|Musical\n",
        "users.dat": "1::F::1::10::48067\n2::M::56::16::70072\n",
    })
    data = ml.load_movielens(folder)
    assert data.ratings["movie_id"].tolist() == [1193, 661, 1193]
    assert data.movies["year"].tolist() == [1975, 1996]
    assert data.movies["genres"][1] == ("Animation", "Children's", "Musical")
    assert data.users["occupation"].tolist() == ["K-12 student", "self-employed"]
    assert data.users["age"].tolist() == [1, 56]


def test_csv_format_quoted_titles_and_no_user_file(tmp_path):
    folder = _write(tmp_path / "ml-latest-small", {
        "ratings.csv": "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,3,4.5,964981247\n",
        "movies.csv": 'movieId,title,genres\n1,Toy Story (1995),Adventure|Animation\n'
                      '3,"American President, The (1995)",Comedy|Drama|Romance\n'
                      "5,Untitled,(no genres listed)\n",
    })
    data = ml.load_movielens(folder)
    assert data.users is None
    assert data.ratings["rating"].tolist() == [4.0, 4.5]
    assert data.movies["title"][1] == "American President, The"
    assert data.movies["genres"][2] == () and data.movies["year"][2] == 0
    prepared = ml.prepare_retrieval(data, ml.RetrievalConfig(min_user_interactions=1))
    assert set(prepared.users) == {"user_id"}


def test_missing_file_is_named(tmp_path):
    folder = _write(tmp_path / "broken", {"u.data": UDATA, "u.user": UUSER})
    with pytest.raises(FileNotFoundError, match="u.item"):
        ml.load_movielens(folder)


def test_malformed_rating_gives_line_number(tmp_path):
    bad = UDATA.replace("2\t30\t2\t250", "2\tthirty\t2\t250")
    folder = _write(tmp_path / "bad", {"u.data": bad, "u.item": UITEM, "u.user": UUSER})
    with pytest.raises(ValueError, match="line 6"):
        ml.load_movielens(folder)
    folder = _write(tmp_path / "short", {"ratings.csv": "userId,movieId,rating,timestamp\n1,2,3\n",
                                         "movies.csv": "movieId,title,genres\n"})
    with pytest.raises(ValueError, match="line 2"):
        ml.load_movielens(folder)


def test_bad_source_and_config_values_are_named():
    with pytest.raises(ValueError, match="'nowhere'"):
        ml.load_movielens("nowhere")
    with pytest.raises(ValueError, match="split.*'random'"):
        ml.RetrievalConfig(split="random")
    with pytest.raises(ValueError, match=r"test_fraction \+ valid_fraction must be < 1, got 0.6 \+ 0.5"):
        ml.RetrievalConfig(split="temporal", test_fraction=0.6, valid_fraction=0.5)


def test_leave_last_out_split_and_histories(ml100k_dir):
    data = ml.prepare_retrieval(ml.load_movielens(ml100k_dir),
                                ml.RetrievalConfig(history_length=3, min_user_interactions=1))
    item = {int(m): i for i, m in enumerate(data.items["movie_id"])}
    # user 1 (row 0): 10, 20 train; 30 valid; 40 test. user 2: 10 train, 30 valid, 20 test.
    # user 3: a single rating -> test, with no history at all.
    test = {int(u): int(i) for u, i in zip(data.test.user, data.test.item)}
    assert test == {0: item[40], 1: item[20], 2: item[10]}
    assert sorted(data.valid.item.tolist()) == [item[30], item[30]]
    row = list(data.test.user).index(0)
    assert data.test.query["history"][row].tolist() == [item[30] + 1, item[20] + 1, item[10] + 1]
    assert data.test.query["history"][list(data.test.user).index(2)].tolist() == [0, 0, 0]
    # Exclusions for test are what the user saw in train and valid.
    excl = data.exclusions(data.test)[row]
    assert sorted(excl.tolist()) == sorted([item[10], item[20], item[30]])
    # The never-rated movie is still in the corpus, with zero popularity.
    assert data.num_items == 5 and data.item_counts[item[50]] == 0
    assert data.test.query["age_bucket"][row] == 18 and data.test.query["zip"][row] == "85"


def test_a_sample_of_test_rows_keeps_its_rows_and_exclusions(ml100k_dir):
    data = ml.prepare_retrieval(ml.load_movielens(ml100k_dir),
                                ml.RetrievalConfig(history_length=3, min_user_interactions=1))
    part = data.test.take([2, 0])
    assert part.user.tolist() == [data.test.user[2], data.test.user[0]]
    np.testing.assert_array_equal(part.query["history"][1], data.test.query["history"][0])
    every = data.exclusions(data.test)
    for got, want in zip(data.exclusions(part), (every[2], every[0])):
        np.testing.assert_array_equal(got, want)


def test_serving_state_is_the_whole_logs(ml100k_dir):
    """What a served model answers from: each user after all their interactions —
    history up to and including the last one, every item of the log as seen."""
    data = ml.prepare_retrieval(ml.load_movielens(ml100k_dir),
                                ml.RetrievalConfig(history_length=3, min_user_interactions=1))
    item = {int(m): i for i, m in enumerate(data.items["movie_id"])}
    s = data.serving
    assert sorted(s.user.tolist()) == [0, 1, 2]  # one row per user with interactions
    row = {int(u): r for r, u in enumerate(s.user)}
    # user 1: 10, 20, 30, 40 in time order -> history 40, 30, 20 (the held-out 40 first)
    assert s.query["history"][row[0]].tolist() == [item[40] + 1, item[30] + 1, item[20] + 1]
    assert s.item[row[0]] == item[40] and s.query["zip"][row[0]] == "85"
    # user 3's single rating is their whole history
    assert s.query["history"][row[2]].tolist() == [item[10] + 1, 0, 0]
    assert sorted(data.seen_all[0].tolist()) == sorted(item[m] for m in (10, 20, 30, 40))
    assert sorted(data.seen_all[1].tolist()) == sorted(item[m] for m in (10, 20, 30))
    # history_length 0: no history column content, the state is still there
    none = ml.prepare_retrieval(ml.load_movielens(ml100k_dir),
                                ml.RetrievalConfig(history_length=0, min_user_interactions=1))
    assert none.serving.query["history"].shape == (3, 0)


def test_threshold_and_min_interactions(ml100k_dir):
    data = ml.prepare_retrieval(ml.load_movielens(ml100k_dir),
                                ml.RetrievalConfig(min_rating=4, min_user_interactions=3))
    # ratings >= 4: user 1 has 10, 30, 40 (3) -> kept; user 2 has 10, 20 (2) -> dropped.
    assert set(data.train.user.tolist() + data.test.user.tolist()) == {0}


def test_temporal_split_is_global_by_time(ml100k_dir):
    data = ml.prepare_retrieval(ml.load_movielens(ml100k_dir), ml.RetrievalConfig(
        split="temporal", test_fraction=0.25, valid_fraction=0.25, min_user_interactions=1))
    assert data.train.timestamp.max() <= data.valid.timestamp.min()
    assert data.valid.timestamp.max() <= data.test.timestamp.min()
    assert len(data.train) + len(data.valid) + len(data.test) == 8


def test_age_buckets():
    assert ml.age_bucket([7, 18, 24, 49, 73, -1]).tolist() == [1, 18, 18, 45, 56, -1]


# ----------------------------------------------------------------------------- 1M/10M/20M/25M

ML10M_RATINGS = "1::122::5::838985046\n1::185::5::838983525\n2::122::3::868245777\n"
ML10M_MOVIES = ("122::Boomerang (1992)::Comedy|Romance\n"
                "185::Net, The (1995)::Action|Crime|Thriller\n")


def _zip(path, top, files):
    with zipfile.ZipFile(path, "w") as z:
        for name, text in files.items():
            z.writestr(f"{top}/{name}", text.encode("utf-8"))
    return str(path)


def test_ml10m_zip_dat_without_users(tmp_path):
    # ML-10M's zip: ml-10M100K/ratings.dat, movies.dat, tags.dat; no users.dat
    path = _zip(tmp_path / "ml-10m.zip", "ml-10M100K", {
        "ratings.dat": ML10M_RATINGS, "movies.dat": ML10M_MOVIES, "tags.dat": ""})
    data = ml.load_movielens(path)
    assert data.users is None
    assert data.ratings["movie_id"].tolist() == [122, 185, 122]
    assert data.ratings["timestamp"].dtype == np.int64
    assert data.ratings["rating"].tolist() == [5.0, 5.0, 3.0]
    assert data.movies["title"][1] == "Net, The"


def test_release_road_uses_the_cached_zip_without_network(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    _zip(cache / "ml-25m.zip", "ml-25m", {
        "ratings.csv": "userId,movieId,rating,timestamp\n1,296,5.0,1147880044\n"
                       "1,306,3.5,1147868817\n2,296,4.0,1141415820\n",
        "movies.csv": "movieId,title,genres\n296,Pulp Fiction (1994),Comedy|Crime\n"
                      "306,Trois couleurs : Rouge (1994),Drama\n"
                      "307,Amélie (2001),Comedy|Romance\n"})
    # an address that cannot resolve proves the cached file is used
    assert ml.download_release("ml-25m", str(cache), url="http://invalid.invalid/x.zip") \
        .endswith("ml-25m.zip")
    data = ml.load_movielens("ml-25m", cache_dir=str(cache))
    assert data.ratings["user_id"].tolist() == [1, 1, 2]
    assert data.movies["title"][2] == "Amélie"  # the .csv releases are UTF-8
    assert ml.RELEASES["ml-1m"] == "ml-1m.zip"
    with pytest.raises(ValueError, match="release must be one of"):
        ml.download_release("ml-3m", str(cache))


def test_malformed_dat_line_is_named(tmp_path):
    folder = _write(tmp_path / "ml-1m", {"ratings.dat": "1::1::5::9\n1::x::3::9\n",
                                         "movies.dat": "1::A (1990)::Drama\n"})
    with pytest.raises(ValueError, match="ratings.dat: malformed rating at line 2"):
        ml.load_movielens(folder)


def test_a_plain_log_is_pointed_to_interactions(tmp_path):
    log = _write(tmp_path / "logs", {"interactions.csv": "user_id,item_id,timestamp\nu,i,1\n"})
    with pytest.raises(ValueError, match="not a zip file.*--interactions"):
        ml.load_movielens(os.path.join(log, "interactions.csv"))
    folder = _write(tmp_path / "ratings-only", {
        "ratings.csv": "userId,movieId,rating,timestamp\n1,2,3.0,4\n"})
    with pytest.raises(FileNotFoundError, match="movies.csv.*--interactions"):
        ml.load_movielens(folder)
