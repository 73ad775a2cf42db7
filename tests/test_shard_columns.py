"""Shards read into memory are checked against each other as the streamed read checks them."""
import logging

import pandas as pd
import pytest

from tfrs_recsys.data.errors import DataError
from tfrs_recsys.data.tabular import read_table


def test_a_column_of_numbers_in_one_parquet_shard_and_text_in_another_is_refused(tmp_path):
    pd.DataFrame({"user_id": [1, 2], "clicked": [0, 1]}).to_parquet(tmp_path / "part-0.parquet")
    pd.DataFrame({"user_id": ["u3", "u4"], "clicked": [1, 0]}).to_parquet(tmp_path / "part-1.parquet")
    with pytest.raises(DataError) as refused:
        read_table(str(tmp_path))
    said = str(refused.value)
    assert "column 'user_id'" in said and "numbers in" in said and "part-1.parquet" in said
    assert "same columns and types" in said


def test_a_column_some_shards_lack_is_said_and_read_as_missing(tmp_path, caplog):
    pd.DataFrame({"user_id": ["a", "b"], "clicked": [0, 1]}).to_parquet(tmp_path / "part-0.parquet")
    pd.DataFrame({"user_id": ["c"], "clicked": [1], "placement": ["top"]}).to_parquet(
        tmp_path / "part-1.parquet")
    with caplog.at_level(logging.WARNING):
        table, _ = read_table(str(tmp_path))
    assert table["placement"].isna().sum() == 2
    assert "'placement' is missing from 1 of 2 shards" in caplog.text


def test_text_shards_of_numbers_and_words_are_one_column_of_text(tmp_path):
    (tmp_path / "a.csv").write_text("user_id,clicked\n1,0\n2,1\n")
    (tmp_path / "b.csv").write_text("user_id,clicked\nu3,1\n")
    table, _ = read_table(str(tmp_path))
    assert len(table) == 3


def test_parquet_shards_of_one_kind_read_differently_by_pandas_are_one_table(tmp_path):
    import decimal

    import pyarrow as pa
    import pyarrow.parquet as pq

    first = {"flag": pa.array([True, None]), "price": pa.array([decimal.Decimal("1.5"), None]),
             "note": pa.nulls(2)}
    pq.write_table(pa.table(first), tmp_path / "part-0.parquet")
    pq.write_table(pa.table({"flag": [False, True], "price": [2.5, 3.0], "note": [1, 2]}),
                   tmp_path / "part-1.parquet")
    table, _ = read_table(str(tmp_path))
    assert len(table) == 4
