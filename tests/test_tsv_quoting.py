"""Tab-separated files are read without quote processing unless they are evidently CSV-quoted."""
import pandas as pd
import pytest

from tfrs_recsys.data.errors import DataError
from tfrs_recsys.data.streaming import record_batches
from tfrs_recsys.data.tabular import read_table, table_columns

# Last.fm-1K / MIND style: no quoting at all, quotes are part of the values.
_PLAIN = ('user\titem\tartist\ttitle\n'
          'u1\ti1\t"Weird Al" Yankovic\t"Quoted" title starts with quote\n'
          'u2\ti2\tDavid Bowie\t"Heroes (live\n'
          'u3\ti3\tBowie\tStarman\n'
          'u4\ti4\t"Heroes\t"x"\n')
_VALUES = {"artist": ['"Weird Al" Yankovic', "David Bowie", "Bowie", '"Heroes'],
           "title": ['"Quoted" title starts with quote', '"Heroes (live', "Starman", '"x"']}


def _streamed(file: str) -> pd.DataFrame:
    return pd.concat([b.to_pandas() for b in record_batches(file, None, 1000)], ignore_index=True)


def test_unquoted_tsv_values_are_kept_verbatim(tmp_path, caplog):
    path = tmp_path / "plays.tsv"
    path.write_text(_PLAIN)
    frame, reports = read_table(str(path))
    assert len(frame) == 4 and reports[0].skipped == 0
    assert {c: frame[c].tolist() for c in _VALUES} == _VALUES
    assert "kept as written" in caplog.text
    streamed = _streamed(str(path))
    assert len(streamed) == 4 and {c: streamed[c].tolist() for c in _VALUES} == _VALUES
    assert table_columns(str(path), "--data") == ["user", "item", "artist", "title"]


def test_pandas_quoted_tsv_round_trips(tmp_path):
    written = pd.DataFrame({"user": ["u1", "u2", "u3"], "artist": ['"Weird Al" Yankovic', "tab\tin", "Bowie"],
                            "title": ['"Heroes (live', 'two\nlines', "Starman"]})
    path = tmp_path / "plays.tsv"
    written.to_csv(path, sep="\t", index=False)
    assert '"""Weird Al"" Yankovic"' in path.read_text()
    frame, _ = read_table(str(path))
    pd.testing.assert_frame_equal(frame, written)
    pd.testing.assert_frame_equal(_streamed(str(path)), written)


def test_comma_csv_keeps_csv_quoting(tmp_path):
    path = tmp_path / "plays.csv"
    path.write_text('user,artist\nu1,"Yankovic, Al"\nu2,"""Weird Al"" Yankovic"\n')
    frame, _ = read_table(str(path))
    assert frame["artist"].tolist() == ["Yankovic, Al", '"Weird Al" Yankovic']


def test_quoted_tsv_with_a_broken_row_names_the_quote(tmp_path):
    path = tmp_path / "plays.tsv"
    path.write_text('user\tartist\n' + 'u1\t"A ""b"""\n' * 3 + 'u2\t"x\ty"\tz\n')
    with pytest.raises(DataError) as err:
        read_table(str(path))
    assert "quote" in err.value.message and err.value.line == 5


def test_an_unclosed_quote_past_the_sampled_head_is_a_bad_row_not_a_traceback(tmp_path):
    """The head (first MiB) shows only whole quoted fields, so the file reads as CSV-quoted; a later row
    opening a quote it never closes is one bad row: named, or skipped with --skip-bad-rows."""
    rows = [f"user_{i % 50:04d}\t{1_600_000_000 + i}\t\"Heroes\"\ttrack_{i % 97:04d}" for i in range(40_000)]
    for at in (35_000, 35_003):  # the second closes the first's record: 4 lines read as one
        rows[at] = f'user_0001\t{1_600_000_000 + at}\t"Weird Al" Yankovic\t"Heroes (live'
    path = tmp_path / "late.tsv"
    path.write_text("user\tts\tartist\ttrack\n" + "\n".join(rows) + "\n")
    assert path.stat().st_size > 1 << 20
    with pytest.raises(DataError) as refused:
        read_table(str(path))
    assert "late.tsv" in str(refused.value)
    table, reports = read_table(str(path), skip_bad_rows=True)
    assert 39_000 < len(table) < 40_000 and sum(r.skipped for r in reports) == 1
