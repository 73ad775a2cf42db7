"""The loaders on the real sample files, and their errors on broken copies in tmp_path."""
from pathlib import Path

import numpy as np
import pytest
from conftest import dataset_path

from tfrs_recsys.data.clicklogs import load_ali_ccp, load_aliexpress
from tfrs_recsys.data.errors import DataError
from tfrs_recsys.data.movielens import (
    ML100K_GENRES,
    load_movielens_1m,
    load_movielens_100k,
    load_movielens_csv,
)
from tfrs_recsys.data.readers import read_delimited
from tfrs_recsys.data.tabular import CRITEO_COLUMNS, load_criteo

# --- real files -------------------------------------------------------------------------------


def test_movielens_100k_counts_types_and_genres(datasets_dir):
    data = load_movielens_100k(dataset_path(datasets_dir, "ml-100k"))
    ratings = data.interactions
    assert len(ratings) == 100_000
    assert data.num_users == 943 and data.num_items == 1_682
    assert len(data.items) == 1_682 and len(data.users) == 943
    assert ratings["timestamp"].dtype == np.int64 and ratings["rating"].dtype == np.float64
    assert set(ratings["rating"].unique()) == {1.0, 2.0, 3.0, 4.0, 5.0}
    assert all(isinstance(u, str) for u in ratings["user_id"].head(100))
    toy_story = data.items.set_index("item_id").loc["1"]
    assert toy_story["title"] == "Toy Story (1995)"
    assert toy_story["genres"] == ["Animation", "Children's", "Comedy"]
    assert all(set(g) <= set(ML100K_GENRES) for g in data.items["genres"])
    assert sum("Drama" in g for g in data.items["genres"]) == 725  # the Drama flag column's sum in u.item
    assert not any(s.skipped for s in data.skipped)


def test_movielens_latest_small(datasets_dir):
    data = load_movielens_csv(dataset_path(datasets_dir, "ml-latest-small"))
    assert len(data.interactions) == 100_836
    assert data.num_users == 610 and data.num_items == 9_724
    assert len(data.items) == 9_742
    items = data.items.set_index("item_id")
    assert items.loc["1", "genres"] == ["Adventure", "Animation", "Children", "Comedy", "Fantasy"]
    # Quoted titles hold the separator; "(no genres listed)" means no genres.
    assert items["title"].str.contains(",").sum() > 100
    assert (items["genres"].map(len) == 0).sum() > 0


def test_movielens_1m_side_tables_with_a_hand_written_ratings_file(datasets_dir, tmp_path):
    source = dataset_path(datasets_dir, "ml-1m")
    for name in ("movies.dat", "users.dat"):
        (tmp_path / name).symlink_to(source / name)
    (tmp_path / "ratings.dat").write_text("1::1193::5::978300760\n1::661::3::978302109\n"
                                          "2::73::4::978298709\n")
    data = load_movielens_1m(tmp_path)
    assert list(data.interactions["item_id"]) == ["1193", "661", "73"]
    assert list(data.interactions["timestamp"]) == [978300760, 978302109, 978298709]
    assert len(data.items) == 3_883 and len(data.users) == 6_040
    items = data.items.set_index("item_id")
    assert items.loc["1", "genres"] == ["Animation", "Children's", "Comedy"]
    assert items.loc["73", "title"] == "Misérables, Les (1995)"  # ISO-8859-1 decoded
    assert (data.users["gender"] == "M").sum() == 4_331


def test_criteo_raw_head(datasets_dir):
    data = load_criteo(dataset_path(datasets_dir, "criteo", "dac_train_head1000.txt"))
    frame = data.frame
    assert frame.shape == (1_000, 40) and list(frame.columns) == list(CRITEO_COLUMNS)
    assert int(frame["label"].sum()) == 205
    assert int(frame["I1"].isna().sum()) == 458 and int(frame["I12"].isna().sum()) == 775
    assert int((frame["C22"] == "").sum()) == 815
    assert frame.loc[0, "C1"] == "68fd1e64" and frame.loc[0, "I2"] == 1.0


def test_criteo_deepctr_csv(datasets_dir):
    data = load_criteo(dataset_path(datasets_dir, "criteo", "deepctr_criteo_sample.txt"))
    assert data.frame.shape == (200, 40)
    assert int(data.frame["label"].sum()) == 49
    assert data.frame["I1"].isna().any() and data.frame["I3"].dtype == np.float64


def test_criteo_as_committed_rows_are_reported_not_padded(datasets_dir):
    path = dataset_path(datasets_dir, "criteo", "dac_train_head1000.as_committed.txt")
    with pytest.raises(DataError) as err:
        load_criteo(path)
    assert err.value.line == 3 and f"{path}:3" in str(err.value)
    assert "expected 40 fields" in str(err.value) and "found 38" in str(err.value)
    data = load_criteo(path, skip_bad_rows=True)
    report = data.skipped[0]
    assert report.skipped == 498 and report.total == 1_000  # 469 rows with 38 fields, 29 with 37
    assert len(data.frame) == 502


@pytest.mark.parametrize("name,rows,sessions,clicks,conversions", [
    ("fuxictr_tiny_mtl_train.csv", 1_000, 77, 29, 10),
    ("torchrechub_aliexpress_train_sample.csv", 100, 41, 60, 2),
])
def test_aliexpress(datasets_dir, name, rows, sessions, clicks, conversions):
    data = load_aliexpress(dataset_path(datasets_dir, "aliexpress", name))
    frame = data.frame
    assert frame.shape == (rows, 82) and data.session_column == "search_id"
    assert frame["search_id"].nunique() == sessions
    assert int(frame["click"].sum()) == clicks and int(frame["conversion"].sum()) == conversions
    assert not ((frame["conversion"] == 1) & (frame["click"] == 0)).any()
    assert frame["numerical_1"].dtype == np.float64 and isinstance(frame["categorical_1"].iloc[0], str)


def test_ali_ccp_processed_csv(datasets_dir):
    data = load_ali_ccp(dataset_path(datasets_dir, "ali-ccp", "torchrechub_ali_ccp_train_sample.csv"))
    frame = data.frame
    assert len(frame) == 100 and data.labels == ["click", "conversion"]
    assert int(frame["click"].sum()) == 7 and int(frame["conversion"].sum()) == 1
    assert "purchase" not in frame.columns and {"f101", "f205", "f150_14", "D508"} <= set(frame.columns)
    assert data.user_column == "f101" and data.item_column == "f205"
    assert frame["D508"].dtype == np.float64


def test_ali_ccp_paddlerec_lines(datasets_dir):
    data = load_ali_ccp(dataset_path(datasets_dir, "ali-ccp", "paddlerec_esmm_train_small.txt"))
    frame = data.frame
    assert len(frame) == 10
    assert int(frame["click"].sum()) == 2 and int(frame["conversion"].sum()) == 1
    assert not ((frame["conversion"] == 1) & (frame["click"] == 0)).any()
    assert frame.loc[0, "f210"] == ["1", "2", "3"]  # multi-valued field: every id of the row, in order
    assert max(len(v) for v in frame["f150_14"]) > 100


# --- broken copies ----------------------------------------------------------------------------

_MOVIES = 'movieId,title,genres\n1,"Toy Story (1995)",Animation|Comedy\n2,"Heat, The (1995)",Action\n'


def _movielens_csv(tmp_path: Path, ratings: bytes | str, movies: str = _MOVIES) -> Path:
    (tmp_path / "ratings.csv").write_bytes(ratings.encode() if isinstance(ratings, str) else ratings)
    (tmp_path / "movies.csv").write_text(movies)
    return tmp_path


def _error(fn, *args, **kwargs) -> DataError:
    with pytest.raises(DataError) as err:
        fn(*args, **kwargs)
    return err.value


def test_missing_column_is_named(tmp_path):
    err = _error(load_movielens_csv, _movielens_csv(tmp_path, "userId,movieId,timestamp\n1,1,100\n"))
    assert err.column == "rating" and err.line == 1 and "ratings.csv" in err.path and err.fix


def test_wrong_type_names_line_and_column(tmp_path):
    folder = _movielens_csv(tmp_path, "userId,movieId,rating,timestamp\n1,1,4.0,100\n1,2,good,200\n")
    err = _error(load_movielens_csv, folder)
    assert (err.line, err.column) == (3, "rating") and "'good' is not a number" in str(err)
    assert str(err).startswith(f"{folder / 'ratings.csv'}:3: column 'rating'")
    no_rating = _movielens_csv(tmp_path, "userId,movieId,rating,timestamp\n1,1,,100\n")
    blank = _error(load_movielens_csv, no_rating)
    assert blank.line == 2 and "the rating is missing" in str(blank) and "nan" not in str(blank)


def test_fractional_seconds_are_dropped_and_a_bad_time_is_named(tmp_path):
    data = load_movielens_csv(_movielens_csv(tmp_path, "userId,movieId,rating,timestamp\n1,1,4,2.5\n"))
    assert data.interactions["timestamp"].tolist() == [2]
    bad = "userId,movieId,rating,timestamp\n1,1,4,2\n1,2,4,x\n"
    err = _error(load_movielens_csv, _movielens_csv(tmp_path, bad))
    assert (err.line, err.column) == (3, "timestamp") and "not a time (epoch seconds or a date)" in str(err)


def test_empty_file(tmp_path):
    err = _error(load_movielens_csv, _movielens_csv(tmp_path, ""))
    assert "is empty" in str(err) and err.path.endswith("ratings.csv")
    err = _error(load_movielens_csv, _movielens_csv(tmp_path, "userId,movieId,rating,timestamp\n"))
    assert "no data rows" in str(err)


def test_wrong_field_count_tab_file(tmp_path):
    (tmp_path / "u.data").write_text("1\t1\t5\t100\n1\t2\t200\n")
    err = _error(load_movielens_100k, tmp_path)
    assert err.line == 2 and "expected 4 fields" in str(err) and "found 3" in str(err)


def test_short_row_in_a_quoted_csv_is_not_padded(tmp_path):
    movies = _MOVIES + '3,"Heat"\n'
    err = _error(load_movielens_csv,
                 _movielens_csv(tmp_path, "userId,movieId,rating,timestamp\n1,1,4,1\n", movies))
    assert err.path.endswith("movies.csv") and err.line == 4 and "found 2" in str(err)


def test_non_utf8_byte_names_the_line(tmp_path):
    # 0x81 is no character of UTF-8 or of Windows-1252 (text that is cp1252 is read as such: test_user_files)
    ratings = "userId,movieId,rating,timestamp\n1,1,4.0,100\n1,2,3.5,2\x810\n".encode("latin-1")
    err = _error(load_movielens_csv, _movielens_csv(tmp_path, ratings))
    assert err.line == 3 and "0x81" in str(err) and "utf-8" in str(err)


def test_conversion_without_click(tmp_path):
    path = tmp_path / "ae.csv"
    path.write_text("search_id,categorical_1,numerical_1,click,conversion\n1,a,0.5,1,1\n1,b,0.2,0,1\n")
    err = _error(load_aliexpress, path)
    assert (err.line, err.column) == (3, "conversion") and "without a click" in str(err)
    paddle = tmp_path / "paddle.txt"
    paddle.write_text("1,1,1,101:3,205:4\n2,0,1,101:3\n")
    err = _error(load_ali_ccp, paddle)
    assert (err.line, err.column) == (2, "conversion")


def test_non_binary_label(tmp_path):
    path = tmp_path / "criteo.txt"
    path.write_text("\t".join(["2"] + ["1"] * 13 + ["a"] * 26) + "\n")
    err = _error(load_criteo, path)
    assert (err.line, err.column) == (1, "label") and "found 2" in str(err)


def test_skip_bad_rows_counts_every_skipped_row(tmp_path):
    path = tmp_path / "u.data"
    path.write_text("1\t1\t5\t100\n1\t2\tx\t200\n2\t1\t3\t300\n2\t2\t4\n3\t3\t1\t500\n")
    with pytest.raises(DataError):
        read_delimited(path, sep="\t", columns=["user_id", "item_id", "rating", "timestamp"],
                       column_types={"rating": "float", "timestamp": "int"}, quoting=False)
    frame, report = read_delimited(path, sep="\t", columns=["user_id", "item_id", "rating", "timestamp"],
                                   column_types={"rating": "float", "timestamp": "int"}, quoting=False,
                                   skip_bad_rows=True)
    assert (report.skipped, report.total) == (2, 5)
    assert list(frame["timestamp"]) == [100, 300, 500] and frame["timestamp"].dtype == np.int64
    assert ":2:" in report.examples[0] and ":4:" in report.examples[1]


def test_skip_bad_rows_in_paddlerec_lines(tmp_path):
    path = tmp_path / "paddle.txt"
    path.write_text("1,1,1,101:3,205:4\n2,0,0,101\n3,0,0,101:5\n")
    err = _error(load_ali_ccp, path)
    assert err.line == 2 and "field:feature_id" in str(err)
    data = load_ali_ccp(path, skip_bad_rows=True)
    assert len(data.frame) == 2 and data.skipped[0].skipped == 1 and data.skipped[0].total == 3


def test_label_errors_found_after_reading_name_the_file_line(tmp_path):
    header = "search_id,categorical_1,numerical_1,click,conversion\n"
    body = "s1,a,0.5,1,1\n\ns1,b,x,0,0\ns2,c,0.1,0,0\ns2,d,0.2,0,1\n"  # blank line 3, bad value on line 4
    path = tmp_path / "aliexpress.csv"
    path.write_text(header + body)
    err = _error(load_aliexpress, path, skip_bad_rows=True)
    assert err.line == 6 and err.column == "conversion" and "without a click" in str(err)
    criteo = tmp_path / "criteo.txt"
    row = "\t".join(["0"] + ["1"] * 13 + ["ab"] * 26)
    # blank line 2, label 2 on line 4
    criteo.write_text(f"{row}\n\n{row}\n" + row.replace("0", "2", 1) + "\n")
    err = _error(load_criteo, criteo)
    assert err.line == 4 and err.column == "label"
    paddle = tmp_path / "paddle.txt"
    # blank line 2, bad line 3, funnel break on 4
    paddle.write_text("1,1,1,101:3\n\n2,0,0,101\n3,0,1,101:5\n")
    err = _error(load_ali_ccp, paddle, skip_bad_rows=True)
    assert err.line == 4 and err.column == "conversion"


def test_missing_file_says_where_to_get_it(tmp_path):
    err = _error(load_movielens_100k, tmp_path)
    assert "not found" in str(err) and "grouplens" in err.fix
