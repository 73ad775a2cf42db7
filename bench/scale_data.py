"""Writes the scale benchmark's data sets once, as file shards, streaming in bounded memory.

Three kinds, each seeded and generated chunk by chunk with vectorised NumPy (no per-pair loops), so
memory is one chunk's whatever the size:

* ``histories``: retrieval interaction logs (``user_id``, ``item_id``, ``timestamp``), Parquet. History
  lengths are heavy-tailed (20 to thousands, mean = rows / users, as MovieLens-20M's 138K users and
  27K items); item popularity is a power law inside each of the catalog's taste clusters, and a user
  draws mostly from their own cluster, drifting to a neighbour over time.
* ``criteo``: Criteo-format click logs (``label``, ``I1..I13`` counts with gaps, ``C1..C26`` 8-hex-digit
  hashed ids): each field's ids follow a power law over that field's real-life cardinality (up to ~10M
  for C3), so the number of distinct ids grows with the rows as in the real log; CTR about 25%.
* ``sessions``: search-session logs for ESMM (``session_id``, ``user_id``, ``user_segment``, ``item_id``,
  ``item_category``, ``item_price``, ``position``, ``click``, ``conversion``), 20 impressions a session.

Each shard is written as Parquet and (rankers) CSV with the same rows: ``OUT/parquet/part-00000.parquet``,
``OUT/csv/part-00000.csv``, plus ``OUT/manifest.json``. Usage::

    python bench/scale_data.py criteo --rows 1000000 --out data/criteo-1m
    python bench/scale_data.py histories --rows 20000000 --users 138000 --items 27000 --out data/hist-20m
    python bench/scale_data.py criteo --rows 1000000 --out data/criteo-1m --count-distinct   # ids per column
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

CHUNK_ROWS = 500_000  # rows generated at once: bounds the generator's memory
# Kaggle Criteo (45M rows) distinct values per categorical field, C1..C26.
CRITEO_CARDINALITIES = (1460, 583, 10131227, 2202608, 305, 24, 12517, 633, 3, 93145, 5683, 8351593, 3194, 27,
                        14992, 5461306, 10, 5652, 2173, 4, 7046547, 18, 15, 286181, 105, 142572)
CRITEO_MISSING = {f"C{i}": p for i, p in ((3, 0.03), (4, 0.03), (12, 0.03), (16, 0.03), (19, 0.44),
                                           (20, 0.44), (21, 0.03), (22, 0.76), (24, 0.03), (25, 0.44),
                                           (26, 0.44))}
_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


def power_law(rng: np.random.Generator, n: int, support: int, alpha: float = 1.1) -> np.ndarray:
    """``n`` ranks in ``[0, support)`` with P(r) ~ (r + 1)^-alpha, by the inverse of the continuous CDF
    (no table of ``support`` entries, so a 10M-value field costs nothing)."""
    u = rng.random(n)
    a = 1.0 - alpha
    if abs(a) < 1e-9:  # alpha 1: the CDF is logarithmic
        return np.minimum(((support + 1.0) ** u).astype(np.int64) - 1, support - 1)
    r = ((support + 1.0) ** a - 1.0) * u + 1.0
    return np.minimum((r ** (1.0 / a)).astype(np.int64) - 1, support - 1)


def scramble(x: np.ndarray, salt: int) -> np.ndarray:
    """A seeded bijection-like mix of int64 values to uint64 (splitmix64's finalizer)."""
    z = x.astype(np.uint64) + np.uint64(salt * 0x9E3779B97F4A7C15 % 2 ** 64)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def unit_effect(x: np.ndarray, salt: int) -> np.ndarray:
    """A fixed standard-normal-ish effect per value (Box-Muller on two hashed uniforms)."""
    h = scramble(x, salt)
    u1 = ((h >> np.uint64(11)).astype(np.float64) + 0.5) / 2.0 ** 53
    u2 = ((scramble(x, salt + 7) >> np.uint64(11)).astype(np.float64) + 0.5) / 2.0 ** 53
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * math.pi * u2)


def hex_ids(values: np.ndarray, salt: int) -> pa.Array:
    """Criteo's hashed ids: 8 hex digits of a 32-bit hash, built as bytes without Python strings."""
    h = (scramble(values, salt) & np.uint64(0xFFFFFFFF)).astype(">u4").view(np.uint8).reshape(-1, 4)
    chars = np.empty((len(values), 8), dtype=np.uint8)
    chars[:, 0::2], chars[:, 1::2] = _HEX[h >> 4], _HEX[h & 15]
    offsets = np.arange(0, 8 * len(values) + 1, 8, dtype=np.int32)
    return pa.StringArray.from_buffers(len(values), pa.py_buffer(offsets), pa.py_buffer(chars.tobytes()))


def criteo_chunk(rng: np.random.Generator, n: int, seed: int) -> pa.Table:
    """``n`` Criteo-format rows; the click logit sums hashed per-id effects of 8 fields and 3 counts."""
    columns: dict[str, pa.Array] = {}
    logit = np.full(n, -1.6)
    dense = []
    for i in range(1, 14):
        scale = 2.0 ** (i % 7)
        counts = np.floor(rng.exponential(scale, n) ** 1.3).astype(np.float64)
        missing = rng.random(n) < (0.05 + 0.03 * (i % 5))
        dense.append(counts)
        columns[f"I{i}"] = pa.array(counts, mask=missing)
        if i <= 3:
            logit += 0.35 * np.tanh(np.log1p(counts) - 1.0) * np.where(missing, 0.0, 1.0)
    for i, card in enumerate(CRITEO_CARDINALITIES, start=1):
        ranks = power_law(rng, n, card, alpha=1.05 + 0.02 * (i % 5))
        if i in (1, 2, 5, 7, 10, 13, 15, 18):
            logit += 0.45 * unit_effect(ranks, seed * 131 + i)
        ids = hex_ids(ranks, seed * 977 + i)
        p_missing = CRITEO_MISSING.get(f"C{i}", 0.0)
        if p_missing:
            ids = pc.if_else(pa.array(rng.random(n) < p_missing), pa.scalar(""), ids)
        columns[f"C{i}"] = ids
    label = (rng.random(n) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int64)
    return pa.table({"label": pa.array(label), **columns})


def sessions_chunk(rng: np.random.Generator, n: int, first_session: int, seed: int, *, users: int,
                   items: int, session_size: int = 20) -> pa.Table:
    """``n`` impressions (whole sessions) with click and, after a click, conversion labels."""
    sessions = -(-n // session_size)
    session = np.repeat(np.arange(first_session, first_session + sessions), session_size)[:n]
    user = power_law(rng, sessions, users, 0.9)[session - first_session]
    item = power_law(rng, n, items, 1.05)
    category = scramble(item, seed + 3) % np.uint64(1000)
    segment = scramble(user, seed + 5) % np.uint64(50)
    price = np.round(np.exp(3.0 + unit_effect(item, seed + 11)), 2)
    position = np.tile(np.arange(1, session_size + 1), sessions)[:n]
    affinity = unit_effect(category.astype(np.int64) * 64 + segment.astype(np.int64), seed + 13)
    ctr_logit = -1.8 + 0.8 * affinity + 0.5 * unit_effect(item, seed + 17) - 0.06 * position
    click = rng.random(n) < 1.0 / (1.0 + np.exp(-ctr_logit))
    cvr_logit = -2.2 + 0.7 * affinity - 0.4 * (np.log(price) - 3.0) + 0.4 * unit_effect(user, seed + 19)
    conversion = click & (rng.random(n) < 1.0 / (1.0 + np.exp(-cvr_logit)))
    return pa.table({"session_id": session, "user_id": user, "user_segment": segment.astype(np.int64),
                     "item_id": item, "item_category": category.astype(np.int64), "item_price": price,
                     "position": position, "click": click.astype(np.int64),
                     "conversion": conversion.astype(np.int64)})


def history_lengths(rng: np.random.Generator, users: int, mean: float, minimum: int = 20,
                    maximum: int = 5000) -> np.ndarray:
    """Heavy-tailed lengths (lognormal, sigma 1.1) of mean ~``mean``, clipped to [minimum, maximum]."""
    sigma = 1.1
    mu = math.log(max(mean - minimum, 1.0)) - sigma ** 2 / 2
    return np.clip(minimum + rng.lognormal(mu, sigma, users), minimum, maximum).astype(np.int64)


def histories_chunk(rng: np.random.Generator, user_ids: np.ndarray, lengths: np.ndarray, *, items: int,
                    clusters: int, start_time: int = 1_500_000_000) -> pa.Table:
    """The interactions of ``user_ids``: each user draws 80% from their current taste cluster (a power
    law over its items), 20% from the whole catalog, and moves to the next cluster over their history."""
    n = int(lengths.sum())
    user = np.repeat(user_ids, lengths)
    step = np.arange(n) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    home = scramble(user_ids, 1) % np.uint64(clusters)
    drift = (step * 2 // np.repeat(lengths, lengths))  # 0 in the first half of a history, 1 after
    cluster = ((np.repeat(home.astype(np.int64), lengths) + drift) % clusters)
    per_cluster = max(items // clusters, 1)
    local = power_law(rng, n, per_cluster, 1.0)
    item = np.where(rng.random(n) < 0.8, cluster * per_cluster + local, power_law(rng, n, items, 1.0))
    item = np.minimum(item, items - 1)
    timestamp = start_time + np.repeat(scramble(user_ids, 2) % np.uint64(10 ** 7), lengths).astype(np.int64) \
        + step * 600
    return pa.table({"user_id": user, "item_id": item, "timestamp": timestamp})


def _writer_paths(out: Path, index: int, csv: bool) -> list[Path]:
    kinds = ["parquet", "csv"] if csv else ["parquet"]
    return [out / kind / f"part-{index:05d}.{kind}" for kind in kinds]


def _write(table: pa.Table, out: Path, index: int, csv: bool) -> None:
    for path in _writer_paths(out, index, csv):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        if path.suffix == ".parquet":
            pq.write_table(table, tmp, row_group_size=65_536)
        else:
            pa_csv.write_csv(table, tmp)
        os.replace(tmp, path)


def generate(kind: str, rows: int, out: str | Path, *, seed: int = 0, shards: int | None = None,
             users: int | None = None, items: int | None = None, csv: bool | None = None) -> dict:
    """Writes ``rows`` rows of ``kind`` into ``out`` as shards; returns (and writes) the manifest.

    Args:
      kind: ``histories``, ``criteo`` or ``sessions``.
      rows: Rows (interactions, impressions) to write, about (whole histories and sessions).
      out: The folder.
      seed: The seed: the same arguments write the same files.
      shards: Files per format (default: one per ~1M rows, at least 4).
      users: Users (histories: default rows / 144, MovieLens-20M's mean; sessions: rows / 40).
      items: Items (histories: default 27,000; sessions: 1,000,000).
      csv: Also write CSV shards (default: for the rankers' kinds).

    Returns:
      The manifest: kind, rows, shards, files, seconds.
    """
    out = Path(out)
    csv = kind != "histories" if csv is None else csv
    shards = shards or max(4, math.ceil(rows / 1_000_000))
    start, written, index = time.perf_counter(), 0, 0
    per_shard = math.ceil(rows / shards / 20) * 20  # whole sessions per shard
    if kind == "histories":
        users = users or max(rows // 144, 10)
        items = items or 27_000
        lengths = history_lengths(np.random.default_rng(seed), users, rows / users)
        bounds = np.searchsorted(np.cumsum(lengths), np.arange(1, shards) * per_shard)
        for index, block in enumerate(np.split(np.arange(users), bounds)):
            rng = np.random.default_rng([seed, index])
            table = histories_chunk(rng, block, lengths[block], items=items, clusters=max(items // 300, 4))
            _write(table, out, index, csv)
            written += table.num_rows
    else:
        users = users or max(rows // 40, 10)
        items = items or 1_000_000
        for index in range(shards):
            n = min(per_shard, rows - written)
            parts = []
            for part, begin in enumerate(range(0, n, CHUNK_ROWS)):
                rng = np.random.default_rng([seed, index, part])
                m = min(CHUNK_ROWS, n - begin)
                parts.append(criteo_chunk(rng, m, seed) if kind == "criteo" else
                             sessions_chunk(rng, m, (written + begin) // 20, seed, users=users, items=items))
            _write(pa.concat_tables(parts), out, index, csv)
            written += n
    manifest = {"kind": kind, "rows": written, "shards": shards, "seed": seed, "users": users, "items": items,
                "formats": ["parquet", "csv"] if csv else ["parquet"],
                "seconds": round(time.perf_counter() - start, 2)}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def distinct_ids(out: str | Path) -> dict[str, int]:
    """The distinct values of each text column over every Parquet shard of a written data set (one column
    of one shard in memory at a time), e.g. to compare a run's hash buckets with the ids they hold."""
    files = sorted(Path(out, "parquet").glob("*.parquet"))
    schema = pq.read_schema(files[0])
    columns = [f.name for f in schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)]
    counts = {}
    for name in columns:
        seen = [pc.unique(pq.read_table(f, columns=[name]).column(0)) for f in files]
        counts[name] = len(pc.unique(pa.chunked_array(seen)))
    return counts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("kind", choices=("histories", "criteo", "sessions"))
    parser.add_argument("--rows", type=int, required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shards", type=int)
    parser.add_argument("--users", type=int)
    parser.add_argument("--items", type=int)
    parser.add_argument("--no-csv", action="store_true", help="Parquet only")
    parser.add_argument("--count-distinct", action="store_true",
                        help="print the distinct values of each text column of the data set in --out")
    args = parser.parse_args(argv)
    if args.count_distinct:
        counts = distinct_ids(args.out)
        print(json.dumps({**counts, "total": sum(counts.values())}))
        return
    manifest = generate(args.kind, args.rows, args.out, seed=args.seed, shards=args.shards, users=args.users,
                        items=args.items, csv=False if args.no_csv else None)
    print(json.dumps(manifest))


if __name__ == "__main__":
    main()
