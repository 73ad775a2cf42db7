"""What a ranker's ``--items`` table costs the streamed input: the same rows read with their item columns
in the shards, and read from shards without them, joined to an item table one record batch at a time.

A session data set of bench/scale_data.py (``item_category`` and ``item_price`` constant per ``item_id``)
is split once into shards without those columns and a catalog of one row per item, under ``--out``. Then,
alternated ``--repeats`` times: the training rows read as record batches (``read_part``), and the
rankers' whole streamed input (parsing, the join, encoding in the graph) for ``--batches`` batches of
512. Printed: rows per second of each variant and joined / inline. ``--text-ids`` writes the joined
variant's item ids as text (``i42``), as a CSV catalog's are (into an ``--out`` of its own).

    python bench/entity_join.py --data /tmp/scale-data/sessions-1000000 --out /tmp/entity-join
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1])]

import pandas as pd  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from tfrs_recsys.data import streaming  # noqa: E402
from tfrs_recsys.data.entities import entity_joins  # noqa: E402
from tfrs_recsys.data.schema_inference import infer_schema  # noqa: E402
from tfrs_recsys.features.preprocessing import FeaturePreprocessor, as_encoded  # noqa: E402

ITEM_COLUMNS = ["item_category", "item_price"]
LABELS = ["click", "conversion"]


def split_catalog(data: Path, out: Path, text_ids: bool) -> None:
    """The shards of ``data`` without the item columns, and those columns as a catalog, under ``out``
    (item ids as text such as ``"i42"`` with ``text_ids``, both in the log and the catalog)."""
    if (out / "catalog.parquet").is_file():
        return
    (out / "log").mkdir(parents=True, exist_ok=True)
    catalog = []
    for file in sorted((data / "parquet").glob("*.parquet")):
        table = pq.read_table(file)
        if text_ids:
            ids = pc.binary_join_element_wise("i", pc.cast(table.column("item_id"), pa.string()), "")
            table = table.set_column(table.schema.get_field_index("item_id"), "item_id", ids)
        catalog.append(table.select(["item_id", *ITEM_COLUMNS]).to_pandas().drop_duplicates("item_id"))
        pq.write_table(table.drop_columns(ITEM_COLUMNS), out / "log" / file.name)
    pd.concat(catalog).drop_duplicates("item_id").to_parquet(out / "catalog.parquet", index=False)


def tables(data: Path, out: Path) -> dict[str, streaming.FileTable]:
    """The rows with their item columns (the inline variant keeps the log's item ids as they are, so with
    text ids only the joined variant reads text), and the rows joined to the catalog."""
    keys = dict(labels=LABELS, session_column="session_id", user_column="user_id", item_column="item_id")
    inline = streaming.open_table(str(data / "parquet"), **keys)
    joined = streaming.open_table(str(out / "log"), **keys)
    joined.joins = entity_joins(joined.schema.names, items=str(out / "catalog.parquet"), users=None,
                                item_column="item_id", user_column=None)
    return {"inline": inline, "joined": joined}


def read_rows(table: streaming.FileTable) -> int:
    return sum(batch.num_rows for batch in streaming.read_part(table, table.files, 0, seed=42))


def input_rows(table: streaming.FileTable, spec, batches: int) -> int:
    preprocessor = FeaturePreprocessor(spec)
    ds = streaming.stream_dataset(table, spec, table.files, batch_size=512, seed=42,
                                  encode=lambda raw: as_encoded(preprocessor(raw)))
    return sum(int(y["click"].shape[0]) for _, y in ds.take(batches))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True, help="a sessions data set of bench/scale_data.py")
    p.add_argument("--out", type=Path, required=True, help="where the log without item columns goes")
    p.add_argument("--batches", type=int, default=2000)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--text-ids", action="store_true", help="item ids as text in the joined log and catalog")
    args = p.parse_args(argv)
    split_catalog(args.data, args.out, args.text_ids)
    variants = tables(args.data, args.out)
    sample = streaming.sample_rows(variants["joined"], 50_000, seed=42)
    spec = infer_schema(sample, LABELS, session_column="session_id", user_column="user_id",
                        item_column="item_id")
    assert set(ITEM_COLUMNS) <= set(spec.feature_names), spec.feature_names
    rates: dict[str, dict[str, list[float]]] = {name: {"read": [], "input": []} for name in variants}
    for _ in range(args.repeats):
        for name, table in variants.items():
            for stage, run in (("read", lambda: read_rows(table)),
                               ("input", lambda: input_rows(table, spec, args.batches))):
                clock = time.perf_counter()
                rows = run()
                rates[name][stage].append(rows / (time.perf_counter() - clock))
    for stage in ("read", "input"):
        inline, joined = (max(rates[name][stage]) for name in ("inline", "joined"))
        every = {name: [round(r) for r in rates[name][stage]] for name in variants}
        print(f"{stage}: inline {inline:,.0f} rows/s, joined {joined:,.0f} rows/s, joined / inline "
              f"{joined / inline:.2f}x (best of {args.repeats}; each: {every})")


if __name__ == "__main__":
    main()
