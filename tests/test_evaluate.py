"""The predictions-file evaluator on hand-made predictions whose metrics are known by construction."""
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from side_by_side import run_side_by_side

from tfrs_recsys.data.errors import DataError
from tfrs_recsys.evaluate import evaluate_predictions, parse_gains
from tfrs_recsys.predictions import read_predictions

REPO = Path(__file__).resolve().parents[1]
ESMM_COLUMNS = dict(click_label="click", click_score="p_ctr", conversion_label="conversion",
                    conversion_score="p_cvr")


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "tfrs_recsys.evaluate", *args]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(_command(*args), cwd=REPO, capture_output=True, text=True, timeout=120)


def _users() -> pd.DataFrame:
    """User a: 2 clicks ranked above 2 non-clicks (AUC 1); user b: its click ranked below both non-clicks
    (AUC 0); user c: no click at all (one class: skipped). GAUC = (4 * 1 + 3 * 0) / 7."""
    return pd.DataFrame({
        "user_id": ["a"] * 4 + ["b"] * 3 + ["c"] * 2,
        "click":   [1, 1, 0, 0, 1, 0, 0, 0, 0],
        "p_ctr":   [0.9, 0.8, 0.2, 0.1, 0.1, 0.5, 0.6, 0.3, 0.4],
    })


def test_perfect_scores_give_auc_one_and_reversed_give_zero():
    frame = pd.DataFrame({"click": [0, 1, 0, 1, 1, 0], "p_ctr": [0.1, 0.9, 0.3, 0.7, 0.8, 0.2]})
    perfect = evaluate_predictions(frame, click_label="click", click_score="p_ctr")
    assert perfect["tasks"]["ctr"]["auc"] == 1.0
    assert perfect["tasks"]["ctr"]["rows"] == 6 and perfect["tasks"]["ctr"]["positives"] == 3
    reversed_ = evaluate_predictions(frame.assign(p_ctr=1 - frame["p_ctr"]), click_label="click",
                                     click_score="p_ctr")
    assert reversed_["tasks"]["ctr"]["auc"] == 0.0
    assert "gauc" not in perfect["tasks"]["ctr"]  # no --group-by, no GAUC


def test_gauc_skips_and_counts_one_class_groups():
    result = evaluate_predictions(_users(), click_label="click", click_score="p_ctr", group_by="user_id")
    ctr = result["tasks"]["ctr"]
    assert ctr["gauc"] == pytest.approx(4 / 7)
    assert (ctr["groups_used"], ctr["groups_skipped"]) == (2, 1)
    assert result["metrics"]["ctr_gauc"] == pytest.approx(4 / 7)


def test_cvr_is_measured_on_clicked_rows_only_and_ctcvr_on_click_times_conversion():
    # Clicked rows: p_cvr ranks the conversions first (AUC 1). Unclicked row 4 has the highest p_cvr
    # of all: counted in CVR it would pull the AUC below 1. Row 5 converts without a click: as a CTCVR
    # positive its tiny p_ctr * p_cvr would pull the CTCVR AUC below 1.
    frame = pd.DataFrame({
        "click":      [1, 1, 1, 1, 0, 0],
        "conversion": [1, 0, 1, 0, 0, 1],
        "p_ctr":      [0.9, 0.8, 0.7, 0.6, 0.2, 0.05],
        "p_cvr":      [0.6, 0.2, 0.5, 0.1, 0.99, 0.2],
    })
    result = evaluate_predictions(frame, **ESMM_COLUMNS)
    cvr, ctcvr = result["tasks"]["cvr"], result["tasks"]["ctcvr"]
    assert (cvr["rows"], cvr["positives"], cvr["auc"]) == (4, 2, 1.0)
    assert (ctcvr["rows"], ctcvr["positives"], ctcvr["auc"]) == (6, 2, 1.0)
    assert any("1 row(s) have conversion = 1 without a click" in note for note in result["notes"])


def test_explicit_ctcvr_score_is_used_instead_of_the_product():
    frame = pd.DataFrame({"click": [1, 1, 0, 0], "conversion": [1, 0, 0, 0], "p_ctr": [0.9, 0.8, 0.2, 0.1],
                          "p_cvr": [0.9, 0.1, 0.1, 0.1], "p_ctcvr": [0.01, 0.5, 0.6, 0.7]})
    assert evaluate_predictions(frame, **ESMM_COLUMNS)["tasks"]["ctcvr"]["auc"] == 1.0
    assert evaluate_predictions(frame, **ESMM_COLUMNS, ctcvr_score="p_ctcvr")["tasks"]["ctcvr"]["auc"] == 0.0


def _search() -> pd.DataFrame:
    """Search 1: hotel a booked, b clicked, c neither; search 2: nothing clicked (no gain: skipped)."""
    return pd.DataFrame({
        "srch_id": [1, 1, 1, 2, 2],
        "click": [1, 1, 0, 0, 0],
        "conversion": [1, 0, 0, 0, 0],
        "score": [0.5, 0.9, 0.1, 0.3, 0.2],  # ranks b, a, c
        "p_ctr": [0.5, 0.9, 0.1, 0.3, 0.2],
        "p_cvr": [0.5, 0.1, 0.1, 0.1, 0.1],
    })


def test_ndcg_with_expedia_gains_matches_the_hand_computed_value():
    result = evaluate_predictions(_search(), **ESMM_COLUMNS, ndcg_k=38, gains={"conversion": 5, "click": 1},
                                  ndcg_group_by="srch_id", ndcg_score="score")
    dcg = (2 ** 1 - 1) / math.log2(2) + (2 ** 5 - 1) / math.log2(3)  # b (click) first, a (booking) second
    ideal = (2 ** 5 - 1) / math.log2(2) + (2 ** 1 - 1) / math.log2(3)
    ndcg = result["ndcg"]
    assert ndcg["value"] == pytest.approx(dcg / ideal)
    assert (ndcg["groups_used"], ndcg["groups_skipped"]) == (1, 1)
    assert result["metrics"]["ndcg@38"] == pytest.approx(dcg / ideal)
    at_one = evaluate_predictions(_search(), **ESMM_COLUMNS, ndcg_k=1, gains={"conversion": 5, "click": 1},
                                  ndcg_group_by="srch_id", ndcg_score="score")
    assert at_one["ndcg"]["value"] == pytest.approx(1 / 31)


def test_default_ranking_is_the_expected_gain_of_the_probabilities():
    # a: p_ctr .9, p_cvr .01 -> E = 1 * (.9 - .009) + 31 * .009 = 1.17 (clicked, not booked)
    # b: p_ctr .3, p_cvr .5  -> E = 1 * (.3 - .15) + 31 * .15   = 4.80 (booked)
    frame = pd.DataFrame({"srch_id": [7, 7], "click": [1, 1], "conversion": [0, 1], "p_ctr": [0.9, 0.3],
                          "p_cvr": [0.01, 0.5]})
    gains = {"conversion": 5, "click": 1}
    by_gain = evaluate_predictions(frame, **ESMM_COLUMNS, ndcg_k=38, gains=gains, ndcg_group_by="srch_id")
    assert by_gain["ndcg"]["value"] == pytest.approx(1.0)
    by_ctr = evaluate_predictions(frame, **ESMM_COLUMNS, ndcg_k=38, gains=gains, ndcg_group_by="srch_id",
                                  ndcg_score="p_ctr")
    assert by_ctr["ndcg"]["value"] < 0.8


def test_parse_gains_accepts_roles_aliases_and_label_names():
    assert parse_gains("booking=5,click=1", click_label="click", conversion_label="conversion") == \
        {"conversion": 5.0, "click": 1.0}
    assert parse_gains("booking_bool=5,click_bool=1", click_label="click_bool",
                       conversion_label="booking_bool") == {"conversion": 5.0, "click": 1.0}
    with pytest.raises(DataError, match="known label"):
        parse_gains("views=3", click_label="click", conversion_label="conversion")
    with pytest.raises(DataError, match="not a number"):
        parse_gains("click=high", click_label="click", conversion_label=None)
    with pytest.raises(DataError, match="conversion label"):
        parse_gains("booking=5", click_label="click", conversion_label=None)


def test_bad_inputs_fail_naming_the_column():
    frame = _users()
    with pytest.raises(DataError, match="'p_click'"):
        evaluate_predictions(frame, click_label="click", click_score="p_click")
    with pytest.raises(DataError, match="column 'click'.*0 or 1"):
        evaluate_predictions(frame.assign(click=frame["click"] * 2), click_label="click", click_score="p_ctr")
    with pytest.raises(DataError, match="column 'p_ctr'.*at row 3"):
        evaluate_predictions(frame.assign(p_ctr=[0.1, 0.2, np.nan] + [0.5] * 6), click_label="click",
                             click_score="p_ctr")
    # rows of no user are one group, as training counts them, and said
    pooled = evaluate_predictions(frame.assign(user_id=[None, ""] + list(frame["user_id"][2:])),
                                  click_label="click", click_score="p_ctr", group_by="user_id")
    same = evaluate_predictions(frame.assign(user_id=["?", "?"] + list(frame["user_id"][2:])),
                                click_label="click", click_score="p_ctr", group_by="user_id")
    assert pooled["metrics"] == same["metrics"] and "2 row(s) have no user_id value" in pooled["notes"][0]
    logits = pd.DataFrame({"click": [1, 0], "conversion": [1, 0], "p_ctr": [2.5, -1.0], "p_cvr": [0.5, 0.5]})
    with pytest.raises(DataError, match="column 'p_ctr'.*probabilities"):
        evaluate_predictions(logits, **ESMM_COLUMNS)


def test_cli_reads_csv_and_parquet_and_writes_json(tmp_path):
    frame = _users().assign(conversion=[1, 0, 0, 0, 1, 0, 0, 0, 0],
                            p_cvr=[0.9, 0.1, 0.5, 0.5, 0.3, 0.5, 0.5, 0.5, 0.5])
    csv_path, parquet_path = tmp_path / "preds.csv", tmp_path / "preds.parquet"
    frame.to_csv(csv_path, index=False)
    frame.to_parquet(parquet_path, index=False)
    for path in (csv_path, parquet_path):
        out = tmp_path / f"{path.suffix[1:]}.json"
        proc = _run("--predictions", str(path), "--group-by", "user_id", "--click-label", "click",
                    "--click-score", "p_ctr", "--conversion-label", "conversion", "--conversion-score",
                    "p_cvr", "--ndcg-k", "38", "--gains", "booking=5,click=1", "--json", str(out))
        assert proc.returncode == 0, proc.stderr
        assert ("ctr" in proc.stdout and "groups skipped" in proc.stdout
                and "NDCG@38 per user_id" in proc.stdout)
        result = json.loads(out.read_text())
        assert result["tasks"]["ctr"]["gauc"] == pytest.approx(4 / 7)
        assert result["tasks"]["ctr"]["groups_skipped"] == 1
        # clicked rows: a1 (conv, .9), a2 (.1), b1 (conv, .3): AUC 1
        assert result["tasks"]["cvr"]["rows"] == 3 and result["tasks"]["cvr"]["auc"] == 1.0


def test_cli_errors_name_the_file_line_and_column(tmp_path):
    path = tmp_path / "preds.csv"
    path.write_text("user_id,click,p_ctr\na,1,0.9\na,0,high\n")
    proc = _run("--predictions", str(path), "--click-score", "p_ctr")
    assert proc.returncode == 2
    assert f"{path}:3" in proc.stderr and "'p_ctr'" in proc.stderr
    assert "--skip-bad-rows" not in proc.stderr  # not an option of evaluate
    proc = _run("--predictions", str(path), "--click-score", "p_click")
    assert proc.returncode == 2 and "p_click" in proc.stderr and "--click-score" in proc.stderr
    path.write_text("user_id,click,p_ctr\na,1,0.9\na,0,0.1\nb,2,0.5\n")
    proc = _run("--predictions", str(path), "--click-score", "p_ctr")
    assert proc.returncode == 2 and "found 2 at line 4" in proc.stderr  # the file's line, header included
    parquet = tmp_path / "preds.parquet"
    pd.DataFrame({"click": [1, 0], "p_ctr": ["0.9", "n/a"]}).to_parquet(parquet)
    with pytest.raises(DataError, match="column 'p_ctr'.*'n/a'"):
        read_predictions(str(parquet), numeric=["click", "p_ctr"])


def test_a_retrieval_run_is_ranked_again_as_its_training_ranked_it(tmp_path):
    """The run's split is rebuilt from its config: the test part gives its test_metrics.json back, the
    validation part other figures; ranker-only flags are refused by name."""
    run = tmp_path / "run"
    train = subprocess.run(
        [sys.executable, "-m", "tfrs_recsys.train", "retrieval", "--synthetic-users", "150",
         "--synthetic-items", "80", "--epochs", "2", "--max-history", "8", "--embedding-dim", "16",
         "--num-blocks", "1", "--ff-dim", "16", "--progress", "false", "--output-dir", str(run)],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    assert train.returncode == 0, train.stderr[-3000:]
    # four independent evaluations, started together (each spends seconds loading TensorFlow)
    proc, validation, refused, onto_folder = run_side_by_side([
        _command("--run-dir", str(run), "--json", str(tmp_path / "test.json")),
        _command("--run-dir", str(run), "--part", "validation", "--json", str(tmp_path / "val.json")),
        _command("--run-dir", str(run), "--ndcg-k", "5"),
        _command("--run-dir", str(run), "--json", str(tmp_path)),
    ], timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    saved = json.loads((run / "test_metrics.json").read_text())
    again = json.loads((tmp_path / "test.json").read_text())
    assert {"ndcg@10", "recall@10", "mrr@10"} <= set(again)
    assert again == pytest.approx({k: saved[k] for k in again}, abs=1e-9)
    assert "ndcg@10" in proc.stdout
    assert validation.returncode == 0, validation.stderr[-3000:]
    assert json.loads((tmp_path / "val.json").read_text()) != again
    assert refused.returncode == 2 and "--ndcg-k: only for ranker predictions" in refused.stderr
    assert onto_folder.returncode == 2 and "is a directory" in onto_folder.stderr
