"""Files as shops export them: Windows-1252 text, quoted newlines, rows written twice, time columns named in
another language; and what a ranker's run says of its batch and of a result too good to be true."""
import dataclasses
import json
import logging

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from tfrs_recsys.config import DeepFMConfig, ESMMConfig
from tfrs_recsys.data import streaming
from tfrs_recsys.data.errors import DataError
from tfrs_recsys.data.interactions import load_interaction_log
from tfrs_recsys.data.schema import FeatureColumn, FeatureSpec
from tfrs_recsys.data.schema_inference import infer_schema
from tfrs_recsys.data.tabular import load_table, locate, read_table
from tfrs_recsys.training.common import FEW_STEPS, EpochEvaluator, ranker_batch
from tfrs_recsys.training.fit_advice import leak_warning, memorizing_advice

HEADER = "Kunde\tArtikel\tBezeichnung\tPreis\tZeitpunkt\tgekauft"


def _rows(n: int) -> list[str]:
    return [f"k{i % 7}\t{i % 13:05d}\tCafé crème ’{i}\t1,29 €\t{1 + i % 28:02d}.12.2026 14:03\t{i % 2}"
            for i in range(n)]


def test_a_windows_1252_export_is_read_as_such_and_said(tmp_path, caplog):
    path = tmp_path / "kassen.tsv"
    path.write_bytes(("\n".join([HEADER, *_rows(40)]) + "\n").encode("cp1252"))
    with caplog.at_level(logging.WARNING):
        table, _ = read_table(str(path))
    assert table["Bezeichnung"][3] == "Café crème ’3" and table["Preis"][0] == "1,29 €"
    assert table["Artikel"][1] == "00001"  # ids keep their leading zeros
    said = [r.getMessage() for r in caplog.records if "not UTF-8" in r.getMessage()]
    assert len(said) == 1 and "cp1252" in said[0] and "line 2" in said[0] and "0xe9" in said[0]
    batches = list(streaming.record_batches(str(path), None, 100))  # the streamed reader decodes it alike
    assert batches[0].column("Bezeichnung")[3].as_py() == "Café crème ’3"


def test_utf8_with_a_broken_byte_stays_utf8_and_names_the_line(tmp_path):
    text = ("\n".join([HEADER, *_rows(12)]) + "\n").encode("utf-8")
    path = tmp_path / "kassen.tsv"
    path.write_bytes(text.replace("Café crème ’5".encode(), b"Caf\xe9 5"))
    with pytest.raises(DataError) as error:
        read_table(str(path))
    assert error.value.line == 7 and "not valid utf-8" in str(error.value)
    table, reports = read_table(str(path), skip_bad_rows=True)
    assert len(table) == 11 and table["Bezeichnung"][0] == "Café crème ’0"  # the others read as UTF-8
    assert reports[0].reasons == {"not valid utf-8": 1}


def test_a_file_no_encoding_reads_says_why_when_every_row_is_skipped(tmp_path):
    path = tmp_path / "kassen.tsv"  # 0x81 is neither UTF-8 nor cp1252
    path.write_bytes(("a\tb\n" + "x\x81\t1\n" * 5).encode("latin-1"))
    with pytest.raises(DataError) as error:
        read_table(str(path), skip_bad_rows=True)
    message = str(error.value)
    assert "5 skipped as bad: 5 x not valid utf-8" in message and "re-save the file as utf-8" in message


def test_a_quoted_newline_does_not_shift_the_line_an_error_names(tmp_path):
    rows = ["user,item,name,clicked"] + [f'u{i},i{i},"first line\nsecond line {i}",1' for i in range(5)]
    path = tmp_path / "log.csv"
    path.write_text("\n".join([*rows, "u9,,Total,0"]) + "\n")
    table, _ = read_table(str(path))
    assert table["name"][2] == "first line\nsecond line 2"
    assert locate(table, 0) == (str(path), 2) and locate(table, 5) == (str(path), 12)
    with pytest.raises(DataError) as error:
        load_table(str(path), labels=["clicked"], item_column="item")
    assert error.value.line == 12 and lines_of(path)[11] == "u9,,Total,0"


def lines_of(path) -> list[str]:
    return path.read_text().split("\n")


def test_rows_written_twice_at_one_time_are_said_and_kept(tmp_path, caplog):
    rows = [f"u{i % 5},i{i % 9},2026-12-0{1 + i % 7} 10:00:{i:02d}" for i in range(40)]
    timed = tmp_path / "timed.csv"
    timed.write_text("\n".join(["user,item,ts", *rows, *rows[:6]]) + "\n")
    untimed = tmp_path / "untimed.csv"
    untimed.write_text("\n".join(["user,item", *(r.rsplit(",", 1)[0] for r in rows + rows[:6])]) + "\n")
    with caplog.at_level(logging.WARNING):
        log = load_interaction_log(str(timed), user_column="user", item_column="item", time_column="ts")
        said = [r.getMessage() for r in caplog.records if "repeat an earlier row" in r.getMessage()]
        assert len(log.interactions) == 46 and len(said) == 1 and "6 of 46 rows" in said[0]
        caplog.clear()  # without times, a repeated row is a repeated event
        load_interaction_log(str(untimed), user_column="user", item_column="item")
        assert not [r for r in caplog.records if "repeat an earlier row" in r.getMessage()]


def test_date_columns_named_in_german_or_japanese_are_timestamps(tmp_path):
    frame = pd.DataFrame({"Kaufdatum": [f"{1 + i % 28:02d}.12.2026" for i in range(60)],
                          "Zeitpunkt": [f"{1 + i % 28:02d}.11.2026 14:{i % 60:02d}" for i in range(60)],
                          "登録日": [f"2026/10/{1 + i % 28:02d}" for i in range(60)],
                          "表示日時": [f"2026/12/07 14:{i % 60:02d}" for i in range(60)],
                          "Filiale": [f"s{i % 3}" for i in range(60)], "gekauft": np.arange(60) % 2})
    spec = infer_schema(frame, ["gekauft"])
    assert [spec[c].kind for c in ("Kaufdatum", "Zeitpunkt", "登録日", "表示日時")] == ["timestamp"] * 4
    assert spec["Filiale"].kind == "categorical"


@pytest.mark.parametrize("encoding, text", [
    ("cp932", "会員ID,商品名\n" + "".join(f"M{i:03d},スポーツ用品・シューズ{i}\n" for i in range(50))),
    ("gbk", "用户,商品\n" + "".join(f"u{i},商品{i}\n" for i in range(50))),
    ("cp949", "사용자,상품\n" + "".join(f"u{i},상품 이름 {i}\n" for i in range(50)))])
def test_a_shift_jis_gbk_or_korean_file_is_named_as_such_in_the_fix(tmp_path, encoding, text):
    path = tmp_path / "注文.csv"  # Japanese text holds byte pairs that also read as UTF-8 ones
    path.write_bytes(text.encode(encoding))
    with pytest.raises(DataError) as error:
        read_table(str(path))
    assert f"{encoding} (iconv -f {encoding.upper()} -t UTF-8 in > out)" in error.value.fix


@pytest.mark.parametrize("header, values", [
    ("id_lecteur;ville;âge", ("Besançon", "Nîmes", "Orléans")),  # an accent and the letter after it: a hanzi
    ("id;categoria;Informação", ("Ações", "Nutrição", "Coração")),  # two accents in a row: a common pair
    ("id;Größe;Farbe", ("mäßig", "Straße", "weiß")),
    ("id;title;note", ("Don’t", "It’s", "O’Brien’s cœur"))])  # ’ and œ lead Shift-JIS characters
def test_a_western_windows_1252_table_is_not_taken_for_east_asian(tmp_path, header, values):
    path = tmp_path / "table.csv"
    path.write_bytes((header + "\n" + "".join(f"L{i:04d};{values[i % 3]};{20 + i}\n" for i in range(30)))
                     .encode("cp1252"))
    frame, _ = read_table(str(path))
    assert list(frame.columns) == header.split(";") and frame.iloc[0, 1] == values[0]


@pytest.mark.parametrize("rows, batch", [(100, 64), (24_000, 64), (25_600, 128), (60_000, 256),
                                         (102_400, 512), (5_000_000, 512)])
def test_a_rankers_batch_follows_its_training_rows(rows, batch):
    for config in (DeepFMConfig, ESMMConfig):
        assert ranker_batch(config(), rows) == batch
        assert ranker_batch(config(batch_size=1000), rows) == 1000  # a batch given is the batch
    if batch > 64:  # it makes FEW_STEPS steps an epoch, and below 512 twice it would not
        assert rows // batch >= FEW_STEPS and (batch == 512 or rows // (2 * batch) < FEW_STEPS)


def test_a_near_perfect_validation_auc_is_warned_of_as_a_leak(tmp_path):
    evaluator = EpochEvaluator(lambda model: {}, tmp_path, monitor="auc", patience=3, save_checkpoint=False)
    evaluator.best_metrics = {"auc": 0.9997, "gauc": 0.9999, "logloss": 0.01}
    warning = leak_warning(evaluator)
    assert "auc 0.9997" in warning and "gauc" not in warning and "--exclude-columns" in warning
    evaluator.best_metrics = {"auc": 0.72, "ctr_auc": 0.81}
    assert leak_warning(evaluator) is None


def test_a_label_written_in_german_or_french_words_is_read_as_0_1(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("user,item,gekauft,cliqué\n" + "".join(
        f"u{i},i{i % 4},{'Ja' if i % 3 == 0 else 'nein'},{'oui' if i % 2 else 'non'}\n" for i in range(12)))
    frame = load_table(str(path), labels=["gekauft", "cliqué"]).frame
    assert frame["gekauft"].tolist() == [1, 0, 0] * 4 and frame["cliqué"].tolist() == [0, 1] * 6


def test_columns_named_in_any_script_are_served_under_the_names_their_signature_holds(tmp_path):
    import tensorflow as tf

    from tfrs_recsys.data.input_names import signature_name
    from tfrs_recsys.data.schema import FeatureColumn, FeatureSpec, SchemaError
    from tfrs_recsys.features.preprocessing import raw_input_specs

    names = ["âge", "position dans la page", "Kunde-Nr.", "年龄", "1st_visit", "_x", "user_id", "Größe",
             "Ørsted"]

    def numbers(*columns):
        return FeatureSpec([FeatureColumn(c, "numeric", "context", mean=0, std=1) for c in columns], ["y"])

    module = tf.Module()
    module.serve = tf.function(lambda f: {"y": tf.add_n(list(f.values()))},
                               input_signature=[raw_input_specs(numbers(*names))])
    tf.saved_model.save(module, str(tmp_path / "m"), signatures={"serving_default": module.serve})
    served = tf.saved_model.load(str(tmp_path / "m")).signatures["serving_default"]
    expected = ["age", "position_dans_la_page", "Kunde_Nr_", "u5e74u9f84", "f_1st_visit", "f__x", "user_id",
                "Groudfe", "ud8rsted"]
    assert sorted(served.structured_input_signature[1]) == sorted(expected)
    assert [signature_name(n) for n in names] == expected and signature_name("Kunde_Nr_") == "Kunde_Nr_"
    with pytest.raises(SchemaError) as clash:  # two columns that would be one input: said before training
        numbers("âge", "age")
    assert "['âge', 'age'] would be one serving input, 'age'" in str(clash.value)


def test_a_yes_no_column_true_only_after_the_label_is_refused_as_a_funnel_leak(tmp_path):
    rng = np.random.default_rng(0)
    clicked = (rng.random(400) < 0.3).astype(int)
    subscribed = clicked * (rng.random(400) < 0.5)
    frame = pd.DataFrame({"rubrique": rng.choice(["sport", "culture"], 400), "clicked": clicked,
                          "abonné": np.where(subscribed == 1, "oui", "non")})
    with pytest.raises(DataError, match="'abonné'.*is 1 only on rows where the label 'clicked' is 1"):
        infer_schema(frame, ["clicked"])
    assert infer_schema(frame, ["clicked"], exclude=["abonné"])["rubrique"].kind == "categorical"


def test_a_column_of_the_log_and_its_items_table_left_out_is_no_clash(tmp_path):
    from tfrs_recsys.config import DeepFMConfig
    from tfrs_recsys.training.rankers import load_and_split, ranker_spec

    log = tmp_path / "log.csv"
    log.write_text("reader,article,rubrique,clicked\n" + "".join(
        f"r{i % 9},a{i % 7},{'sport' if i % 7 < 3 else 'culture'},{i % 2}\n" for i in range(80)))
    articles = tmp_path / "articles.csv"
    articles.write_text("article,rubrique,author\n" + "".join(
        f"a{i},{'Sport' if i < 3 else 'Kultur'},w{i % 2}\n" for i in range(7)))
    cfg = DeepFMConfig(dataset="csv", data_dir=str(log), label_columns=("clicked",), user_column="reader",
                       item_column="article", items=str(articles))
    with pytest.raises(DataError, match="'rubrique' is in both") as clash:
        load_and_split(cfg, "deepfm")
    assert "--exclude-columns rubrique" in clash.value.fix
    data, split = load_and_split(dataclasses.replace(cfg, exclude_columns=("rubrique",)), "deepfm")
    assert "author" in data.frame.columns and set(data.frame["rubrique"]) == {"sport", "culture"}  # the log's
    both = dataclasses.replace(cfg, exclude_columns=("rubrique", "author"))  # a column of the table alone too
    data, split = load_and_split(both, "deepfm")
    spec = ranker_spec(both, data, split.train)
    assert "author" not in data.frame.columns and not {"rubrique", "author"} & set(spec.feature_names)


def test_a_click_column_of_yes_no_words_is_a_rating_of_1_and_0(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("reader,article,cliqué\n" + "".join(
        f"r{i % 5},a{i % 6},{'Oui' if i % 3 == 0 else 'Non'}\n" for i in range(30)))
    log = load_interaction_log(str(path), user_column="reader", item_column="article", rating_column="cliqué",
                               min_rating=1)
    assert len(log.interactions) == 10 and (log.interactions["rating"] == 1).all()


def test_export_describe_names_the_column_of_an_input_named_otherwise():
    from tfrs_recsys.export.describe import input_note

    renamed = {"name": "position_dans_la_page", "feature": "position dans la page", "kind": "categorical",
               "missing": ""}
    assert input_note(renamed) == "column 'position dans la page', categorical; missing: ''"
    assert input_note({**renamed, "feature": "position_dans_la_page"}) == "categorical; missing: ''"


def test_the_line_by_line_reader_keeps_a_quoted_newline_a_bom_and_a_last_accented_byte(tmp_path):
    quoted = tmp_path / "quoted.csv"  # a short row sends the whole file to the line-by-line pass
    quoted.write_text('user,item,clicked\nu1,"a\nb",1\nu2,i2\nu3,i3,0\n')
    table, reports = read_table(str(quoted), skip_bad_rows=True)
    assert table["item"].tolist() == ["a\nb", "i3"] and reports[0].skipped == 1
    assert [locate(table, row)[1] for row in range(2)] == [2, 5]
    bom = tmp_path / "bom.csv"
    bom.write_bytes(b"\xef\xbb\xbfuser,item,clicked\nu1,i1,1\nu2,i2\nu3,i3,0\n")
    assert list(read_table(str(bom), skip_bad_rows=True)[0].columns) == ["user", "item", "clicked"]
    ending = tmp_path / "ending.csv"
    ending.write_bytes(b"user,item\nu1,caf\xe9")  # its one accented byte last, no newline after it
    assert read_table(str(ending))[0]["item"].tolist() == ["café"]


def test_a_streamed_file_not_utf8_past_the_bytes_read_for_its_encoding_says_to_re_save_it(tmp_path,
                                                                                        monkeypatch):
    from tfrs_recsys.data import text_encodings

    monkeypatch.setattr(text_encodings, "SNIFFED_BYTES", 1 << 16)  # a small file stands for one of 32 MiB
    text_encodings.file_encoding.cache_clear()
    path = tmp_path / "log.csv"
    path.write_bytes(b"user,item,clicked\n" + b"u1,i1,1\n" * 20_000 + "René,café,1\n".encode("cp1252"))
    texts = pa.schema([("user", pa.string()), ("item", pa.string()), ("clicked", pa.int64())])
    with pytest.raises(DataError) as error:  # in blocks of 400 x 100 bytes, as the table's schema says
        for _ in streaming.record_batches(str(path), texts, 100):
            pass
    assert "re-save it as UTF-8" in error.value.fix
    text_encodings.file_encoding.cache_clear()


def test_copies_among_list_cells_and_columns_only_named_like_times(tmp_path, caplog):
    from tfrs_recsys.data.registry import load_labeled

    listed = tmp_path / "listed.parquet"
    pd.DataFrame({"user": ["u1", "u1", "u2"], "ts": [1.7e9, 1.7e9, 1.8e9],
                  "tags": [["p", "q"], ["p", "q"], ["r"]], "clicked": [1, 1, 0]}).to_parquet(listed)
    named = tmp_path / "named.csv"  # 'candidate' holds 'date' but no time: a repeated row is an event
    named.write_text("user,candidate,clicked\n" + "u1,c1,1\n" * 4 + "u2,c2,0\n" * 4)
    with caplog.at_level(logging.WARNING):
        load_labeled("deepfm", "parquet", str(listed), label_columns=("clicked",), user_column="user")
        assert any("1 of 3 rows" in r.getMessage() for r in caplog.records)
        caplog.clear()
        load_labeled("deepfm", "csv", str(named), label_columns=("clicked",), user_column="user")
        assert not [r for r in caplog.records if "repeat an earlier row" in r.getMessage()]


def test_ranker_inputs_answer_to_their_columns_names_and_send_the_signatures():
    from tfrs_recsys.serving.ranker_inputs import RankerInputs

    inputs = RankerInputs({"age": "float", "position_dans_la_page": "int", "sku": "str"},
                          ["âge", "position dans la page", "sku", "unknown column", None])
    assert inputs["âge"] == "float" and inputs["position dans la page"] == "int"
    assert "unknown column" not in inputs
    assert [inputs.served(n) for n in ("âge", "position dans la page", "sku", "age")] == [
        "age", "position_dans_la_page", "sku", "age"]
    assert set(inputs.real) == {"age", "position_dans_la_page", "sku"}


def test_input_names_written_as_code_points_are_read_back_in_messages():
    from tfrs_recsys.data.input_names import signature_name
    from tfrs_recsys.serving.ranker_inputs import shown_input

    assert shown_input(signature_name("表示日時")) == "u8868u793au65e5u6642 (表示日時)"
    assert shown_input("visitor_id") == "visitor_id" and shown_input("f_1st_visit") == "f_1st_visit"


def test_a_model_that_learns_its_rows_by_heart_is_told_which_columns_allow_it(tmp_path):
    spec = FeatureSpec([
        FeatureColumn("reader", "id", "user", "vocabulary", vocabulary=[f"r{i}" for i in range(1000)]),
        FeatureColumn("article", "id", "item", "vocabulary", vocabulary=[f"a{i}" for i in range(600)]),
        FeatureColumn("device", "categorical", "context", "vocabulary", vocabulary=["mobile", "desktop"]),
        FeatureColumn("shop", "id", "item", "hash", num_buckets=100)], labels=["click"])
    evaluator = EpochEvaluator(lambda model: {}, tmp_path, monitor="auc", patience=3, save_checkpoint=False)
    evaluator.best_epoch, evaluator.epochs_run, evaluator.best_metrics = 5, 8, {"auc": 0.619, "gauc": 0.64}
    evaluator.train_logs = {1: {"auc": 0.60, "loss": 0.5}, 8: {"auc": 0.963, "loss": 0.2}}
    evaluator.validation_logs = {1: {"auc": 0.609, "gauc": 0.6}}
    advice = memorizing_advice(evaluator, spec, 20_000)
    assert ("auc rose by 0.354 over 8 epochs (0.609, the first epoch's validation auc, to 0.963) while the "
            "validation auc gained 0.010") in advice
    assert "reader (1000 values, 20 rows each), article (600 values, 33 rows each);" in advice
    assert "device" not in advice and "shop" not in advice and "--exclude-columns" in advice
    assert "article" not in memorizing_advice(evaluator, spec, 200_000)  # 333 rows of each article
    evaluator.best_metrics["auc"] = 0.66  # validation gained 0.051, a seventh of training's rise: learning
    assert memorizing_advice(evaluator, spec, 20_000) is None
    evaluator.best_metrics["auc"], evaluator.train_logs[8]["auc"] = 0.619, 0.68  # training rose little
    assert memorizing_advice(evaluator, spec, 20_000) is None
    evaluator.train_logs = {1: {"auc": 0.65}, 8: {"auc": 0.76}}  # a first epoch's average catching up
    evaluator.validation_logs, evaluator.best_metrics = {1: {"auc": 0.75}}, {"auc": 0.755}
    assert memorizing_advice(evaluator, spec, 20_000) is None
    # a first epoch that reached the ceiling (validation 0.78, its training average 0.63), then a gap of 0.07
    evaluator.train_logs = {1: {"auc": 0.628}, 4: {"auc": 0.849}}
    evaluator.epochs_run, evaluator.best_epoch = 4, 2
    evaluator.validation_logs, evaluator.best_metrics = {1: {"auc": 0.78}}, {"auc": 0.783}
    assert memorizing_advice(evaluator, spec, 20_000) is None


def test_the_spec_table_lines_up_columns_named_in_wide_characters():
    import unicodedata

    spec = FeatureSpec([
        FeatureColumn("会員ランク", "categorical", "user", "vocabulary", vocabulary=["金", "銀"]),
        FeatureColumn("store", "categorical", "item", "vocabulary", vocabulary=["a", "b"])], labels=["購入"])

    def shown(text: str) -> int:
        return sum(1 + (unicodedata.east_asian_width(c) in "WF") for c in text)

    lines = spec.table().splitlines()
    assert len({shown(line[:line.index(kind)]) for line, kind in zip(lines, ["kind", "categ", "categ"])}) == 1
    assert all(shown(line) <= 40 for line in spec.table(width=40).splitlines())


def _warehouse_export(folder) -> pd.DataFrame:
    """Three Parquet parts as a warehouse writes them: times in their own zones and units, a struct and a
    list per event, a later part with one more column; returns all rows with their instants."""
    import pyarrow.parquet as pq

    folder.mkdir()
    instants = pd.date_range("2026-03-01", periods=90, freq="37min", tz="UTC")
    rows = pd.DataFrame({"usuario_id": [f"u{i % 7}" for i in range(90)], "producto_id": [f"0{i % 29}"
                         for i in range(90)], "comprado": [i % 3 == 0 for i in range(90)],
                         "fila": range(90)})
    zones = [("us", "America/Sao_Paulo"), ("ns", "UTC"), ("ms", "UTC")]
    for part, (unit, zone) in enumerate(zones):
        piece = rows[30 * part:30 * part + 30]
        when = instants[30 * part:30 * part + 30]
        table = pa.Table.from_pandas(piece, preserve_index=False).append_column(
            "evento_ts", pa.array(when.tz_convert(zone), pa.timestamp(unit, tz=zone)))
        table = table.append_column("metadata", pa.array(
            [{"canal": ("app", "web")[i % 2], "pagina": i % 4} for i in range(30)]))
        table = table.append_column("etiquetas", pa.array([["a", "b"][: 1 + i % 2] for i in range(30)]))
        if part == 2:
            table = table.append_column("cupon", pa.array(["X"] * 30))
        pq.write_table(table, folder / f"part-0000{part}-c000.snappy.parquet")
    (folder / "_SUCCESS").write_text("")
    return rows.assign(evento_ts=instants)


def test_a_warehouse_parquet_export_reads_alike_in_memory_and_streamed(tmp_path):
    truth = _warehouse_export(tmp_path / "eventos")
    frame, _ = read_table(str(tmp_path / "eventos"))
    assert {"metadata.canal", "metadata.pagina", "etiquetas"} <= set(frame.columns)
    assert "metadata" not in frame.columns and sorted(frame["metadata.canal"].unique()) == ["app", "web"]
    assert (frame["evento_ts"].to_numpy() == truth["evento_ts"].to_numpy()).all()  # the same instants
    table = streaming.open_table(str(tmp_path / "eventos"), labels=["comprado"], user_column="usuario_id")
    sample = streaming.sample_rows(table, 1000, seed=0)
    assert {"metadata.canal", "metadata.pagina"} <= set(sample.columns) and len(sample) > 40
    assert (sample["evento_ts"].to_numpy() == truth["evento_ts"][sample["fila"]].to_numpy()).all()


def test_a_part_that_cannot_be_unified_is_the_one_named(tmp_path):
    import pyarrow.parquet as pq

    _warehouse_export(tmp_path / "eventos")
    odd = pa.table({"usuario_id": ["u1"] * 30, "producto_id": [[1]] * 30, "comprado": [True] * 30})
    pq.write_table(odd, tmp_path / "eventos" / "part-00009-c000.snappy.parquet")
    table = streaming.open_table(str(tmp_path / "eventos"), labels=["comprado"])
    with pytest.raises(DataError) as error:
        streaming.sample_rows(table, 1000, seed=0)
    assert error.value.path.endswith("part-00009-c000.snappy.parquet")


def test_an_interaction_log_of_lists_and_structs_leaves_out_the_columns_named(tmp_path, caplog):
    _warehouse_export(tmp_path / "eventos")
    options = dict(user_column="usuario_id", item_column="producto_id", time_column="evento_ts")
    data = load_interaction_log(str(tmp_path / "eventos"), **options, exclude_columns=["cupon"])
    assert "cupon" not in data.items.columns and (data.users is None or "cupon" not in data.users.columns)
    assert len(data.interactions) == 90
    with pytest.raises(DataError) as error:
        load_interaction_log(str(tmp_path / "eventos"), **options, exclude_columns=["coupon"])
    assert "choose among" in error.value.fix and "cupon" in error.value.fix
    with pytest.raises(DataError, match="names the --user-column column"):
        load_interaction_log(str(tmp_path / "eventos"), **options, exclude_columns=["usuario_id"])
    for key in ("usuario_id", "item_id"):  # the log's id column, or the key the tables are joined by
        with pytest.raises(DataError, match="names the --(user|item)-column column"):
            load_interaction_log(str(tmp_path / "eventos"), **options, exclude_columns=[key])
    config = DeepFMConfig(dataset="interactions", data_dir=str(tmp_path / "eventos"), **options,
                          exclude_columns=("metadata", "cupon"), epochs=1, embedding_dim=4,
                          hidden_units=(8,), output_dir=str(tmp_path / "run"))
    from tfrs_recsys.training import deepfm

    deepfm.run(config)  # a ranker on the log as implicit clicks leaves them out too (a struct: its fields)
    kept = {f["name"] for f in json.loads((tmp_path / "run" / "spec.json").read_text())["features"]}
    assert "cupon" not in kept and not [name for name in kept if name.startswith("metadata")]
    from tfrs_recsys.training import stream
    from tfrs_recsys.training.rankers import load_and_split, ranker_spec

    table = DeepFMConfig(dataset="parquet", data_dir=str(tmp_path / "eventos"), label_columns=("comprado",),
                         exclude_columns=("metadata",))
    data, split = load_and_split(table, "deepfm")  # a ranker on the table itself, in memory and streamed
    files = streaming.open_table(table.data_dir, labels=["comprado"])
    sample = streaming.sample_rows(files, 1000, seed=0)
    for spec in (ranker_spec(table, data, split.train), stream._spec(table, files, sample, len(sample))):
        assert not [f.name for f in spec.features if f.name.startswith("metadata")]
    frame, _ = read_table(str(tmp_path / "eventos"))
    spec = infer_schema(frame, labels=["comprado"], exclude=["metadata"])
    assert {"metadata.canal", "metadata.pagina"} <= set(spec.notes["dropped"])
    assert not [f.name for f in spec.features if f.name.startswith("metadata")]


def test_odd_warehouse_columns_are_refused_or_read(tmp_path):
    import pyarrow.parquet as pq

    clash = pa.table({"a.b": [1, 2], "a": [{"b": 3}, {"b": 4}], "label": [0, 1]})
    pq.write_table(clash, tmp_path / "clash.parquet")
    with pytest.raises(DataError, match="struct field 'a.b' has the name of another column"):
        read_table(str(tmp_path / "clash.parquet"))
    far = pa.table({"t": pa.array([10 ** 17, 1], pa.timestamp("ms", tz="UTC")), "label": [0, 1]})
    pq.write_table(far, tmp_path / "far.parquet")
    with pytest.raises(DataError, match="cannot be read as microseconds") as error:
        read_table(str(tmp_path / "far.parquet"))
    assert error.value.column == "t" and error.value.path.endswith("far.parquet")
    records = pa.table({"user": ["u1", "u2", "u1"], "item": ["i1", "i1", "i2"],
                        "lines": [[{"sku": "x", "n": 1}], [{"sku": "y", "n": 2}], []],
                        "grid": [[[1, 2]], [[3]], [[4]]]})
    (tmp_path / "log").mkdir()
    pq.write_table(records, tmp_path / "log" / "part-0.parquet")
    data = load_interaction_log(str(tmp_path / "log"), user_column="user", item_column="item")
    assert len(data.interactions) == 3  # lists of records and of lists, hashable for the per-id checks


def test_a_shard_without_a_column_of_the_spec_reads_it_as_missing(caplog):
    import tensorflow as tf

    from tfrs_recsys.data import packing
    from tfrs_recsys.data.schema import frame_to_raw

    frame = pd.DataFrame({"cupon": ["X", None, "Y", "X"] * 10, "precio": [1.5, 2.0, None, 4.0] * 10,
                          "hora": [1, 2, 3, 4] * 10, "etiquetas": ["a|b", "b", "", "a"] * 10,
                          "visto": ["2026-03-01 10:00"] * 40, "comprado": [0, 1] * 20})
    spec = infer_schema(frame.assign(visto=pd.to_datetime(frame["visto"])), ["comprado"])
    shard = pa.RecordBatch.from_pandas(frame[["comprado"]].head(4), preserve_index=False)
    with caplog.at_level(logging.WARNING):
        raw = packing.unpack({k: tf.constant(v) for k, v in packing.pack(shard, spec, set()).items()}, spec)
    blank = frame_to_raw(pd.DataFrame({c: [None] * 4 for c in frame.columns}).assign(comprado=0), spec)
    for name in spec.feature_names:
        got, want = raw[name].numpy(), blank[name]
        if got.dtype == object:  # tf.string values are bytes
            got = np.array([v.decode() for v in got.ravel()], dtype=object).reshape(got.shape)
        assert got.shape == want.shape and ((got == want) | (pd.isna(got) & pd.isna(want))).all(), name
    assert "has no column 'cupon'" in caplog.text


def test_compressed_exports_read_as_their_text_in_memory_streamed_and_as_a_log(tmp_path):
    import bz2
    import gzip

    plain = tmp_path / "plain" / "Bestellungen.csv"
    plain.parent.mkdir()
    plain.write_bytes(("\n".join([HEADER, *_rows(40)]) + "\n").encode())
    shards = tmp_path / "export"
    shards.mkdir()
    (shards / "part-0.csv.gz").write_bytes(gzip.compress(plain.read_bytes()))
    (shards / "part-1.CSV.BZ2").write_bytes(bz2.compress(plain.read_bytes()))
    (shards / "_SUCCESS").write_bytes(b"")
    truth, _ = read_table(str(plain))
    frame, _ = read_table(str(shards))  # the folder lists both compressed shards
    assert frame.equals(pd.concat([truth, truth], ignore_index=True))
    table = streaming.open_table(str(shards), labels=[])
    assert table.rows == 80 and table.bytes == sum(f.stat().st_size for f in shards.glob("part-*"))
    assert streaming.total_bytes(str(shards)) == 8 * table.bytes  # as --streaming auto counts them
    streamed = pa.Table.from_batches(list(streaming.record_batches(table.files[0], None, 16)))
    assert streamed.column("Bezeichnung").to_pylist() == truth["Bezeichnung"].tolist()
    data = load_interaction_log(str(shards / "part-0.csv.gz"), user_column="Kunde", item_column="Artikel")
    assert len(data.interactions) == 40
    cut = tmp_path / "cut.csv.gz"
    cut.write_bytes((shards / "part-0.csv.gz").read_bytes()[:-20])
    for read in (lambda: read_table(str(cut)), lambda: streaming.open_table(str(cut), labels=[])):
        with pytest.raises(DataError, match="cannot decompress it") as error:
            read()
        assert error.value.path == str(cut) and "cut short" in error.value.fix


def test_a_parquet_date_column_is_a_time_whatever_its_name(tmp_path):
    import datetime

    import pyarrow.parquet as pq

    days = [datetime.date(2024, 1, 1) + datetime.timedelta(days=i % 50) for i in range(200)]
    pq.write_table(pa.table({"ausgabe": pa.array(days, pa.date32()), "label": [i % 2 for i in range(200)]}),
                   tmp_path / "dates.parquet")
    frame, _ = read_table(str(tmp_path / "dates.parquet"))
    assert frame["ausgabe"][3] == pd.Timestamp("2024-01-04")  # its midnight, as a Parquet timestamp reads
    column = infer_schema(frame, labels=["label"]).features[0]
    assert (column.name, column.kind) == ("ausgabe", "timestamp")
    streamed = next(streaming.record_batches(str(tmp_path / "dates.parquet"), None, 100))
    assert streamed.schema.field("ausgabe").type == pa.timestamp("us")


def test_dotted_dates_are_day_first_and_other_dates_that_cannot_tell_are_warned_of(tmp_path, caplog):
    week = [f"k{i % 5};A-{i % 9};0{1 + i % 4}.12.2024 18:05" for i in range(40)]  # no day above 12
    (tmp_path / "woche.csv").write_text("\n".join(["Kunde;Artikel;Zeitpunkt", *week]) + "\n")
    data = load_interaction_log(str(tmp_path / "woche.csv"), user_column="Kunde", item_column="Artikel",
                                time_column="Zeitpunkt")
    days = pd.to_datetime(data.interactions["timestamp"], unit="s")
    assert set(days.dt.month) == {12} and set(days.dt.day) == {1, 2, 3, 4}
    frame = pd.DataFrame({"Zeitpunkt": [row.split(";")[2] for row in week], "label": [0, 1] * 20})
    assert infer_schema(frame, labels=["label"]).features[0].day_first  # a ranker reads them alike
    with caplog.at_level(logging.WARNING):
        slashed = [row.replace(".", "/") for row in week]
        (tmp_path / "slashed.csv").write_text("\n".join(["Kunde;Artikel;Zeit", *slashed]) + "\n")
        load_interaction_log(str(tmp_path / "slashed.csv"), user_column="Kunde", item_column="Artikel",
                             time_column="Zeit")
    said = [r.getMessage() for r in caplog.records if "day or month first" in r.getMessage()]
    assert len(said) == 1 and "'Zeit'" in said[0] and "read month first" in said[0]


def test_a_workbook_is_refused_as_one_with_how_to_save_it_as_csv(tmp_path):
    import zipfile

    with zipfile.ZipFile(tmp_path / "Bestellungen.xlsx", "w") as book:  # an .xlsx is a zip of XML parts
        book.writestr("xl/workbook.xml", "<workbook/>")
    (tmp_path / "umbenannt.csv").write_bytes((tmp_path / "Bestellungen.xlsx").read_bytes())
    for name in ("Bestellungen.xlsx", "umbenannt.csv"):
        with pytest.raises(DataError, match="spreadsheet workbook") as error:
            load_interaction_log(str(tmp_path / name), user_column="Kunde", item_column="Artikel")
        assert "CSV UTF-8" in error.value.fix and error.value.path.endswith(name)


def test_a_column_flag_is_checked_against_the_data_before_its_tables_and_a_near_spelling_is_named(tmp_path):
    from tfrs_recsys.data.registry import load_labeled

    (tmp_path / "log.csv").write_text("Kundennummer ,Artikel,geklickt\n" + "k1,a1,1\nk2,a2,0\n" * 20)
    (tmp_path / "kunden.csv").write_text("Kundennr,Alter\nk1,30\n")
    options = dict(label_columns=["geklickt"], item_column="Artikel")
    with pytest.raises(DataError) as error:  # the typo is in the flag: the data says so, not the table
        load_labeled("deepfm", "csv", str(tmp_path / "log.csv"), **options, user_column="Kundennr",
                     users=str(tmp_path / "kunden.csv"))
    assert error.value.path.endswith("log.csv") and "pass --user-column naming one of them" in error.value.fix
    for users in (str(tmp_path / "kunden.csv"), None):  # a header's trailing space is pointed at
        with pytest.raises(DataError) as error:
            load_labeled("deepfm", "csv", str(tmp_path / "log.csv"), **options, user_column="Kundennummer",
                         users=users)
        assert "'Kundennummer ' (spaces or case differ)" in error.value.fix
    with pytest.raises(DataError, match="spaces or case differ"):
        streaming.open_table(str(tmp_path / "log.csv"), labels=["geklickt"], user_column="kundennummer")
    (tmp_path / "kunden.csv").write_text("Kundennummer,Alter\nk1,30\n")  # the table's header lacks the space
    with pytest.raises(DataError, match="'Kundennummer' \\(spaces or case differ\\)"):
        load_labeled("deepfm", "csv", str(tmp_path / "log.csv"), label_columns=["geklickt"],
                     user_column="Kundennummer ", users=str(tmp_path / "kunden.csv"))
    (tmp_path / "Artikel.csv").write_text("Artikel,Preis\na1,3\n")  # a catalog beside the log, read first
    with pytest.raises(DataError, match="every file .* names is read as a shard of one table"):
        read_table(str(tmp_path), required={"geklickt": "--label-columns"})
