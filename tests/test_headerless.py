"""A file without a header row is said to have none when a named column is missing."""
import pytest

from tfrs_recsys.data.entities import read_entity_table
from tfrs_recsys.data.errors import DataError
from tfrs_recsys.data.headers import headerless
from tfrs_recsys.data.interactions import load_interaction_log
from tfrs_recsys.data.registry import load_labeled
from tfrs_recsys.data.streaming import open_table
from tfrs_recsys.data.tabular import load_table

_LASTFM = "".join(f"user_00000{u}\t2009-05-04T23:0{m}:57Z\tf1b1cf71-bd35-4e99-8624-24a6e15f133{m}\t"
                  f"Deep Dish\t\tTrack {m}\n" for u in (1, 2) for m in range(5))
_MIND = "".join(f"{i}\tU{38439 + i * 7}\t11/{9 + i % 3}/2019 {1 + i}:00:10 AM\tN55189 N42782\t"
                f"N{100 + i}-{i % 2}\n" for i in range(1, 8))
_NEWS = "".join(f"N{55528 + i}\tlifestyle\tlifestyleroyals\tTitle {i}\tAbstract\t"
                f"https://assets.msn.com/labs/mind/AAGH{i}ET.html\t[]\t[]\n" for i in range(6))


def _file(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def _says_no_header(err):
    assert "looks like data, not a header" in err.value.message
    assert "add a first line naming the columns" in err.value.fix
    assert "naming one of them" not in err.value.fix  # a data value is no column to pass


def test_headerless_interaction_log(tmp_path):
    plays = _file(tmp_path, "plays.tsv", _LASTFM)
    with pytest.raises(DataError, match="its columns are") as err:
        load_interaction_log(plays, user_column="userid", item_column="track")
    _says_no_header(err)
    assert "\\t" in err.value.fix  # the header to add is tab-separated, as the rows are


def test_headerless_ranker_table(tmp_path):
    behaviors = _file(tmp_path, "behaviors.tsv", _MIND)
    with pytest.raises(DataError) as err:
        load_table(behaviors, labels=["click"])
    _says_no_header(err)
    with pytest.raises(DataError) as err:
        open_table(behaviors, labels=["click"])
    _says_no_header(err)


def test_headerless_items_table(tmp_path):
    news = _file(tmp_path, "news.tsv", _NEWS)
    with pytest.raises(DataError) as err:
        read_entity_table(news, "news_id", "item", False, [], ())
    _says_no_header(err)
    behaviors = _file(tmp_path, "behaviors.tsv", _MIND)  # the data's columns are checked first
    with pytest.raises(DataError) as err:
        load_labeled("deepfm", "csv", behaviors, label_columns=["click"], item_column="news_id", items=news)
    _says_no_header(err)


def test_a_header_is_no_data():
    rows = [["user_000001", "2009-05-04T23:08:57Z", "4"], ["user_000002", "2009-05-05T23:08:57Z", "5"]]
    assert not headerless(["userid", "timestamp", "rating"], rows)
    assert headerless(rows[0], rows[1:])


def test_headers_of_short_names_over_numbers_and_hashes_are_headers():
    criteo = ["label", *(f"I{i}" for i in range(1, 14)), *(f"C{i}" for i in range(1, 27))]
    rows = [[str(r % 2), *(str((r * 37 + i) % 500) for i in range(13)),
             *(f"{(r * 2654435761 + i * 40503) % (1 << 32):08x}" for i in range(26))] for r in range(20)]
    assert not headerless(criteo, rows)
    assert not headerless(["f1", "f2", "label"], [["0.5", "1.2", "1"], ["0.7", "2.2", "0"]])
    assert not headerless(["country", "2019", "2020"], [["US", "0.53", "0.61"], ["DE", "0.4", "0.3"]])
    ali_ccp = ["click", "purchase", "101", "121", "122"]  # Ali-CCP's field ids are numbers
    assert not headerless(ali_ccp, [["0", "0", "1", "2", "3"], ["1", "0", "4", "5", "6"]])
    assert headerless(rows[0], rows[1:])
