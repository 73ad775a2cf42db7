"""keras-tuner over the tf-keras models: real trials on tiny synthetic data, the CLI, best_config.json."""
import json
import math

import pytest

import tfrs_recsys  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
from tfrs_recsys.config import ConfigError
from tfrs_recsys.config_sources import build_config, config_from_args
from tfrs_recsys.runs import read_train_log
from tfrs_recsys.train import main as train_main
from tfrs_recsys.tune import main as tune_main
from tfrs_recsys.tuning.spaces import DEFAULT_SPACES, declare, trial_config, validate_space

TINY = {
    "retrieval": ["--synthetic-users", "150", "--synthetic-items", "80", "--max-history", "20", "--epochs",
                  "2"],
    "esmm": ["--synthetic-sessions", "300", "--session-size", "10", "--epochs", "3"],
    "deepfm": ["--synthetic-rows", "6000", "--epochs", "2"],
}


def _trials(out):
    return [json.loads(line) for line in (out / "trials.jsonl").read_text().splitlines()]


def _tune(model, out, *extra):
    return tune_main([model, "--output-dir", str(out), "--progress", "false", *TINY[model], *extra])


def test_search_space_errors_name_the_field_and_the_fix():
    with pytest.raises(ConfigError, match="'embeding_dim' is not a field of the deepfm config"):
        validate_space("deepfm", {"embeding_dim": [8, 16]})
    with pytest.raises(ConfigError, match="'synthetic_rows' changes the data.*--synthetic-rows"):
        validate_space("deepfm", {"synthetic_rows": [100, 200]})
    with pytest.raises(ConfigError, match="'embedding_dim' = 'big' is not a valid int"):
        validate_space("deepfm", {"embedding_dim": [8, "big"]})
    with pytest.raises(ConfigError, match="min 0.5 > max 0.1"):
        validate_space("esmm", {"dropout": {"min": 0.5, "max": 0.1}})
    with pytest.raises(ConfigError, match="log sampling needs min > 0"):
        validate_space("esmm", {"l2_reg": {"min": 0.0, "max": 1e-4, "sampling": "log"}})
    with pytest.raises(ConfigError, match="hidden_units.*not numeric"):
        validate_space("esmm", {"hidden_units": {"min": 1, "max": 2}})


def test_spaces_become_keras_tuner_hyperparameters_of_the_field_types():
    for model, space in DEFAULT_SPACES.items():
        hp = declare(model, space)
        assert set(hp.values) == set(space)
    hp = declare("retrieval",
                 {"num_blocks": {"min": 1, "max": 3}, "dropout": {"min": 0.0, "max": 0.4, "step": 0.1},
                               "embedding_dim": [32, 64], "use_user_id": {"value": False}})
    kinds = {p.name: type(p).__name__ for p in hp.space}
    assert kinds == {"num_blocks": "Int", "dropout": "Float", "embedding_dim": "Choice",
                     "use_user_id": "Fixed"}
    base = build_config("esmm", {"epochs": 4}, environ={})
    cfg = trial_config("esmm", base,
                       {"hidden_units": "64,32", "dropout": 0.30000000000000004, "tuner/epochs": 9})
    assert cfg.hidden_units == (64, 32) and cfg.dropout == 0.3 and cfg.epochs == 4


@pytest.mark.parametrize("model,algorithm", [("retrieval", "bayesian"), ("esmm", "hyperband")])
def test_tuning_writes_a_best_config_that_train_accepts(tmp_path, capfd, model, algorithm):
    out = tmp_path / "tune"
    assert _tune(model, out, "--max-trials", "2", "--algorithm", algorithm) == 0
    printed = capfd.readouterr()
    trials = _trials(out)
    assert len(trials) == 2 and all(t["status"] == "COMPLETED" for t in trials)
    objective = {"retrieval": "val_ndcg@10", "esmm": "val_ctcvr_auc"}[model]
    for t in trials:
        assert t["objective"] == objective and t["score"] == t["validation"][objective]
        assert 0.0 < t["score"] <= 1.0 and not t["diverged"]
        assert (out / "trials" / t["trial_id"] / "config.json").is_file()
        if model == "retrieval":  # the saved model's validation, the averaged weights' where it averages
            meta = json.loads((out / "trials" / t["trial_id"] / "retrieval_meta.json").read_text())
            assert t["score"] == pytest.approx(meta["saved_validation"]["ndcg@10"])
    best = max(trials, key=lambda t: t["score"])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["best_trial"] == best["trial"] and summary["score"] == pytest.approx(best["score"])
    assert summary["best_trial_dir"] == str(out / "trials" / best["trial_id"])
    # the log names trials by the numbers the summary uses, with no terminal control codes
    assert f"tune: trial {best['trial']} completed" in printed.out and "\x1b" not in printed.out + printed.err

    # train's own loader
    cfg = config_from_args(model, ["--config", str(out / "best_config.json")], environ={})
    loaded = json.loads((out / "best_config.json").read_text())
    assert loaded["model"] == model and cfg.output_dir is None
    for name, value in best["hyperparameters"].items():
        got = getattr(cfg, name)
        assert (list(got) if isinstance(got, tuple) else got) == value, name
    assert set(best["hyperparameters"]) == set(DEFAULT_SPACES[model])
    if algorithm == "hyperband":  # the best trial's epoch budget is part of what reproduces it
        assert cfg.epochs == best["hyperband"]["epochs"] >= best["epochs_run"]
    else:
        assert cfg.epochs == 2
    if model == "retrieval":  # the fixed flags carry over
        assert cfg.synthetic_users == 150 and cfg.max_history == 20
    else:
        assert cfg.synthetic_sessions == 300 and cfg.session_size == 10


def test_an_absurd_learning_rate_is_never_picked_and_a_search_resumes(tmp_path):
    """Two candidate learning rates, one that wrecks the model: the search must keep the other.

    The space has exactly two points, so the oracle tries both and then stops (deterministic,
    whatever its seed draws first); the first call runs one trial, ``--resume`` the other.
    """
    space = tmp_path / "space.json"
    space.write_text(json.dumps({"learning_rate": {"values": [0.003, 10000.0]}}))
    out = tmp_path / "tune"
    assert _tune("deepfm", out, "--max-trials", "1", "--search-space", str(space)) == 0
    assert len(_trials(out)) == 1
    assert _tune("deepfm", out, "--max-trials", "3", "--search-space", str(space), "--resume") == 0
    trials = {t["hyperparameters"]["learning_rate"]: t for t in _trials(out)}
    assert set(trials) == {0.003, 10000.0}
    sane, absurd = trials[0.003]["score"], trials[10000.0]["score"]
    assert math.isfinite(sane) and sane > 0.6
    assert absurd < sane - 0.05
    assert (config_from_args("deepfm", ["--config", str(out / "best_config.json")], environ={}).learning_rate
            == 0.003)
    assert json.loads((out / "summary.json").read_text())["trials"] == 2
    assert _tune("deepfm", out, "--max-trials", "1", "--search-space", str(space)) == 2  # not wiped unasked
    assert len(_trials(out)) == 2

    # `train --config best_config.json` is the winning trial again: same data, seed and early stopping.
    retrain = tmp_path / "retrain"
    assert (train_main(["deepfm", "--config", str(out / "best_config.json"), "--output-dir", str(retrain)])
            == 0)
    best_val = max(row["val_auc"] for row in read_train_log(retrain))
    assert best_val == pytest.approx(sane, abs=2e-3)


def test_failed_trials_are_logged_with_their_error(tmp_path, capsys):
    space = tmp_path / "space.json"  # 32 is not divisible by 3 heads: the training code refuses the config
    space.write_text(json.dumps({"embedding_dim": [32], "num_heads": [3]}))
    assert _tune("retrieval", tmp_path / "t", "--max-trials", "2", "--search-space", str(space)) == 1
    assert "no trial of the search" in capsys.readouterr().err
    (failed,) = _trials(tmp_path / "t")
    assert failed["status"] == "FAILED" and failed["score"] is None
    assert "divisible by num_heads" in failed["error"]


def test_cli_reports_bad_options_as_errors(tmp_path, capsys):
    space = tmp_path / "space.json"
    space.write_text(json.dumps({"epochs": [1, 2]}))
    code = _tune("deepfm", tmp_path / "t", "--max-trials", "1", "--algorithm", "hyperband", "--search-space",
                 str(space))
    assert code == 2 and "Hyperband's to choose" in capsys.readouterr().err
    assert _tune("deepfm", tmp_path / "t", "--max-trials", "0") == 2
    assert "--max-trials must be >= 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        tune_main(["deepfm", "--max-trials", "1"])  # no --output-dir
    assert "--output-dir is required" in capsys.readouterr().err


def test_tuning_refuses_labels_the_ranker_cannot_learn_before_any_trial(tmp_path, capsys):
    data = tmp_path / "ratings.csv"
    data.write_text("user_id,item_id,rating\n"
                    + "".join(f"u{i % 7},i{i % 11},{i % 5 + 1}\n" for i in range(60)))
    code = tune_main(["deepfm", "--output-dir", str(tmp_path / "t"), "--progress", "false", "--max-trials",
                      "1", "--dataset", "csv", "--data-dir", str(data), "--label-columns", "rating"])
    err = capsys.readouterr().err
    assert code == 2 and "label must be 0 or 1" in err and "rating" in err
    assert not (tmp_path / "t" / "trials.jsonl").exists()
