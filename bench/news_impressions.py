"""A news site's impression log of known ground truth, exported as a French office writes it.

``impressions.csv``: Windows-1252, ``;``-separated, day-first times, ``Oui``/``Non`` clicks, a decimal comma
(reading seconds, known only after a click), a ``position dans la page`` column; ``lecteurs.csv``: the
readers' city, sign-up date and ``âge`` (blanks). 1,000 readers each follow one or two of 8 sections; an
impression shows an article of a followed section 40% of the time, else any of 600 articles, and is
clicked with probability ``sigmoid(-2.2 + 2.4 match - 0.15 (position - 1) + 0.2 mobile)``: the article id
says nothing beyond its section.

Prints the AUC of the true click probability (the ceiling of any model) and that of a per-reader,
per-section click rate fitted on a random 80% of the rows and scored on the rest::

    .venv/bin/python bench/news_impressions.py --out /tmp/news
    .venv/bin/python -m tfrs_recsys.train deepfm --dataset csv --data /tmp/news/impressions.csv \\
        --label-columns cliqué --user-column id_lecteur --item-column id_article \\
        --users /tmp/news/lecteurs.csv --exclude-columns temps_de_lecture --output-dir runs/news
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from listening_log import auc, pair_rate_auc  # noqa: E402

SECTIONS = ("Politique", "Économie", "Société", "Culture", "Sport", "Santé", "Médias & Télé", "Planète")
CITIES = ("Paris", "Lyon", "Marseille", "Besançon", "Nîmes", "Orléans", "Saint-Étienne", "Lille")


def news_impressions(out: Path, impressions: int = 25_000, readers: int = 1_000, articles: int = 600,
                     seed: int = 7) -> pd.DataFrame:
    """Writes ``impressions.csv`` and ``lecteurs.csv`` to ``out``; returns the impressions with their true
    click probability (``p_click``) and section (``section``)."""
    rng = np.random.default_rng(seed)
    section = rng.integers(0, len(SECTIONS), articles)
    follows = np.zeros((readers, len(SECTIONS)), dtype=bool)
    for r in range(readers):
        follows[r, rng.choice(len(SECTIONS), 1 + int(rng.random() < 0.5), replace=False)] = True
    reader = rng.integers(0, readers, impressions)
    followed = rng.random(impressions) < 0.4
    article = rng.integers(0, articles, impressions)
    for i in np.flatnonzero(followed):  # an article of one of the reader's sections
        article[i] = rng.choice(np.flatnonzero(follows[reader[i]][section]))
    match = follows[reader, section[article]]
    position = rng.integers(1, 13, impressions)
    device = rng.choice(["mobile", "ordinateur", "tablette"], impressions, p=[0.6, 0.3, 0.1])
    logit = -2.2 + 2.4 * match - 0.15 * (position - 1) + 0.2 * (device == "mobile")
    p_click = 1 / (1 + np.exp(-logit))
    click = rng.random(impressions) < p_click
    moment = pd.Timestamp("2026-11-20") + pd.to_timedelta(np.sort(rng.integers(0, 30 * 86_400, impressions)),
                                                          unit="s")
    reading = [f"{s:.1f}".replace(".", ",") if c else "" for s, c in zip(rng.gamma(2.0, 40.0, impressions),
                                                                           click)]
    log = pd.DataFrame({"id_lecteur": [f"L{r + 1:04d}" for r in reader],
                        "id_article": [f"{a + 1:05d}" for a in article],
                        "horodatage": moment.strftime("%d/%m/%Y %H:%M:%S"),
                        "rubrique": np.array(SECTIONS)[section[article]], "position dans la page": position,
                        "appareil": device, "cliqué": np.where(click, "Oui", "Non"),
                        "temps_de_lecture": reading})
    age = rng.integers(18, 80, readers).astype(str).astype(object)
    age[rng.random(readers) < 0.2] = ""
    signup = pd.Timestamp("2020-01-01") + pd.to_timedelta(rng.integers(0, 2000, readers), unit="D")
    people = pd.DataFrame({"id_lecteur": [f"L{r + 1:04d}" for r in range(readers)],
                           "ville": rng.choice(CITIES, readers),
                           "date_inscription": signup.strftime("%d/%m/%Y"), "âge": age})
    out.mkdir(parents=True, exist_ok=True)
    for frame, name in ((log, "impressions.csv"), (people, "lecteurs.csv")):
        frame.to_csv(out / name, sep=";", index=False, encoding="cp1252", lineterminator="\r\n")
    return log.assign(p_click=p_click, section=section[article])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="the folder for impressions.csv and lecteurs.csv")
    p.add_argument("--impressions", type=int, default=25_000)
    args = p.parse_args(argv)
    log = news_impressions(args.out, impressions=args.impressions)
    clicked = (log["cliqué"] == "Oui").to_numpy()
    print(f"wrote {args.out}/impressions.csv ({len(log)} impressions, CTR {clicked.mean():.3f}) and "
          f"lecteurs.csv")
    print(f"click AUC of the true probability (the ceiling): {auc(log['p_click'].to_numpy(), clicked):.3f}")
    print(f"click AUC of a per-reader, per-section click rate (80/20 random split): "
          f"{pair_rate_auc(log['id_lecteur'], log['section'], clicked):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
