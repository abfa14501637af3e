"""The papers' numbers (``results/published/*.csv``) and ours beside them."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.errors import BadInput
from bench.results.rows import METRIC_NAMES, stand_in
from bench.results.stats import ok_rows, plain_cells, seed_stat

if TYPE_CHECKING:
    import pandas as pd


PUBLISHED_COLUMNS = ("method", "protocol", "dataset", "cell", "attack", "metric", "value", "source")


# Published rows with one of these cells compare with our mean over cells (a paper table's mean column).
MEAN_CELLS = ("", "mean", "all", "*", "avg", "average")


def load_published(folder: Path | None) -> pd.DataFrame:
    """Every ``*.csv`` of ``folder`` (columns method, protocol, dataset, cell, attack, metric, value,
    source). Values are percent, as the papers print them (our own files hold fractions)."""
    import pandas as pd

    empty = pd.DataFrame({c: pd.Series(dtype=str) for c in PUBLISHED_COLUMNS})
    if folder is None or not Path(folder).is_dir():
        return empty
    frames = []
    for path in sorted(Path(folder).glob("*.csv")):
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        missing = [c for c in PUBLISHED_COLUMNS if c not in frame.columns]
        if missing:
            raise BadInput(
                f"{path} lacks the columns {', '.join(missing)}; accepted: {', '.join(PUBLISHED_COLUMNS)}"
            )
        frame = frame[list(PUBLISHED_COLUMNS)].copy()
        frame["value"] = pd.to_numeric(frame["value"], errors="coerce")
        frame = frame.dropna(subset=["value"])
        frame["value"] = frame["value"] / 100.0
        frame["file"] = path.name
        frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else empty


def published_comparison(df: pd.DataFrame, published: pd.DataFrame) -> list[dict[str, Any]]:
    """Published rows that match ours on (method, protocol, dataset, attack) (case-insensitive; a
    :data:`PUBLISHED_ALIASES` name counts as ours): our value (mean over cells for a paper's mean
    column, else the cell's mean over seeds), the difference ours - published in points, and the profile
    ours ran in; ``stand_in`` when ours ran on a stand-in backbone (not the paper's method)."""
    out = []
    if published.empty or df.empty:
        return out
    lower = {c: df[c].astype(str).str.lower() for c in ("method", "protocol", "dataset", "attack")}
    for pub in published.itertuples(index=False):
        name = str(pub.method).lower()
        name = PUBLISHED_ALIASES.get((name, str(pub.protocol).lower()), name)
        mask = (
            (lower["method"] == name)
            & (lower["protocol"] == str(pub.protocol).lower())
            & (lower["dataset"] == str(pub.dataset).lower())
            & (lower["attack"] == str(pub.attack).lower())
        )
        ours = df[mask]
        if ours.empty:
            continue
        metric = str(pub.metric).lower() or "auroc"
        for entry in dict.fromkeys(ours["_entry"].tolist()):
            mine = ours[ours["_entry"] == entry]
            rows = ok_rows(mine, metric)
            cell = str(pub.cell)
            if cell.lower() in MEAN_CELLS:
                rows = plain_cells(rows)
                scope = "mean over cells"
            else:
                rows = rows[rows["cell"] == cell]
                scope = f"cell {cell}"
            stat = seed_stat(rows.pivot_table(index="cell", columns="seed", values="value", aggfunc="mean"))
            profile = ", ".join(dict.fromkeys(mine["profile"].astype(str)))
            diff = None if stat.missing else 100.0 * (stat.mean - float(pub.value))
            out.append(
                {
                    "entry": str(entry),
                    "method": str(mine["method"].iloc[0]),
                    "protocol": str(pub.protocol),
                    "dataset": str(pub.dataset),
                    "attack": str(mine["attack"].iloc[0]),
                    "cell": cell or "mean",
                    "scope": scope,
                    "metric": METRIC_NAMES.get(metric, metric),
                    "published": f"{100.0 * float(pub.value):.1f}",
                    "ours": stat,
                    "diff": "—" if diff is None else f"{diff:+.1f}",
                    "diff_value": "" if diff is None else f"{diff:.4f}",
                    "profile": profile,
                    "reproduction": profile == "paper",
                    "stand_in": stand_in(rows),
                    "source": str(pub.source)
                    + ("" if name == str(pub.method).lower() else f" (published as {pub.method})"),
                    "file": str(pub.file),
                }
            )
    return out


# Published baselines that are one of our methods under another name, per protocol. EOE (Liznerski et al.,
# TMLR 2022, Sec. 3.3) calls "BCE" the one-vs-rest classifier trained with binary cross-entropy, normal
# samples 0 and OE samples 1: our ``oe`` with one inlier class (docs/design.md, "Methods so far").
PUBLISHED_ALIASES: dict[tuple[str, str], str] = {("bce", "nd"): "oe"}
