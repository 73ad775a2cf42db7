"""A messy listening log of known ground truth, to train a ranker on as a user's own data.

A music app's export: ``plays.csv`` (user_id ``u_00017``, track_id ``t-0042``, played_at with time-zone
offsets, ms_played, skipped ``true``/``false``, source), ``tracks.csv`` (artist, genre, duration,
release year, explicit ``Y``/``N``, tags ``rock|indie``) and ``listeners.csv`` (country, a day-first signup
date, plan, age with blanks and ``unknown``); with duplicate rows, blank track ids and tracks missing from
the catalog.
Each user likes one or two of 8 genres; a play is of a liked genre 80% of the time, and is skipped with
probability 0.15 if so, 0.8 if not. ``ms_played`` gives the skip away (a leak a ranker must refuse).

Prints the AUC of the true skip probability on the rows (the ceiling of any model) and that of a
per-user, per-genre listen rate fitted on a random 80% of the rows and scored on the rest::

    .venv/bin/python bench/listening_log.py --out /tmp/music
    .venv/bin/python -m tfrs_recsys.train deepfm --dataset csv --data /tmp/music/plays.csv \\
        --label-columns skipped --user-column user_id --item-column track_id --items /tmp/music/tracks.csv \\
        --users /tmp/music/listeners.csv --exclude-columns ms_played --skip-bad-rows --output-dir runs/music
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

GENRES = ("rock", "pop", "jazz", "hiphop", "classical", "electronic", "metal", "folk")


def listening_log(out: Path, plays: int = 30_000, users: int = 600, tracks: int = 400,
                  seed: int = 7) -> pd.DataFrame:
    """Writes the three files to ``out``; returns the plays with their true skip probability."""
    rng = np.random.default_rng(seed)
    genre = np.array(GENRES)[np.arange(tracks) % len(GENRES)]
    tags = [f"{g}|{t}" for g, t in zip(genre, rng.choice(["indie", "90s", "chill", "live"], tracks))]
    catalog = pd.DataFrame({"track_id": [f"t-{i:04d}" for i in range(tracks)],
                            "artist": [f"Artist {i // 5}" for i in range(tracks)], "genre": genre,
                            "duration_ms": rng.integers(120_000, 400_000, tracks),
                            "release_year": rng.integers(1965, 2025, tracks),
                            "explicit": rng.choice(["Y", "N"], tracks), "tags": tags})
    age = rng.integers(16, 70, users).astype(str).astype(object)
    age[rng.random(users) < 0.08], age[rng.random(users) < 0.05] = "", "unknown"
    signup = pd.Timestamp("2022-01-01") + pd.to_timedelta(rng.integers(0, 1100, users), unit="D")
    listeners = pd.DataFrame({"user_id": [f"u_{u:05d}" for u in range(users)],
                              "country": rng.choice(["DE", "FR", "US", "GB"], users),
                              "signup": signup.strftime("%d/%m/%Y"),
                              "plan": rng.choice(["free", "premium"], users, p=[0.7, 0.3]), "age": age})
    liked = np.zeros((users, len(GENRES)), dtype=bool)
    for u in range(users):
        liked[u, rng.choice(len(GENRES), 1 + int(rng.random() < 0.5), replace=False)] = True
    user = rng.integers(0, users, plays)
    in_taste = rng.random(plays) < 0.8
    chosen = np.array([rng.choice(np.flatnonzero(liked[u] == t)) for u, t in zip(user, in_taste)])
    track = chosen + len(GENRES) * rng.integers(0, tracks // len(GENRES), plays)
    p_skip = np.where(in_taste, 0.15, 0.8)
    skipped = rng.random(plays) < p_skip
    duration = catalog["duration_ms"].to_numpy()[track]
    moment = pd.Timestamp("2025-03-01") + pd.to_timedelta(rng.integers(0, 60 * 86_400, plays), unit="s")
    offsets = rng.choice([0, 1, 2, -5], plays)
    played_at = [(t + pd.Timedelta(hours=int(o))).strftime("%Y-%m-%dT%H:%M:%S") + f"{int(o):+03d}:00"
                 for t, o in zip(moment, offsets)]
    ms_played = np.where(skipped, rng.integers(3_000, 30_000, plays),
                         (duration * rng.uniform(0.7, 1.0, plays)).astype(int))
    log = pd.DataFrame({"user_id": listeners["user_id"].to_numpy()[user],
                        "track_id": catalog["track_id"].to_numpy()[track], "played_at": played_at,
                        "ms_played": ms_played, "skipped": np.where(skipped, "true", "false"),
                        "source": rng.choice(["playlist", "radio", "search"], plays), "p_skip": p_skip})
    messy = pd.concat([log, log.sample(40, random_state=1)])  # duplicate rows
    messy.loc[messy.sample(25, random_state=2).index, "track_id"] = ""  # blank ids
    messy.loc[messy.sample(30, random_state=3).index, "track_id"] = "t-9999"  # not in the catalog
    out.mkdir(parents=True, exist_ok=True)
    messy.sample(frac=1, random_state=4).drop(columns="p_skip").to_csv(out / "plays.csv", index=False)
    catalog.to_csv(out / "tracks.csv", index=False)
    listeners.to_csv(out / "listeners.csv", index=False)
    return log


def auc(score: np.ndarray, label: np.ndarray) -> float:
    """The AUC of ``score`` for the 0/1 ``label`` (ties counted half)."""
    ranks = pd.Series(score).rank().to_numpy()
    positive = label.astype(bool)
    n_pos, n_neg = positive.sum(), (~positive).sum()
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def pair_rate_auc(users: pd.Series, groups: pd.Series, label: np.ndarray, seed: int = 0) -> float:
    """The AUC, on a random 20% of the rows, of each (user, group)'s label rate on the other 80%, smoothed
    toward the overall rate by two rows' worth: the score of a model that knows the truth's shape."""
    train = np.random.default_rng(seed).random(len(label)) < 0.8
    rates = (pd.DataFrame({"u": users.to_numpy(), "g": np.asarray(groups), "y": label})[train]
             .groupby(["u", "g"])["y"].agg(["sum", "count"]))
    prior = label[train].mean()
    fitted = rates.reindex(pd.MultiIndex.from_arrays([users.to_numpy()[~train], np.asarray(groups)[~train]]))
    rate = ((fitted["sum"].fillna(0) + 2 * prior) / (fitted["count"].fillna(0) + 2)).to_numpy()
    return auc(rate, label[~train])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="the folder for plays/tracks/listeners.csv")
    p.add_argument("--plays", type=int, default=30_000)
    args = p.parse_args(argv)
    log = listening_log(args.out, plays=args.plays)
    skipped = (log["skipped"] == "true").to_numpy()
    genre = log["track_id"].str[2:].astype(int) % len(GENRES)
    print(f"wrote {args.out}/plays.csv ({len(log)} plays), tracks.csv, listeners.csv")
    print(f"skip AUC of the true probability (the ceiling): {auc(log['p_skip'].to_numpy(), skipped):.3f}")
    print(f"skip AUC of a per-user, per-genre skip rate (80/20 random split): "
          f"{pair_rate_auc(log['user_id'], genre, skipped):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
