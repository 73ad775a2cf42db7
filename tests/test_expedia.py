"""The Kaggle Expedia hotel-search format on a hand-written fixture: loading, validation, benchmark setup,
and a one-epoch ESMM benchmark run that reports the competition's NDCG@38."""
import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tfrs_recsys import metrics as M
from tfrs_recsys.data.errors import DataError
from tfrs_recsys.data.expedia import (
    TEST_COLUMNS,
    TRAIN_COLUMNS,
    load_expedia,
    read_expedia_csv,
    setup_benchmark,
)
from tfrs_recsys.data.registry import load_labeled
from tfrs_recsys.data.schema_inference import infer_schema

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "fixtures" / "expedia"
LEAKS = {"click", "conversion", "click_bool", "booking_bool", "gross_bookings_usd", "position"}


def _raw_rows(path: Path = FIXTURE / "train.csv") -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _write(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(",".join(r) for r in [header, *rows]) + "\n")
    return path


def _fixture_lines() -> tuple[list[str], list[list[str]]]:
    header, *rows = [line.split(",") for line in (FIXTURE / "train.csv").read_text().splitlines()]
    return header, rows


def _make(*args: str) -> subprocess.CompletedProcess:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    # -o: never rebuild the venv from a test; VPY: this interpreter.
    return subprocess.run(["make", "-s", "-o", ".venv/.installed", f"VPY={sys.executable}", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=540)


def test_fixture_is_in_the_exact_kaggle_layout():
    header, rows = _fixture_lines()
    assert tuple(header) == TRAIN_COLUMNS and len(TRAIN_COLUMNS) == 54
    test_header = (FIXTURE / "test.csv").read_text().splitlines()[0].split(",")
    assert tuple(test_header) == TEST_COLUMNS and len(TEST_COLUMNS) == 50
    assert all(len(r) == 54 for r in rows) and "NULL" in {v for r in rows for v in r}


def test_loader_maps_kaggle_columns_to_esmm():
    raw = _raw_rows()
    data = load_expedia(str(FIXTURE))
    frame = data.frame
    assert data.labels == ["click", "conversion"]
    assert (data.session_column, data.item_column, data.user_column) == ("srch_id", "prop_id", None)
    assert len(frame) == len(raw)
    assert not LEAKS - {"click", "conversion"} & set(frame.columns)
    assert "date_time" not in frame.columns and frame["timestamp"].dtype == np.int64
    assert frame["timestamp"].iloc[0] == 1365064335  # 2013-04-04 08:32:15 UTC
    assert frame["click"].tolist() == [int(r["click_bool"]) for r in raw]
    assert frame["conversion"].tolist() == [int(r["booking_bool"]) for r in raw]
    null = [r["visitor_hist_adr_usd"] == "NULL" for r in raw]
    assert frame["visitor_hist_adr_usd"].isna().tolist() == null and not all(null)
    assert frame.loc[~np.array(null), "visitor_hist_adr_usd"].tolist() == \
        [float(r["visitor_hist_adr_usd"]) for r in raw if r["visitor_hist_adr_usd"] != "NULL"]


def test_kaggles_train_csv_gz_reads_as_its_csv(tmp_path):
    import gzip

    (tmp_path / "train.csv.gz").write_bytes(gzip.compress((FIXTURE / "train.csv").read_bytes()))
    for path in (tmp_path, tmp_path / "train.csv.gz"):  # its folder, or the file
        assert load_expedia(str(path)).frame.equals(load_expedia(str(FIXTURE)).frame)


def test_inferred_spec_has_no_label_or_train_only_feature():
    data = load_expedia(str(FIXTURE / "train.csv"))
    spec = infer_schema(data.frame, data.labels, session_column=data.session_column,
                        item_column=data.item_column)
    names = set(spec.feature_names)
    assert not names & LEAKS
    assert "srch_id" not in names and spec.session_column == "srch_id"
    assert spec["prop_id"].kind == "id" and spec["prop_id"].group == "item"
    assert spec["timestamp"].kind == "timestamp"
    assert {f.group for f in spec.features if f.name.startswith("visitor_")} == {"user"}
    assert {f.group for f in spec.features if f.name.startswith("prop_")} == {"item"}


def test_registry_serves_expedia_to_esmm_only():
    data = load_labeled("esmm", "expedia", str(FIXTURE))
    assert data.name == "expedia" and len(data.frame) == len(_raw_rows())
    with pytest.raises(DataError, match="ESMM"):
        load_labeled("deepfm", "expedia", str(FIXTURE))


def test_test_csv_reads_without_labels_and_is_refused_as_train():
    frame, _ = read_expedia_csv(str(FIXTURE / "test.csv"), part="test")
    assert tuple(frame.columns) == TEST_COLUMNS and len(frame) == len(_raw_rows(FIXTURE / "test.csv"))
    with pytest.raises(DataError, match=r"lacks column\(s\) \['position'.*looks like test.csv"):
        read_expedia_csv(str(FIXTURE / "test.csv"), part="train")


@pytest.mark.parametrize("chunk_rows", [200_000, 7])  # one block, and blocks that split the file
def test_bad_rows_fail_with_file_line_and_column(tmp_path, chunk_rows):
    header, rows = _fixture_lines()
    col = {name: i for i, name in enumerate(header)}
    booked = next(i for i, r in enumerate(rows) if r[col["booking_bool"]] == "1" and i > 20)
    cases = {
        "booking_bool": lambda r: r.__setitem__(col["click_bool"], "0"),
        "price_usd": lambda r: r.__setitem__(col["price_usd"], "cheap"),
        "srch_id": lambda r: r.__setitem__(col["srch_id"], "NULL"),
        "date_time": lambda r: r.__setitem__(col["date_time"], "04/04/2013"),
        "click_bool": lambda r: r.__setitem__(col["click_bool"], "2"),
    }
    for column, corrupt in cases.items():
        bad = [list(r) for r in rows]
        corrupt(bad[booked])
        path = _write(tmp_path / column / "train.csv", header, bad)
        with pytest.raises(DataError) as info:
            read_expedia_csv(str(path), chunk_rows=chunk_rows)
        message = str(info.value)
        assert message.startswith(f"{path}:{booked + 2}: column '{column}'"), message
        assert "Fix:" in message
    short = [list(r) for r in rows]
    short[booked] = short[booked][:-1]
    path = _write(tmp_path / "short" / "train.csv", header, short)
    with pytest.raises(DataError, match=f"{path}:{booked + 2}: expected 54 fields"):
        read_expedia_csv(str(path), chunk_rows=chunk_rows)


def test_missing_column_is_named(tmp_path):
    header, rows = _fixture_lines()
    drop = header.index("booking_bool")
    path = _write(tmp_path / "train.csv", header[:drop] + header[drop + 1:],
                  [r[:drop] + r[drop + 1:] for r in rows])
    with pytest.raises(DataError, match=r"train.csv:1: column 'booking_bool': train.csv header lacks"):
        load_expedia(str(path))


def test_skip_bad_rows_skips_and_counts(tmp_path):
    header, rows = _fixture_lines()
    col = {name: i for i, name in enumerate(header)}
    bad = [list(r) for r in rows]
    bad[3][col["price_usd"]] = "cheap"   # a type error read_delimited skips
    bad[40][col["click_bool"]] = "0"     # a booking without a click, found after parsing
    bad[40][col["booking_bool"]] = "1"
    path = _write(tmp_path / "train.csv", header, bad)
    data = load_expedia(str(path), skip_bad_rows=True)
    assert len(data.frame) == len(rows) - 2
    (report,) = data.skipped
    assert (report.skipped, report.total) == (2, len(rows))
    assert (any("'price_usd'" in e for e in report.examples)
            and any("not clicked" in e for e in report.examples))
    assert all(str(path) in e for e in report.examples)


def test_setup_validates_and_writes_parquet(tmp_path):
    raw = _raw_rows()
    work = tmp_path / "work"
    proc = _make("benchmark-setup", f"DATA={FIXTURE}", f"BENCH_DIR={work}")
    assert proc.returncode == 0, proc.stderr
    assert "train: 56 rows, 12 searches" in proc.stdout and "9,917,530" in proc.stdout
    manifest = json.loads((work / "manifest.json").read_text())
    train = manifest["parts"]["train"]
    assert train["rows"] == len(raw) and train["searches"] == len({r["srch_id"] for r in raw})
    assert train["clicks"] == sum(int(r["click_bool"]) for r in raw)
    assert train["bookings"] == sum(int(r["booking_bool"]) for r in raw)
    assert manifest["parts"]["test"]["rows"] == len(_raw_rows(FIXTURE / "test.csv"))
    assert manifest["complete_train"] is False
    from_csv, _ = read_expedia_csv(str(FIXTURE / "train.csv"))
    written = pd.read_parquet(work / "train.parquet")
    # Parquet stores ms
    pd.testing.assert_frame_equal(written.astype({"date_time": "datetime64[s]"}), from_csv)
    pd.testing.assert_frame_equal(load_expedia(str(work)).frame, load_expedia(str(FIXTURE)).frame)
    assert _make("benchmark-clean", f"BENCH_DIR={work}").returncode == 0 and not work.exists()


def test_setup_refuses_bad_or_missing_data_with_a_clear_message(tmp_path):
    proc = _make("benchmark-setup", f"BENCH_DIR={tmp_path / 'w'}")
    assert proc.returncode != 0 and "expedia-personalized-sort" in proc.stderr and "DATA=" in proc.stderr
    proc = _make("benchmark-setup", f"DATA={tmp_path / 'nothing'}", f"BENCH_DIR={tmp_path / 'w'}")
    assert proc.returncode != 0 and "train.csv not found" in proc.stderr and "kaggle" in proc.stderr.lower()
    header, rows = _fixture_lines()
    col = header.index("click_bool")
    bad = [list(r) for r in rows]
    line = next(i for i, r in enumerate(bad) if r[col + 2] == "1") + 2
    bad[line - 2][col] = "0"
    data = tmp_path / "bad"
    _write(data / "train.csv", header, bad)
    proc = _make("benchmark-setup", f"DATA={data}", f"BENCH_DIR={tmp_path / 'w'}")
    assert proc.returncode != 0
    assert f"train.csv:{line}: column 'booking_bool'" in proc.stderr and "not clicked" in proc.stderr
    assert not list((tmp_path / "w").glob("*.parquet*"))  # nothing half-written is left behind
    with pytest.raises(DataError, match="9,917,530"):
        setup_benchmark(str(FIXTURE), tmp_path / "strict", strict=True)


def test_setup_samples_whole_searches(tmp_path):
    manifest = setup_benchmark(str(FIXTURE), tmp_path, sample_fraction=0.5, seed=3)
    kept = pd.read_parquet(tmp_path / "train.parquet")
    raw = pd.DataFrame(_raw_rows())
    sizes = raw.groupby(raw["srch_id"].astype(int)).size()
    assert 0 < kept["srch_id"].nunique() < raw["srch_id"].nunique()
    assert kept.groupby("srch_id").size().to_dict() == sizes.loc[kept["srch_id"].unique()].to_dict()
    assert (manifest["parts"]["train"]["rows_read"] == len(raw)
            and manifest["parts"]["train"]["rows"] == len(kept))


def test_benchmark_train_reports_competition_ndcg_at_38(tmp_path):
    work = tmp_path / "expedia"
    assert setup_benchmark(str(FIXTURE), work)["parts"]["train"]["rows"] == 56
    proc = _make("benchmark-train", f"BENCH_DIR={work}", "BENCH_TRAIN_ARGS=--epochs 1 --batch-size 16")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "NDCG@38 per srch_id" in proc.stdout and "conversion=5" in proc.stdout
    run = work / "esmm"
    result = json.loads((run / "competition_metrics.json").read_text())
    assert result["ndcg"]["gains"] == {"click": 1.0, "conversion": 5.0} and result["ndcg"]["k"] == 38
    assert 0.0 < result["metrics"]["ndcg@38"] <= 1.0 and result["ndcg"]["groups_used"] >= 1
    spec = json.loads((run / "spec.json").read_text())
    assert not {f["name"] for f in spec["features"]} & LEAKS
    # The predictions are the run's own test rows: their CTR logloss is the one the trainer reported.
    predictions = pd.read_parquet(run / "predictions_test.parquet")
    trained = json.loads((run / "test_metrics.json").read_text())
    assert len(predictions) == trained["rows"]
    assert (M.logloss(predictions["click"], predictions["p_ctr"])
            == pytest.approx(trained["ctr_logloss"], rel=1e-5))
