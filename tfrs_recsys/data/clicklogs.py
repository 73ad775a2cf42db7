"""Click + conversion impression logs (ESMM input): AliExpress and Ali-CCP sample formats.

Every loader returns a :class:`LabeledData` with labels ``click`` and ``conversion``
and checks the entire-space invariant: a conversion is only observed after a click.
"""
from __future__ import annotations

import pandas as pd

from tfrs_recsys.data import readers
from tfrs_recsys.data.bundles import LabeledData
from tfrs_recsys.data.compressed import read_text_bytes
from tfrs_recsys.data.errors import DataError, SkipReport

CLICK, CONVERSION = "click", "conversion"


def check_conversion_implies_click(frame: pd.DataFrame, path: str, *, first_data_line: int = 2) -> None:
    """Raise on a label other than 0 / 1, and on a conversion without a click (impossible in the funnel).

    Args:
      frame: Rows with ``click`` and ``conversion``, as read from ``path``.
      path: The file, named in the error.
      first_data_line: The file line of the first row, when the reader recorded none
        (:func:`~tfrs_recsys.data.readers.source_line`).
    """
    impossible = ((frame[CONVERSION] == 1) & (frame[CLICK] == 0)).to_numpy()
    funnel = (impossible, CONVERSION, lambda row: f"conversion=1 on an impression without a click "
              f"({int(impossible.sum())} such rows)",
              "conversion must mean click-then-convert; set click=1 on those rows or drop them")
    readers.check_rows(frame, path, [*readers.binary_checks(frame, (CLICK, CONVERSION)), funnel],
                       first_data_line=first_data_line)


def load_aliexpress(path: str, *, skip_bad_rows: bool = False) -> LabeledData:
    """AliExpress search logs: ``search_id``, ``categorical_1..16``, ``numerical_1..63``, the labels.

    Args:
      path: The CSV file.
      skip_bad_rows: Skip and count malformed rows instead of failing on the first.

    Returns:
      The rows, labels ``click`` and ``conversion``, sessions ``search_id``.
    """
    header = readers.first_line(path, "AliExpress CSV", "check the path").strip().split(",")
    types = {**{c: "float" for c in header if c.startswith("numerical_")}, CLICK: "int", CONVERSION: "int"}
    frame, report = readers.read_delimited(
        path, sep=",", header=True, columns=["search_id", CLICK, CONVERSION], column_types=types,
        skip_bad_rows=skip_bad_rows, fix_missing="pass the CSV path, e.g. aliexpress_NL/train.csv")
    check_conversion_implies_click(frame, path)
    return LabeledData(frame, [CLICK, CONVERSION], name="aliexpress", session_column="search_id",
                       skipped=[report])


def load_ali_ccp(path: str, *, skip_bad_rows: bool = False) -> LabeledData:
    """Ali-CCP samples in either public shape.

    * the processed CSV (torch-rechub): ``click``, ``purchase``, categorical field-id columns
      (``101``, ``205``, ...) and dense ``D*`` columns; ``purchase`` becomes ``conversion``;
    * PaddleRec's raw-ish lines ``sample_id,click,ctcvr,field:feat,...``: each field becomes a
      column of feature-id lists (multi-valued), ``ctcvr`` becomes ``conversion``.

    Field ``N`` becomes column ``fN``; field 101 is the user id, field 205 the item id.

    Args:
      path: The file.
      skip_bad_rows: Skip and count malformed rows instead of failing on the first.

    Returns:
      The rows, labels ``click`` and ``conversion``.
    """
    first = readers.first_line(path, "Ali-CCP file", "pass the path of an Ali-CCP sample file")
    if first.startswith("click,"):
        types = {c: "float" for c in first.strip().split(",") if c.startswith("D")}
        frame, report = readers.read_delimited(path, sep=",", header=True, columns=[CLICK, "purchase"],
                                               column_types=types | {CLICK: "int", "purchase": "int"},
                                               skip_bad_rows=skip_bad_rows)
        fields = {c: f"f{c}" for c in frame.columns if c[0].isdigit()}
        frame = frame.rename(columns={"purchase": CONVERSION, **fields})
        check_conversion_implies_click(frame, path)
    else:
        frame, report = _read_paddle_lines(path, skip_bad_rows)
    return LabeledData(frame, [CLICK, CONVERSION], name="ali-ccp", skipped=[report],
                       user_column="f101" if "f101" in frame.columns else None,
                       item_column="f205" if "f205" in frame.columns else None)


def _read_paddle_lines(path: str, skip_bad_rows: bool) -> tuple[pd.DataFrame, SkipReport]:
    report = SkipReport(path=path)
    rows, line_numbers = readers.parse_lines(read_text_bytes(path), path, _parse_paddle_line,
                                             skip_bad_rows=skip_bad_rows, report=report)
    report.log()
    fields = sorted({k for r in rows for k in r if k not in ("sample_id", CLICK, CONVERSION)})
    frame = pd.DataFrame({
        "sample_id": [r["sample_id"] for r in rows],
        **{f"f{f}": [r.get(f, []) for r in rows] for f in fields},
        CLICK: [r[CLICK] for r in rows], CONVERSION: [r[CONVERSION] for r in rows],
    })
    frame.attrs[readers.LINE_NUMBERS] = line_numbers
    check_conversion_implies_click(frame, path, first_data_line=1)
    return frame, report


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
    for pair in parts[3:]:
        field, sep, feat = pair.partition(":")
        if not sep or not field or not feat:
            raise DataError(f"feature {pair!r} is not field:feature_id", fix="repair or remove this row")
        row.setdefault(field, []).append(feat)  # a field's feature ids, in line order
    return row
