"""Statistics over result rows: per-seed means over cells, the seed spread, the worst case over attacks,
the leaderboard of a (protocol, dataset), budgets spent and validity warnings."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bench.results.rows import CLEAN, Source
from bench.store import AGGREGATE_SUFFIX, unit_of

if TYPE_CHECKING:
    import pandas as pd


@dataclass
class Stat:
    """A mean over seeds (of per-seed means over cells) with the sample std over seeds, in fractions."""

    mean: float
    std: float | None = None
    n_seeds: int = 0
    partial: str = ""
    best: bool = False

    @property
    def missing(self) -> bool:
        return math.isnan(self.mean)

    def text(self) -> str:
        if self.missing:
            return NA_TEXT
        if self.std is None:
            return f"{100 * self.mean:.1f}"
        return f"{100 * self.mean:.1f} ± {100 * self.std:.1f}"

    def sort_value(self) -> str:
        return "" if self.missing else f"{self.mean:.6f}"


def seed_stat(values: pd.DataFrame | pd.Series) -> Stat:
    """``values``: rows = cells, columns = seeds (a Series: one value per seed). Mean over cells per
    seed, then mean and sample std over the seeds that have a value."""
    import numpy as np

    per_seed = values if values.ndim == 1 else values.mean(axis=0, skipna=True)
    per_seed = per_seed.dropna().to_numpy(dtype=float)
    if per_seed.size == 0:
        return Stat(float("nan"))
    std = float(np.std(per_seed, ddof=1)) if per_seed.size > 1 else None
    return Stat(float(np.mean(per_seed)), std, int(per_seed.size))


def plain_cells(df: pd.DataFrame) -> pd.DataFrame:
    return df[~df["cell"].astype(str).str.endswith(AGGREGATE_SUFFIX)]


def ok_rows(df: pd.DataFrame, metric: str = "auroc") -> pd.DataFrame:
    return df[(df["status"] == "ok") & (df["metric"] == metric)]


def attack_columns(group: pd.DataFrame) -> pd.Series:
    """The leaderboard column of each row: its attack, or ``attack @ eps`` where the group ran an attack
    at several eps values."""
    ok = group[group["status"] == "ok"]
    eps_count = ok.groupby("attack")["eps"].nunique()
    several = {a for a, n in eps_count.items() if n > 1}
    return group.apply(
        lambda r: f"{r['attack']} @ {format_eps(r['eps'])}" if r["attack"] in several else str(r["attack"]),
        axis=1,
    ).astype(str)


def ordered_attacks(values: list[str]) -> list[str]:
    ordered = list(dict.fromkeys(values))
    return sorted(ordered, key=lambda c: 0 if c == CLEAN else 1)


@dataclass
class Leaderboard:
    protocol: str
    dataset: str
    columns: list[str]
    rows: list[dict[str, Any]]
    cells: list[str]
    several_eps: bool


def worst_case_table(ok: pd.DataFrame, attacks: list[str]) -> tuple[pd.DataFrame, bool]:
    """Per (cell, seed): the minimum AUROC over ``attacks`` (columns ``_col``); True when some (cell,
    seed) lacks one of them (the minimum is then over fewer attacks)."""
    rows = ok[ok["_col"].isin(attacks)]
    if rows.empty:
        import pandas as pd

        return pd.DataFrame(), False
    wide = rows.pivot_table(index=["cell", "seed"], columns="_col", values="value", aggfunc="mean")
    partial = bool(wide.reindex(columns=attacks).isna().any(axis=None))
    return wide.min(axis=1, skipna=True).unstack("seed"), partial


def leaderboard(group: pd.DataFrame, warnings: dict | None = None) -> Leaderboard:
    """RODEO Table 1 for one (protocol, dataset): a row per entry, per attack the mean AUROC over cells
    (± std over seeds), the worst case and the clean-minus-worst-case drop; the best per column marked."""
    group = group.copy()
    group["_col"] = attack_columns(group) if len(group) else []
    columns = ordered_attacks(group["_col"].tolist())
    attacks = [c for c in columns if c != CLEAN]
    plain = plain_cells(group)
    ok_all = ok_rows(plain)
    universe = {c: set(ok_all.loc[ok_all["_col"] == c, "cell"]) for c in columns}
    all_cells = list(dict.fromkeys(ok_all["cell"].tolist()))
    rows = []
    for entry in dict.fromkeys(group["_entry"].tolist()):
        mine = plain[plain["_entry"] == entry]
        ok = ok_rows(mine)
        values = {}
        for col in columns:
            part = ok[ok["_col"] == col]
            stat = seed_stat(part.pivot_table(index="cell", columns="seed", values="value", aggfunc="mean"))
            covered, total = part["cell"].nunique(), len(universe[col])
            if 0 < covered < total:
                stat.partial = f"mean over {covered} of {total} cells"
            values[col] = stat
        worst_cells, worst_partial = worst_case_table(ok, attacks)
        worst = seed_stat(worst_cells) if not worst_cells.empty else Stat(float("nan"))
        if worst_partial:
            worst.partial = "some cells lack an attack: minimum over the attacks that ran"
        drop = Stat(float("nan"))
        clean = ok[ok["_col"] == CLEAN].pivot_table(
            index="cell", columns="seed", values="value", aggfunc="mean"
        )
        if not worst_cells.empty and not clean.empty:
            diff = clean.reindex_like(worst_cells) - worst_cells
            drop = seed_stat(diff.dropna(how="all"))
        if not worst.missing and worst_cells.shape[0] < len(all_cells):
            worst.partial = worst.partial or f"over {worst_cells.shape[0]} of {len(all_cells)} cells"
        first = mine.iloc[0] if len(mine) else group[group["_entry"] == entry].iloc[0]
        rows.append(
            {
                "entry": str(entry),
                "method": str(first["method"]),
                "profile": str(first["profile"]),
                "values": values,
                "worst": worst,
                "drop": drop,
                "na": na_note(group[group["_entry"] == entry]),
                "warnings": sum(
                    len((warnings or {}).get(key, [])) for key in unit_keys(group[group["_entry"] == entry])
                ),
            }
        )
    mark_best(rows, columns)
    return Leaderboard(
        protocol=str(group["protocol"].iloc[0]) if len(group) else "",
        dataset=str(group["dataset"].iloc[0]) if len(group) else "",
        columns=columns,
        rows=rows,
        cells=all_cells,
        several_eps=any(" @ " in c for c in columns),
    )


def unit_keys(df: pd.DataFrame) -> set[tuple]:
    return {
        (str(r), str(m), unit_of(str(c)), int(s), str(a))
        for r, m, c, s, a in zip(
            df["run_id"], df["method"], df["cell"], df["seed"], df["attack"], strict=True
        )
    }


def mark_best(rows: list[dict[str, Any]], columns: list[str]) -> None:
    """Mark the best value per column (ties by the shown value all marked): highest AUROC and worst case,
    lowest drop. Nothing is marked with fewer than two values."""
    getters = [(lambda r, c=c: r["values"][c], max) for c in columns]
    getters += [(lambda r: r["worst"], max), (lambda r: r["drop"], min)]
    for get, pick in getters:
        present = [get(r) for r in rows if not get(r).missing]
        if len(present) < 2:
            continue
        best = pick(round(100 * s.mean, 1) for s in present)
        for s in present:
            s.best = round(100 * s.mean, 1) == best


def na_note(rows: pd.DataFrame) -> str:
    """ "n/a on k of n cells: reason; reason" for an entry, or "" when it has no na row."""
    unit_cells = {unit_of(str(c)) for c in plain_cells(rows)["cell"]}
    na = rows[rows["status"] != "ok"]
    if na.empty:
        return ""
    na_cells = {unit_of(str(c)) for c in na["cell"]}
    reasons = "; ".join(dict.fromkeys(str(r) or "no reason recorded" for r in na["reason"]))
    attacks = list(dict.fromkeys(na["attack"].astype(str)))
    all_attacks = list(dict.fromkeys(rows["attack"].astype(str)))
    which = "" if len(attacks) == len(all_attacks) else f" ({', '.join(attacks)})"
    return f"{NA_TEXT} on {len(na_cells)} of {len(unit_cells)} cells{which}: {reasons}"


def format_number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.2f}"


def budget_summary(df: pd.DataFrame) -> list[dict[str, Any]]:
    """Per attack, the eps and the budget per image actually spent, over its ok units only (na rows
    record a zero budget and are excluded). A field whose value varies between units, or is fractional
    (adaptive attacks record an average per image), is marked as an average."""
    out = []
    for attack in ordered_attacks(df["attack"].astype(str).tolist()):
        rows = df[(df["attack"] == attack) & (df["status"] == "ok")]
        na_units = df[(df["attack"] == attack) & (df["status"] != "ok")]
        if rows.empty:
            out.append({"attack": attack, "ran": False, "na_units": len(unit_keys(na_units))})
            continue
        units = rows.assign(_u=rows["cell"].astype(str).map(unit_of))
        units = units.drop_duplicates(["run_id", "method", "profile", "_u", "seed", "attack"])
        eps_values = [float(e) for e in dict.fromkeys(units["eps"].dropna().tolist())]
        entry: dict[str, Any] = {
            "attack": attack,
            "ran": True,
            "units": len(units),
            "na_units": len(unit_keys(na_units)),
            "eps": [eps_entry(e) for e in eps_values],
        }
        for col in ("steps", "restarts", "grad_evals", "queries"):
            values = units[col].dropna().astype(float)
            if values.empty:
                entry[col] = {"text": "—", "average": False}
                continue
            lo, hi, mean = float(values.min()), float(values.max()), float(values.mean())
            average = lo != hi or not float(mean).is_integer()
            text = format_number(mean)
            if lo != hi:
                text += f" (range {format_number(lo)}–{format_number(hi)})"
            entry[col] = {"text": text, "average": average}
        out.append(entry)
    return out


def eps_entry(eps: float) -> dict[str, str]:
    if eps == 0:
        return {"fraction": "0", "steps": "no perturbation", "text": "0"}
    return {"fraction": f"{eps:.4g}", "steps": eps_steps(eps), "text": format_eps(eps)}


def eps_steps(eps: float) -> str:
    """eps in grey levels of an 8-bit image: 0.0314 -> "8 of 255 grey levels"."""
    levels = eps * 255.0
    shown = str(round(levels)) if abs(levels - round(levels)) < 1e-3 else f"{levels:.2f}"
    return f"{shown} of 255 grey levels"


def warning_index(sources: list[Source], df: pd.DataFrame) -> tuple[dict[tuple, list[str]], dict[str, list]]:
    """Validity warnings of the manifests ("<method> <cell> seed <S> <attack>: <message>") by unit
    (run_id, method, cell, seed, attack); lines that name no unit stay with their run."""
    by_unit: dict[tuple, list[str]] = {}
    other: dict[str, list[str]] = {}
    for source in sources:
        lines = [str(w) for w in source.manifest.get("warnings") or []]
        if not lines:
            continue
        run_id = str(source.manifest.get("run_id") or (source.run_ids[0] if source.run_ids else ""))
        units = sorted(unit_keys(source.df), key=lambda k: -len(k[1]))  # longest method name first
        prefixes = {f"{m} {c} seed {s} {a}: ": (r, m, c, s, a) for r, m, c, s, a in units}
        for line in lines:
            for prefix, key in prefixes.items():
                if line.startswith(prefix):
                    by_unit.setdefault(key, []).append(line[len(prefix) :])
                    break
            else:
                other.setdefault(run_id, []).append(line)
    return by_unit, other


def is_aggregate(cells: pd.Series | pd.Index) -> Any:
    """True for aggregate cells such as ``all:mean`` (boolean Series or array, like ``cells``)."""
    return cells.astype(str).str.endswith(AGGREGATE_SUFFIX)


def unique(values: pd.Series) -> list:
    """Distinct values in order of first appearance."""
    return list(dict.fromkeys(values.tolist()))


def summary_table(df: pd.DataFrame, metric: str = "auroc") -> pd.DataFrame:
    """Mean ``value`` per method x attack over ok rows, non-aggregate cells and seeds (NaN when none)."""
    import pandas as pd

    methods, attacks = unique(df["method"]), unique(df["attack"])
    rows = ok_rows(df, metric)
    rows = rows[~is_aggregate(rows["cell"])]
    means = rows.groupby(["method", "attack"], sort=False)["value"].mean()
    table = pd.DataFrame(float("nan"), index=pd.Index(methods, name="method"), columns=attacks)
    for (method, attack), value in means.items():
        table.loc[method, attack] = value
    table.columns.name = "attack"
    return table


def cell_table(df: pd.DataFrame, metric: str = "auroc") -> pd.DataFrame:
    """Mean ``value`` over seeds per (method, cell) x attack, aggregate cells included, NaN when none."""
    import pandas as pd

    attacks = unique(df["attack"])
    pairs = list(dict.fromkeys(zip(df["method"].tolist(), df["cell"].tolist(), strict=True)))
    index = pd.MultiIndex.from_tuples(pairs, names=["method", "cell"])
    if not pairs:
        index = pd.MultiIndex.from_arrays([[], []], names=["method", "cell"])
    means = ok_rows(df, metric).groupby(["method", "cell", "attack"], sort=False)["value"].mean()
    table = pd.DataFrame(float("nan"), index=index, columns=attacks)
    for (method, cell, attack), value in means.items():
        table.loc[(method, cell), attack] = value
    table.columns.name = "attack"
    return table


NA_TEXT = "n/a"


def format_eps(eps: float) -> str:
    """0.0313725 -> "8/255"; other values in plain notation."""
    if eps == 0:
        return "0"
    k = eps * 255.0
    if abs(k - round(k)) < 1e-3 and round(k) > 0:
        return f"{round(k)}/255"
    return f"{eps:g}"


def sha_counts(df: pd.DataFrame) -> list[tuple[str, int]]:
    """(git sha, number of rows) for every sha that produced rows, in order of first appearance."""
    if "git_sha" not in df.columns or df.empty:
        return []
    counts = df["git_sha"].value_counts(sort=False).to_dict()
    return [(str(sha), int(counts[sha])) for sha in unique(df["git_sha"]) if sha not in ("", None)]
