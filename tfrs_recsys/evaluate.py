"""``python -m tfrs_recsys.evaluate``: AUC, GAUC and per-session NDCG from a predictions file.

The evaluator of an EasyRec ESMM pipeline, for any model's scores::

    python -m tfrs_recsys.evaluate --predictions preds.parquet --group-by user_id \\
        --click-label click --click-score p_click --conversion-label conversion --conversion-score p_conv \\
        [--ctcvr-score p_ctcvr] [--ndcg-k 38 --gains booking=5,click=1 --ndcg-group-by srch_id] \\
        [--json out.json]
    # a ranker run's test rows, scored by its best weights:
    python -m tfrs_recsys.evaluate --run-dir runs/esmm-...
    # a retrieval run's held-out users, ranked over the catalog (NDCG@k, Recall@k, MRR@k):
    python -m tfrs_recsys.evaluate --run-dir runs/retrieval-... --part validation

Tasks (ESMM's three)::

    task    rows            label                  score
    ctr     all             click                  --click-score
    cvr     clicked only    conversion             --conversion-score     (pCVR = P(conversion | click))
    ctcvr   all             click * conversion     --ctcvr-score, else click score * conversion score

``auc``: P(score_pos > score_neg) + 1/2 P(tie) (:func:`tfrs_recsys.metrics.auc`). ``gauc``:
sum_g n_g auc_g / sum_g n_g over the ``--group-by`` groups holding both classes; one-class groups are
skipped and counted (:func:`tfrs_recsys.metrics.gauc`).

NDCG@k per ``--ndcg-group-by`` group (a search, a page view): gain g_conversion on a clicked conversion,
g_click on another click, else 0; DCG = sum_i (2^gain_i - 1) / log2(i + 1), divided by the DCG of the
ideal order; groups without any gain are skipped and counted. Rows are ranked by ``--ndcg-score``, or
else by the expected gain of the model's probabilities::

    E[2^gain - 1] = (2^g_click - 1) (p_ctr - p_ctcvr) + (2^g_conversion - 1) p_ctcvr

the session NDCG the rankers report while training (:func:`tfrs_recsys.metrics.click_conversion_ndcg`).
The Expedia hotel-search competition is ``--ndcg-k 38 --gains booking=5,click=1``.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from tfrs_recsys import metrics as M
from tfrs_recsys import paths, runs
from tfrs_recsys.data.entities import id_text
from tfrs_recsys.data.errors import DataError
from tfrs_recsys.errors import UserError
from tfrs_recsys.predictions import (
    binary_values,
    finite_values,
    group_codes,
    probabilities,
    read_predictions,
)

# Words a --gains key may use for each label, besides the label column's own name.
_ROLE_WORDS = {"click": "click", **dict.fromkeys(("conversion", "booking", "purchase"), "conversion")}


def parse_gains(text: str, *, click_label: str, conversion_label: str | None) -> dict[str, float]:
    """``"booking=5,click=1"`` -> ``{"conversion": 5.0, "click": 1.0}``.

    A key is a role (``click``, ``conversion``; ``booking`` and ``purchase`` mean conversion) or the
    name of the click / conversion label column.

    Args:
      text: the ``--gains`` flag.
      click_label: the click label column.
      conversion_label: the conversion label column, if any.

    Returns:
      ``{role: gain}``.
    """
    names = {**_ROLE_WORDS, click_label: "click",
             **({conversion_label: "conversion"} if conversion_label else {})}
    gains: dict[str, float] = {}
    for part in (p.strip() for p in text.split(",") if p.strip()):
        key, sep, value = part.partition("=")
        role = names.get(key.strip())
        if not sep or role is None:
            raise DataError(f"--gains entry {part!r} is not <label>=<gain> with a known label",
                            fix=f"write e.g. booking=5,click=1; labels: {sorted(names)}")
        try:
            gain = float(value)
        except ValueError:
            raise DataError(f"--gains entry {part!r}: {value!r} is not a number",
                            fix="write e.g. click=1") from None
        if not math.isfinite(gain) or gain < 0:
            raise DataError(f"--gains entry {part!r}: a gain must be a finite number >= 0",
                            fix="write e.g. click=1")
        if role == "conversion" and not conversion_label:
            raise DataError(f"--gains entry {part!r} needs the conversion label",
                            fix="pass --conversion-label")
        gains[role] = gain
    if not gains:
        raise DataError("--gains is empty", fix="write e.g. booking=5,click=1")
    return gains


def _task(labels: np.ndarray, scores: np.ndarray, groups: np.ndarray | None, label: str, score: str) -> dict:
    out = {"label": label, "score": score, "rows": int(labels.size), "positives": int(labels.sum()),
           "auc": M.auc(labels, scores) if labels.size else float("nan")}
    if groups is not None:
        value, used, skipped = M.gauc(labels, scores, groups) if labels.size else (float("nan"), 0, 0)
        out.update(gauc=value, groups_used=used, groups_skipped=skipped)
    return out


def evaluate_predictions(frame: pd.DataFrame, *, click_label: str, click_score: str,
                         conversion_label: str | None = None, conversion_score: str | None = None,
                         ctcvr_score: str | None = None, group_by: str | None = None,
                         ndcg_k: int | None = None, gains: Mapping[str, float] | None = None,
                         ndcg_group_by: str | None = None, ndcg_score: str | None = None,
                         source: str = "predictions") -> dict:
    """Every metric of the module docstring; ``frame`` holds the named label, score and group columns.

    Args:
      frame: the predictions.
      click_label, click_score: the CTR task's columns.
      conversion_label, conversion_score: the CVR task's columns (both or neither).
      ctcvr_score: the CTCVR score column (default: click score x conversion score).
      group_by: the GAUC group column.
      ndcg_k: compute NDCG@k when given.
      gains: NDCG gains by role (default :data:`tfrs_recsys.metrics.NDCG_GAINS`).
      ndcg_group_by: the NDCG group column (default ``group_by``).
      ndcg_score: the column to rank by (default: the expected gain).
      source: the file name, for messages.

    Returns ``{"source", "rows", "group_by", "tasks": {task: {rows, positives, auc[, gauc, groups_used,
    groups_skipped]}}, "ndcg": {...} | None, "notes": [...], "metrics": flat {"ctr_auc", ..., "ndcg@k"}}``.
    """
    if (conversion_label is None) != (conversion_score is None):
        raise DataError("the conversion task needs both its label and its score",
                        fix="pass --conversion-label and --conversion-score together, or neither")
    if ctcvr_score and not conversion_label:
        raise DataError("--ctcvr-score needs the conversion label", fix="pass --conversion-label")
    missing = [c for c in (click_label, click_score, conversion_label, conversion_score, ctcvr_score,
                           group_by, ndcg_group_by, ndcg_score) if c and c not in frame.columns]
    if missing:
        raise DataError(f"column(s) {missing} not in the predictions; it has {list(frame.columns)}",
                        path=source, column=missing[0], fix="name existing columns in the flags")
    notes: list[str] = []
    groups = group_codes(frame, group_by, notes) if group_by else None
    click = binary_values(frame, click_label, source)
    p_ctr = finite_values(frame, click_score, source)
    tasks = {"ctr": _task(click, p_ctr, groups, click_label, click_score)}
    conversion = p_ctcvr = None
    if conversion_label:
        conversion = binary_values(frame, conversion_label, source)
        p_cvr = finite_values(frame, conversion_score, source)
        clicked = click > 0.5
        tasks["cvr"] = _task(conversion[clicked], p_cvr[clicked], None if groups is None else groups[clicked],
                             conversion_label, conversion_score)
        tasks["cvr"]["rows_note"] = "clicked rows only"
        unclicked = int(((conversion > 0.5) & ~clicked).sum())
        if unclicked:
            notes.append(f"{unclicked} row(s) have {conversion_label} = 1 without a click: CTCVR and NDCG "
                         f"count them as not converted, CVR leaves them out")
        p_ctcvr = (finite_values(frame, ctcvr_score, source) if ctcvr_score
                   else probabilities(frame, click_score, source, "CTCVR = CTR x CVR")
                   * probabilities(frame, conversion_score, source, "CTCVR = CTR x CVR"))
        tasks["ctcvr"] = _task(click * conversion, p_ctcvr, groups, f"{click_label} * {conversion_label}",
                               ctcvr_score or f"{click_score} * {conversion_score}")
    if gains is not None and ndcg_k is None:
        raise DataError("--gains sets the NDCG gains, but no --ndcg-k was given",
                        fix="pass --ndcg-k, e.g. 38")
    ndcg = None if ndcg_k is None else _ndcg(frame, ndcg_k, gains, ndcg_group_by or group_by, ndcg_score,
                                             click, conversion, p_ctcvr, click_score, source)
    result = {"source": source, "rows": len(frame), "group_by": group_by, "tasks": tasks, "ndcg": ndcg,
              "notes": notes}
    return {**result, "metrics": _flat(result)}


def _ndcg(frame, k, gains, group_by, score_column, click, conversion, p_ctcvr, click_score, source) -> dict:
    if k < 1:
        raise DataError(f"--ndcg-k must be >= 1, got {k}", fix="pass e.g. --ndcg-k 38")
    if not group_by:
        raise DataError("NDCG is computed per group (search, session), but no group column was given",
                        fix="pass --ndcg-group-by (or --group-by)")
    gains = dict(gains or {r: g for r, g in M.NDCG_GAINS.items() if r == "click" or conversion is not None})
    g_click, g_conv = gains.get("click", 0.0), gains.get("conversion", 0.0)
    if conversion is None:
        if g_conv:
            raise DataError("a conversion gain needs the conversion label", fix="pass --conversion-label")
        conversion = p_ctcvr = np.zeros_like(click)
    scores, p_ctr, ranked_by = None, None, score_column
    if score_column:
        scores = finite_values(frame, score_column, source)
    else:
        p_ctr = probabilities(frame, click_score, source, "ranking by expected gain")
        ranked_by = (f"expected gain {2 ** g_click - 1:g} * (p_ctr - p_ctcvr) + {2 ** g_conv - 1:g} * p_ctcvr"
                     if g_conv else click_score)
    gains = {"click": g_click, "conversion": g_conv}
    value, used, skipped = M.click_conversion_ndcg(click, conversion, p_ctr, p_ctcvr,
                                                   group_codes(frame, group_by), k=k, gains=gains,
                                                   scores=scores)
    return {"k": int(k), "value": value, "group_by": group_by, "groups_used": used, "groups_skipped": skipped,
            "gains": gains, "ranked_by": ranked_by}


def _flat(result: dict) -> dict[str, float]:
    out = {f"{task}_{name}": m[name] for task, m in result["tasks"].items() for name in ("auc", "gauc")
           if name in m}
    if result["ndcg"]:
        out[f"ndcg@{result['ndcg']['k']}"] = result["ndcg"]["value"]
    return out


def _fmt(value) -> str:
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.4f}"
    return "-" if value is None else f"{value:,}"


def format_report(result: dict) -> str:
    """The table ``main`` prints.

    Args:
      result: the output of :func:`evaluate_predictions`.

    Returns:
      The report's lines, joined.
    """
    lines = [f"predictions: {result['source']} ({result['rows']:,} rows)"]
    rows = [("task", "rows", "positives", "AUC", "GAUC", "groups used", "groups skipped")]
    rows += [(task + (" (clicked rows)" if task == "cvr" else ""),
              *(_fmt(m.get(k)) for k in ("rows", "positives", "auc", "gauc", "groups_used",
                                         "groups_skipped")))
             for task, m in result["tasks"].items()]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines += ["  ".join([r[0].ljust(widths[0]), *(cell.rjust(w) for cell, w in zip(r[1:], widths[1:]))])
              for r in rows]
    lines.append(f"GAUC: impression-weighted mean of the AUC per {result['group_by']}; groups whose rows are "
                 f"all one class have no AUC and are skipped." if result["group_by"]
                 else "GAUC: not computed (pass --group-by).")
    if n := result["ndcg"]:
        gains = ", ".join(f"{role}={g:g}" for role, g in n["gains"].items() if g)
        lines.append(f"NDCG@{n['k']} per {n['group_by']}: {_fmt(n['value'])} over {n['groups_used']:,} "
                     f"groups ({n['groups_skipped']:,} skipped: no positive gain); gains {gains}, else 0; "
                     f"ranked by {n['ranked_by']}")
    lines += [f"note: {note}" for note in result["notes"]]
    return "\n".join(lines)


def predict_run(run_dir: str | Path, part: str = "test") -> tuple[pd.DataFrame, dict[str, str | None]]:
    """Score one part of a ranker run's split with its best weights.

    The split is rebuilt as the run made it (same data, config and seed; a streamed run's hash or time cuts).
    Returns the predictions (the part's session / user / item columns, its labels, ``p_<output>`` per model
    output) and the evaluator's column arguments for them.

    Args:
      run_dir: an esmm or deepfm run directory.
      part: ``test`` or ``validation``.

    Returns:
      (predictions, column arguments of :func:`evaluate_predictions`).
    """
    from tfrs_recsys.training import rankers, stream

    run, model, spec = runs.load_ranker(run_dir)
    run.require_complete(allow_incomplete=True)
    keys = [c for c in dict.fromkeys((spec.session_column, spec.user_column, spec.item_column)) if c]
    cfg = run.config
    if stream.should_stream(cfg):  # the run's hashed split of the files, read as training read it
        from tfrs_recsys.data import streaming

        table = streaming.open_table(cfg.data_dir, labels=cfg.label_columns, user_column=cfg.user_column,
                                     session_column=cfg.session_column, item_column=cfg.item_column,
                                     column_types=cfg.column_types)
        stream.split_as_configured(table, cfg)
        batches = list(streaming.read_part(table, table.files, streaming.PARTS.index(part), cfg.seed))
        outputs, _ = stream.score(model, batches, spec)
        frame = pd.concat([b.select([*keys, *spec.labels]).to_pandas() for b in batches], ignore_index=True)
    else:
        _, split = rankers.load_and_split(cfg, run.model_name)
        frame = split.parts().get(part)
        if frame is None:
            raise DataError(f"the run's split has no {part} part", path=str(run_dir), fix="pass --part test")
        outputs = rankers.predict(model, frame, spec)
    predictions = frame[[*keys, *spec.labels]].reset_index(drop=True)
    for key in keys:  # ids are text, as training read them (a Parquet column of ids and nulls is float)
        predictions[key] = id_text(predictions, key)[0]
    for output, values in outputs.items():
        predictions[f"p_{output}"] = np.asarray(values, dtype=np.float64)  # one file schema for both paths
    columns = {"click_label": spec.labels[0], "click_score": "p_ctr",
               "group_by": rankers.group_column(spec, frame), "ndcg_group_by": spec.session_column}
    if len(spec.labels) == 2:
        columns.update(conversion_label=spec.labels[1], conversion_score="p_cvr", ctcvr_score="p_ctcvr")
    return predictions, columns


# The column flags (``--click-label``, ...) and their help; with --run-dir they default to the run's columns.
_COLUMN_ARGS = {
    "click_label": "default: click (--run-dir: the run's first label)", "click_score": "default: p_ctr",
    "conversion_label": "default with --conversion-score: conversion",
    "conversion_score": "enables the CVR and CTCVR tasks",
    "ctcvr_score": "default: click score x conversion score",
    "group_by": "GAUC groups, e.g. user_id (no GAUC without it)",
    "ndcg_group_by": "NDCG groups (default: --group-by), e.g. srch_id",
    "ndcg_score": "rank by this column (default: the expected gain)"}


def _retrieval_report(args: argparse.Namespace, given: Mapping[str, str]) -> int:
    """``--run-dir`` of a retrieval run: its top-k metrics on ``--part``, printed (and to ``--json``)."""
    from tfrs_recsys.training.retrieval import evaluate_run

    ranker_only = [f"--{k.replace('_', '-')}" for k in given] + (
        ["--ndcg-k"] if args.ndcg_k is not None else []) + (["--gains"] if args.gains is not None else [])
    if ranker_only:
        raise UserError(f"{', '.join(ranker_only)}: only for ranker predictions, not for a retrieval run",
                        fix="leave them out: a retrieval run is ranked over its catalog with its own metrics")
    runs.open_run(args.run_dir, ("retrieval",)).require_complete(allow_incomplete=True)
    result = evaluate_run(args.run_dir, args.part)
    print(f"retrieval run {args.run_dir}, {args.part} users ranked over the catalog:")
    for name, value in result.items():
        print(f"  {name:<14} {_fmt(value)}")
    if args.json:
        paths.makedirs(paths.parent(args.json))
        paths.write_text(args.json, json.dumps(runs.jsonable(result), indent=2) + "\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit status (2 on a user error)."""
    parser = argparse.ArgumentParser(
        prog="python -m tfrs_recsys.evaluate", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="AUC and GAUC of CTR, CVR (clicked rows) and CTCVR, and NDCG@k per session, from a "
                    "predictions file or a ranker run.",
        epilog="Expedia competition metric: --ndcg-k 38 --gains booking=5,click=1")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--predictions", help="Parquet, CSV or TSV file with labels and scores")
    source.add_argument("--run-dir", help="an esmm/deepfm run directory: score its held-out rows first "
                                          "(written to <run-dir>/predictions_<part>.parquet); a retrieval "
                                          "run: rank its held-out users over the catalog")
    parser.add_argument("--part", default="test", choices=("test", "validation"), help="with --run-dir")
    for name, text in _COLUMN_ARGS.items():
        parser.add_argument(f"--{name.replace('_', '-')}", help=text)
    parser.add_argument("--ndcg-k", type=int, help="compute NDCG@k per --ndcg-group-by group")
    parser.add_argument("--gains", help="NDCG gains, e.g. booking=5,click=1 (default conversion=2,click=1)")
    parser.add_argument("--json", help="also write the results as JSON here")
    args = parser.parse_args(argv)
    if args.json and paths.isdir(args.json):
        parser.error(f"--json {args.json} is a directory; name the file to write, e.g. "
                     f"{args.json}/metrics.json")
    given = {k: getattr(args, k) for k in _COLUMN_ARGS if getattr(args, k)}
    try:
        if args.run_dir and runs.open_run(args.run_dir).model_name == "retrieval":
            return _retrieval_report(args, given)
        if args.run_dir:
            frame, columns = predict_run(args.run_dir, args.part)
            path = paths.join(args.run_dir, runs.PREDICTIONS.format(part=args.part))
            paths.write_parquet(frame, path, index=False)
            print(f"wrote {path}")
            columns.update(given)
            source_name = str(path)
        else:
            columns = {"click_label": "click", "click_score": "p_ctr", **given}
            if columns.get("conversion_score"):
                columns.setdefault("conversion_label", "conversion")
            groups = ("group_by", "ndcg_group_by")
            frame = read_predictions(args.predictions,
                                     numeric=[c for k, c in columns.items() if k not in groups],
                                     other=[columns[k] for k in groups if k in columns])
            source_name = args.predictions
        gains = parse_gains(args.gains, click_label=columns["click_label"],
                            conversion_label=columns.get("conversion_label")) if args.gains else None
        result = evaluate_predictions(frame, ndcg_k=args.ndcg_k, gains=gains, source=source_name,
                                      **{k: columns.get(k) for k in _COLUMN_ARGS})
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_report(result))
    if args.json:
        paths.makedirs(paths.parent(args.json))
        paths.write_text(args.json, json.dumps(runs.jsonable(result), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
