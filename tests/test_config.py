"""Config precedence: defaults < --config file < RECSYS_* env < CLI flags; errors name the field."""
import dataclasses
import io
import json

import pytest

from tfrs_recsys.config import ConfigError, DeepFMConfig, RetrievalConfig
from tfrs_recsys.config_sources import build_config, config_from_args, save_config


def test_defaults_when_nothing_given():
    cfg = config_from_args("retrieval", [], environ={})
    assert cfg == RetrievalConfig()


def test_precedence_file_env_cli(tmp_path):
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps({"epochs": 5, "batch_size": 32, "embedding_dim": 16, "dropout": 0.3}))
    env = {"RECSYS_BATCH_SIZE": "64", "RECSYS_EMBEDDING_DIM": "24"}
    cfg = config_from_args("retrieval", ["--config", str(path), "--embedding-dim", "48"], environ=env)
    assert cfg.epochs == 5            # file
    assert cfg.dropout == 0.3         # file
    assert cfg.batch_size == 64       # env beats file
    assert cfg.embedding_dim == 48    # CLI beats env


def test_types_lists_and_bools():
    cfg = config_from_args("deepfm", ["--hidden-units", "32,16", "--lr", "0.01", "--skip-bad-rows"],
                           environ={"RECSYS_PROGRESS": "false"})
    assert isinstance(cfg, DeepFMConfig)
    assert cfg.hidden_units == (32, 16)
    assert cfg.learning_rate == pytest.approx(0.01)
    assert cfg.skip_bad_rows is True and cfg.progress is False


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_the_progress_bar_only_where_it_redraws():
    from tfrs_recsys.training.common import fit_verbosity

    bar, per_epoch = 1, 2  # Keras' verbose values
    assert fit_verbosity(DeepFMConfig(), _Terminal()) == bar
    assert fit_verbosity(DeepFMConfig(progress=False), _Terminal()) == per_epoch
    assert fit_verbosity(DeepFMConfig(), io.StringIO()) == per_epoch  # a pipe or a file


def test_bad_values_name_the_field():
    with pytest.raises(ConfigError, match="batch_size.*'many'"):
        config_from_args("esmm", ["--batch-size", "many"], environ={})
    with pytest.raises(ConfigError, match="RECSYS_EPOCHS"):
        build_config("esmm", environ={"RECSYS_EPOCHS": "2.5"})
    with pytest.raises(ConfigError, match="unknown model"):
        build_config("nope", environ={})


def test_a_value_out_of_range_names_where_it_was_set_and_a_mistyped_variable_is_said(tmp_path, caplog):
    with pytest.raises(ConfigError, match="^environment RECSYS_EPOCHS: field 'epochs' = -2"):
        build_config("esmm", environ={"RECSYS_EPOCHS": "-2"})
    path = tmp_path / "cfg.yaml"
    path.write_text("epochs: -3\n")
    with pytest.raises(ConfigError, match=f"^--config {path}: field 'epochs' = -3"):
        build_config("esmm", environ={}, config_file=path)
    with pytest.raises(ConfigError, match="^field 'epochs' = 0"):  # a flag: the message names it already
        config_from_args("esmm", ["--epochs", "0"], environ={})
    build_config("deepfm", environ={"RECSYS_EPOCHZ": "2", "RECSYS_NUM_HEADS": "2", "RECSYS_STORE": "x"})
    said = [r.getMessage() for r in caplog.records if "is not an option" in r.getMessage()]
    assert said == ["environment RECSYS_EPOCHZ is not an option of any model and is ignored (did you mean "
                    "RECSYS_EPOCHS?)"]  # another model's option and the serving side's are known


def test_config_file_unknown_field_and_yaml(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"epoch": 3}))
    with pytest.raises(ConfigError, match="unknown field 'epoch'"):
        build_config("retrieval", environ={}, config_file=bad)
    yml = tmp_path / "cfg.yaml"
    yml.write_text("epochs: 7\neval_ks: [5, 20]\n")
    assert build_config("retrieval", environ={}, config_file=yml).eval_ks == (5, 20)


def test_saved_config_reproduces_the_run(tmp_path):
    cfg = config_from_args("esmm", ["--epochs", "3", "--tower-units", "8,4"], environ={})
    save_config(cfg, tmp_path / "config.json", "esmm")
    again = build_config("esmm", environ={}, config_file=tmp_path / "config.json")
    assert again == cfg


@pytest.mark.parametrize("model,argv,message", [
    ("esmm", ["--epochs", "0"], "field 'epochs' = 0 must be >= 1; e.g. --epochs 1"),
    ("esmm", ["--precision", "fp8"], "field 'precision' = 'fp8' is not one of .*; e.g. --precision auto"),
    ("deepfm", ["--embedding-dim", "0"], "field 'embedding_dim' = 0 must be >= 1"),
    ("retrieval", ["--training-mode", "windows"], "field 'training_mode' = 'windows' is not one of"),
    ("retrieval", ["--window-stride", "99", "--max-history", "8"], "field 'window_stride' = 99 must be <="),
    ("retrieval", ["--inverse-temperature", "200"], "field 'inverse_temperature' = 200.0 must be in"),
    ("retrieval", ["--pairwise-sampling", "hard"], "field 'pairwise_sampling' = 'hard'.*--pairwise-sampling"),
    ("retrieval", ["--use-transformer", "false", "--use-user-id", "false", "--use-user-features", "false"],
     "query tower nothing to read.*use_user_id=true"),
    ("deepfm", ["--dropout", "2"], r"field 'dropout' = 2.0 must be in \[0, 1\)"),
    ("deepfm", ["--hidden-units", "0"], r"field 'hidden_units' = \(0,\) needs layer widths >= 1"),
    ("esmm", ["--learning-rate", "-1"], "field 'learning_rate' = -1.0 must be > 0"),
    ("retrieval", ["--num-heads", "0"], "field 'num_heads' = 0 must be >= 1"),
    ("retrieval", ["--validation-fraction", "1.5"], "field 'validation_fraction' = 1.5 must be in"),
])
def test_each_config_checks_its_own_fields_where_it_is_built(tmp_path, model, argv, message):
    with pytest.raises(ConfigError, match=message):
        config_from_args(model, argv, environ={})
    path = tmp_path / "cfg.json"
    fields = {flag[2:].replace("-", "_"): value for flag, value in zip(argv[::2], argv[1::2])}
    path.write_text(json.dumps(fields))
    with pytest.raises(ConfigError, match=message):  # a config file is checked the same way
        build_config(model, environ={}, config_file=path)


@pytest.mark.parametrize("model", ["retrieval", "esmm", "deepfm"])
def test_every_option_has_a_help_sentence(model, capsys):
    from tfrs_recsys.config import MODEL_CONFIGS
    from tfrs_recsys.config_sources import field_help

    helps = field_help(MODEL_CONFIGS[model])
    missing = [f.name for f in dataclasses.fields(MODEL_CONFIGS[model]) if len(helps.get(f.name, "")) < 10]
    assert not missing, f"fields without an Attributes: entry: {missing}"
    with pytest.raises(SystemExit):
        config_from_args(model, ["--help"])
    assert "The width of item, user and query embeddings" in capsys.readouterr().out or model != "retrieval"


@pytest.mark.parametrize("model, argv, flag", [
    ("retrieval", ["--user-column", "uid"], "user_column"),  # synthetic data has no columns to name
    ("retrieval", ["--dataset", "movielens-100k", "--data-dir", "x", "--synthetic-users", "50"],
     "synthetic_users"),
    ("esmm", ["--synthetic-users", "50"], "synthetic_users"),
    ("deepfm", ["--dataset", "csv", "--data-dir", "x", "--label-columns", "y", "--synthetic-rows", "9"],
     "synthetic_rows"),
    ("retrieval", ["--dataset", "interactions", "--data", "x", "--user-column", "u", "--item-column", "i",
                   "--label-columns", "y"], "label_columns"),
    ("retrieval", ["--data-dir", "x"], "data_dir"),
])
def test_an_option_the_dataset_does_not_read_is_an_error(model, argv, flag):
    with pytest.raises(ConfigError, match=f"--{flag.replace('_', '-')} .* applies to .*not to --dataset"):
        config_from_args(model, argv, environ={})


def test_files_given_without_their_dataset_are_told_which_to_name():
    with pytest.raises(ConfigError, match=r"--data alone does not choose one.*e\.g\. --dataset csv"):
        config_from_args("esmm", ["--data", "log.csv", "--label-columns", "click,buy"], environ={})
    with pytest.raises(ConfigError, match=r"e\.g\. --dataset interactions"):
        config_from_args("retrieval", ["--data", "log.csv", "--user-column", "u"], environ={})


def test_a_mistyped_flag_is_answered_with_the_flag_meant(capsys):
    with pytest.raises(SystemExit):
        config_from_args("esmm", ["--lable-columns", "a,b", "--foo"], environ={})
    said = capsys.readouterr().err
    assert "--lable-columns: did you mean --label-columns?" in said and "--foo:" not in said


def test_an_unknown_dataset_is_named_before_its_options():
    from tfrs_recsys.config import DATASETS
    from tfrs_recsys.data.registry import INTERACTION_DATASETS, LABELED_DATASETS

    with pytest.raises(ConfigError, match="'interaction' is not a dataset name; choose one of"):
        config_from_args("retrieval", ["--dataset", "interaction", "--user-column", "u"], environ={})
    names = {*INTERACTION_DATASETS, *LABELED_DATASETS}
    listed = {name.split(":")[0] + ":" if ":" in name else name for name in names}
    assert listed <= set(DATASETS)  # every name the registry describes passes the config's check


def test_options_the_dataset_reads_are_accepted():
    argv = ["--dataset", "interactions", "--data", "log.csv", "--user-column", "u", "--item-column", "i",
            "--time-column", "t", "--min-rating", "4", "--rating-column", "r"]
    cfg = config_from_args("retrieval", argv, environ={})
    assert (cfg.data_dir, cfg.time_column, cfg.min_rating) == ("log.csv", "t", 4.0)
    assert config_from_args("deepfm", ["--synthetic-rows", "900"], environ={}).synthetic_rows == 900
