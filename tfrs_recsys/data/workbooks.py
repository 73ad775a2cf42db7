"""Spreadsheet workbooks given as a table: read as text, their bytes would be taken for an encoding or a
separator, so they are refused with the way to save them as a table that is read."""
from __future__ import annotations

from tfrs_recsys import paths
from tfrs_recsys.data.compressed import file_format
from tfrs_recsys.data.errors import DataError

WORKBOOK_SUFFIXES = (".xlsx", ".xlsm", ".xls", ".xlsb", ".ods", ".numbers", ".zip")


def refuse_workbook(file: str, what: str, formats: str) -> None:
    """Refuses a spreadsheet workbook, known by its suffix or a zip or OLE file's first bytes.

    Args:
      file: The file.
      what: The table in the error.
      formats: The formats that are read, for the error.

    Raises:
      DataError: ``file`` is a workbook or an archive.
    """
    with paths.open_file(file) as fh:
        head = fh.read(8)
    if file_format(file) in WORKBOOK_SUFFIXES or head.startswith((b"PK\x03\x04", b"\xd0\xcf\x11\xe0")):
        raise DataError(f"{what} is a spreadsheet workbook or an archive, not a {formats} file", path=file,
                        fix="save it as CSV (Excel: File > Save As > CSV UTF-8; LibreOffice: File > Save As "
                            "> Text CSV, UTF-8) or export it as Parquet, and point at that")
