"""Click + conversion impression logs (ESMM input): AliExpress and Ali-CCP sample formats.

Every loader returns a :class:`LabeledData` with labels ``click`` and ``conversion``
and checks the entire-space invariant: a conversion is only observed after a click.
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np
import pandas as pd

from tfrs_recsys.data import readers
from tfrs_recsys.data.bundles import LabeledData
from tfrs_recsys.data.errors import DataError, SkipReport

CLICK, CONVERSION = "click", "conversion"


def check_conversion_implies_click(frame: pd.DataFrame, path: str, *, first_data_line: int = 2) -> None:
    """Raise on a label other than 0 / 1, and on any row with conversion = 1 and click = 0 (impossible
    in a click-then-convert funnel)."""
    readers.check_binary_labels(frame, (CLICK, CONVERSION), path, first_data_line=first_data_line)
    impossible = ((frame[CONVERSION] == 1) & (frame[CLICK] == 0)).to_numpy()
    if impossible.any():
        row = int(np.flatnonzero(impossible)[0])
        raise DataError(f"conversion=1 on an impression without a click ({int(impossible.sum())} such rows)",
                        path=path, line=readers.source_line(frame, row, first_data_line=first_data_line),
                        column=CONVERSION,
                        fix="conversion must mean click-then-convert; set click=1 on those rows or drop them")


def load_aliexpress(path: str, *, skip_bad_rows: bool = False) -> LabeledData:
    """AliExpress search logs: ``search_id``, ``categorical_1..16``, ``numerical_1..63``, ``click``,
    ``conversion``."""
    header = readers.first_line(path, "AliExpress CSV", "check the path").strip().split(",")
    types = {**{c: "float" for c in header if c.startswith("numerical_")}, CLICK: "int", CONVERSION: "int"}
    frame, report = readers.read_delimited(
        path, sep=",", header=True, columns=["search_id", CLICK, CONVERSION], column_types=types,
        skip_bad_rows=skip_bad_rows, what="AliExpress CSV",
        fix_missing="pass the CSV path, e.g. aliexpress_NL/train.csv")
    for col in ["search_id", *(c for c in frame.columns if c.startswith("categorical_"))]:
        frame[col] = frame[col].astype(str)
    check_conversion_implies_click(frame, path)
    return LabeledData(frame, [CLICK, CONVERSION], name="aliexpress", session_column="search_id",
                       skipped=[report])



def load_ali_ccp(path: str, *, skip_bad_rows: bool = False) -> LabeledData:
    """Ali-CCP samples in either public shape.

    * the processed CSV (torch-rechub): ``click``, ``purchase``, categorical field-id columns
      (``101``, ``205``, ...) and dense ``D*`` columns; ``purchase`` becomes ``conversion``;
    * PaddleRec's raw-ish lines ``sample_id,click,ctcvr,field:feat,...``: each field becomes a
      column of feature-id lists (multi-valued), ``ctcvr`` becomes ``conversion``.
    """
    first = readers.first_line(path, "Ali-CCP file", "pass the path of an Ali-CCP sample file")
    if first.startswith("click,"):
        return _load_ali_ccp_csv(path, first, skip_bad_rows)
    return _load_ali_ccp_paddle(path, skip_bad_rows)


def _load_ali_ccp_csv(path: str, header_line: str, skip_bad_rows: bool) -> LabeledData:
    header = header_line.strip().split(",")
    types = {c: ("float" if c.startswith("D") else "str") for c in header} | {CLICK: "int", "purchase": "int"}
    frame, report = readers.read_delimited(path, sep=",", header=True, columns=[CLICK, "purchase"],
                                           column_types=types, skip_bad_rows=skip_bad_rows,
                                           what="Ali-CCP CSV")
    fields = {c: f"f{c}" for c in frame.columns if c[0].isdigit()}
    frame = frame.rename(columns={"purchase": CONVERSION, **fields})
    check_conversion_implies_click(frame, path)
    return _ali_ccp(frame, report)


def _ali_ccp(frame: pd.DataFrame, report: SkipReport) -> LabeledData:
    """Ali-CCP's field 101 is the user id, field 205 the item id."""
    return LabeledData(frame, [CLICK, CONVERSION], name="ali-ccp", skipped=[report],
                       user_column="f101" if "f101" in frame.columns else None,
                       item_column="f205" if "f205" in frame.columns else None)


def _load_ali_ccp_paddle(path: str, skip_bad_rows: bool) -> LabeledData:
    report = SkipReport(path=path)
    with readers.open_path(path) as fh:
        data = fh.read()
    rows, line_numbers = readers.parse_lines(data, path, _parse_paddle_line, skip_bad_rows=skip_bad_rows,
                                             report=report)
    report.log()
    fields = sorted({k for r in rows for k in r if k not in ("sample_id", CLICK, CONVERSION)})
    frame = pd.DataFrame({
        "sample_id": [r["sample_id"] for r in rows],
        **{f"f{f}": [r.get(f, []) for r in rows] for f in fields},
        CLICK: [r[CLICK] for r in rows], CONVERSION: [r[CONVERSION] for r in rows],
    })
    frame.attrs[readers.LINE_NUMBERS] = line_numbers
    check_conversion_implies_click(frame, path, first_data_line=1)
    return _ali_ccp(frame, report)


def _parse_paddle_line(line: str) -> dict:
    parts = line.split(",")
    if len(parts) < 3:
        raise DataError(f"expected sample_id,click,ctcvr,field:feat..., found {len(parts)} fields",
                        fix="repair or remove this row")
    row: dict = {"sample_id": parts[0]}
    for name, value in ((CLICK, parts[1]), (CONVERSION, parts[2])):
        if value not in ("0", "1"):
            raise DataError(f"label must be 0 or 1, found {value!r}", column=name, fix="binarize the label")
        row[name] = int(value)
    feats: dict[str, list[str]] = defaultdict(list)
    for pair in parts[3:]:
        field, sep, feat = pair.partition(":")
        if not sep or not field or not feat:
            raise DataError(f"feature {pair!r} is not field:feature_id", fix="repair or remove this row")
        feats[field].append(feat)
    row.update(feats)
    return row
