"""The site's plots, each a function of result rows or stored scores, written as PNG files."""

from __future__ import annotations

import io
import math
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.files import atomic_path, write_public
from bench.results.rows import CLEAN, Source, slug
from bench.results.stats import (
    NA_TEXT,
    Leaderboard,
    cell_table,
    is_aggregate,
    ok_rows,
    ordered_attacks,
    plain_cells,
    seed_stat,
    summary_table,
)
from bench.store import unit_of

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd


PLOT_DPI = 100


@dataclass
class Plot:
    src: str
    alt: str
    caption: str
    kind: str = ""
    extra: dict = field(default_factory=dict)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _label(text: Any, width: int = 28) -> str:
    """A plot label: mathtext's "$" escaped, wrapped so that long names stay readable."""
    return textwrap.fill(str(text), width, break_long_words=True).replace("$", r"\$")


def _save(fig: Any, root: Path, rel: str) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=PLOT_DPI)
    write_public(root / rel, buffer.getvalue())
    return rel


STYLES = ["-", "--", "-.", ":"]


MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]


def _roc(scores: np.ndarray, is_outlier: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    from sklearn.metrics import roc_auc_score, roc_curve

    if len(set(is_outlier.tolist())) < 2:
        return None, None, float("nan")
    fpr, tpr, _ = roc_curve(is_outlier, scores)
    return fpr, tpr, float(roc_auc_score(is_outlier, scores))


def _same_curve(a: tuple, b: tuple) -> bool:
    import numpy as np

    return a[0].shape == b[0].shape and np.allclose(a[0], b[0]) and np.allclose(a[1], b[1])


def _group_identical(series: list[tuple[str, tuple]]) -> list[tuple[list[str], tuple]]:
    """Merge series with identical data: [(names, data)], first occurrence order."""
    groups: list[tuple[list[str], tuple]] = []
    for name, data in series:
        for names, other in groups:
            if _same_curve(data, other):
                names.append(name)
                break
        else:
            groups.append(([name], data))
    return groups


def load_scores(
    source: Source, method: str, cell: str, seed: int, attack: str
) -> dict[str, np.ndarray] | None:
    """The arrays of ``scores/<method>/<unit cell>/seed<S>-<attack>.npz`` for ``cell`` (its set for a
    multi-set cell ``<cell>:<set>``): {"clean", "attacked", "is_outlier"}; None when absent."""
    import numpy as np

    if source.scores_dir is None:
        return None
    root = source.scores_dir.resolve()
    path = (source.scores_dir / method / unit_of(cell) / f"seed{seed}-{attack}.npz").resolve()
    if root not in path.parents or not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as data:
        names = [k[: -len("__clean")] for k in data.files if k.endswith("__clean")]
        wanted = cell.split(":", 1)[1] if ":" in cell else (names[0] if len(names) == 1 else None)
        if wanted not in names:
            return None
        return {
            "clean": np.asarray(data[f"{wanted}__clean"], dtype=float),
            "attacked": np.asarray(data[f"{wanted}__attacked"], dtype=float),
            "is_outlier": np.asarray(data[f"{wanted}__is_outlier"]).astype(bool),
        }


def _near(a: tuple, b: tuple, tol: float = 0.02) -> bool:
    """True when two ROC curves lie within ``tol`` TPR of each other everywhere: one would hide the other."""
    import numpy as np

    grid = np.linspace(0.0, 1.0, 201)
    return bool(np.max(np.abs(np.interp(grid, a[0], a[1]) - np.interp(grid, b[0], b[1]))) < tol)


def roc_plot(root: Path, rel: str, entry: str, cell: str, seed: int, arrays: dict[str, dict]) -> Plot | None:
    """ROC curves, clean and under each attack, of one entry on one cell. Identical curves are drawn once
    and labelled with every attack they belong to; curves that nearly coincide are drawn thinner on top of
    thicker ones, in other dash patterns, and labelled as overlapping."""
    first = next(iter(arrays.values()))
    series = [(CLEAN, _roc(first["clean"], first["is_outlier"]))]
    series += [(a, _roc(v["attacked"], v["is_outlier"])) for a, v in arrays.items() if a != CLEAN]
    series = [(name, data) for name, data in series if data[0] is not None]
    if not series:
        return None
    groups = _group_identical(series)
    notes = []
    for i, (names, data) in enumerate(groups):
        hidden_by = [n for other, odata in groups[:i] if _near(data, odata) for n in other]
        identical = " (identical curves)" if len(names) > 1 else ""
        notes.append(identical + (f" (overlaps {' = '.join(hidden_by)})" if hidden_by else ""))
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.6, 4.2))
    try:
        for i, ((names, (fpr, tpr, auc)), note) in enumerate(zip(groups, notes, strict=True)):
            label = " = ".join(names) + f" (AUROC {100 * auc:.1f})" + note
            width = max(1.0, 2.6 - 0.5 * i)  # later curves thinner, so coinciding ones stay visible
            ax.plot(fpr, tpr, linestyle=STYLES[i % len(STYLES)], linewidth=width, label=_label(label, 34))
        ax.plot([0, 1], [0, 1], color="grey", linewidth=0.8, linestyle=":", label="chance")
        ax.set_xlabel("false positive rate (inliers flagged)")
        ax.set_ylabel("true positive rate (outliers found)")
        ax.set_title(_label(f"{entry}, {cell}, seed {seed}", 50), fontsize=10)
        ax.legend(fontsize=7, loc="lower right")
        fig.tight_layout()
        src = _save(fig, root, rel)
    finally:
        plt.close(fig)
    aucs = "; ".join(
        " = ".join(names) + f" {100 * auc:.1f}" + note
        for (names, (_, _, auc)), note in zip(groups, notes, strict=True)
    )
    return Plot(
        src=src,
        alt=f"ROC curves of {entry} on {cell}, seed {seed}, clean and attacked; AUROC: {aucs}.",
        caption=f"{entry} on {cell} (seed {seed}): ROC clean and under each attack. AUROC {aucs}.",
        kind="roc",
    )


def histogram_plot(
    root: Path, rel: str, entry: str, cell: str, seed: int, arrays: dict[str, dict]
) -> Plot | None:
    """Score histograms of inliers and outliers, clean and under the strongest attack of the cell."""
    import numpy as np

    first = next(iter(arrays.values()))
    attacked = {a: v for a, v in arrays.items() if a != CLEAN}
    panels = [(CLEAN, first["clean"], first["is_outlier"])]
    if attacked:
        aucs = {a: _roc(v["attacked"], v["is_outlier"])[2] for a, v in attacked.items()}
        strongest = min(aucs, key=lambda a: aucs[a] if not math.isnan(aucs[a]) else 2.0)
        panels.append((strongest, attacked[strongest]["attacked"], attacked[strongest]["is_outlier"]))
    everything = np.concatenate([p[1] for p in panels])
    everything = everything[np.isfinite(everything)]
    if everything.size == 0:
        return None
    lo, hi = float(everything.min()), float(everything.max())
    bins = np.linspace(lo, hi if hi > lo else lo + 1.0, 31)
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.0 * len(panels), 3.4), sharey=True, squeeze=False)
    try:
        for ax, (name, scores, is_out) in zip(axes[0], panels, strict=True):
            ax.hist(scores[~is_out], bins=bins, alpha=0.55, label=f"inliers ({int((~is_out).sum())})")
            ax.hist(scores[is_out], bins=bins, alpha=0.55, label=f"outliers ({int(is_out.sum())})")
            ax.set_title(_label("clean" if name == CLEAN else f"under {name}", 36), fontsize=9)
            ax.set_xlabel("outlier score")
            ax.legend(fontsize=7)
        axes[0][0].set_ylabel("images")
        fig.suptitle(_label(f"{entry}, {cell}, seed {seed}", 70), fontsize=10)
        fig.tight_layout()
        src = _save(fig, root, rel)
    finally:
        plt.close(fig)
    which = (
        "clean" if len(panels) == 1 else f"clean and under {panels[1][0]}, the strongest attack on this cell"
    )
    return Plot(
        src=src,
        alt=f"Histograms of the outlier scores of {entry} on {cell}, seed {seed}: inliers and outliers, "
        f"{which}.",
        caption=f"{entry} on {cell} (seed {seed}): scores of inliers and outliers, {which}.",
        kind="hist",
    )


def _merge_points(points: list[tuple[str, float, float]]) -> list[tuple[list[str], float, float]]:
    merged: list[tuple[list[str], float, float]] = []
    for name, x, y in points:
        for names, mx, my in merged:
            if abs(mx - x) < 1e-9 and abs(my - y) < 1e-9:
                names.append(name)
                break
        else:
            merged.append(([name], x, y))
    return merged


def scatter_plot(root: Path, rel: str, board: Leaderboard) -> Plot | None:
    """Clean AUROC against worst-case AUROC, a point per entry; coinciding points share one label."""
    points = [
        (r["entry"], 100 * r["values"][CLEAN].mean, 100 * r["worst"].mean)
        for r in board.rows
        if CLEAN in r["values"] and not r["values"][CLEAN].missing and not r["worst"].missing
    ]
    if not points:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.6, 5.0))
    try:
        merged = _merge_points(points)
        for i, (names, x, y) in enumerate(merged):
            label = " = ".join(names) + (" (same point)" if len(names) > 1 else "")
            ax.scatter([x], [y], marker=MARKERS[i % len(MARKERS)], s=46, label=_label(label, 30), zorder=3)
            if len(names) > 1:  # coinciding methods: say so on the plot, not only in the legend
                ax.annotate(
                    _label(" = ".join(n if len(n) <= 24 else n[:23] + "…" for n in names), 26),
                    (x, y), xytext=(6, -12), textcoords="offset points", fontsize=7,
                )  # fmt: skip
        ax.plot([0, 100], [0, 100], color="grey", linestyle=":", linewidth=0.8, label="no drop")
        ax.axhline(50, color="grey", linestyle="--", linewidth=0.8, label="chance")
        ax.set_xlim(0, 100)
        ax.set_ylim(0, 100)
        ax.set_xlabel("clean AUROC (%)")
        ax.set_ylabel("worst-case AUROC (%)")
        ax.set_title(_label(f"{board.protocol} / {board.dataset}: clean vs robust", 60), fontsize=10)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        fig.tight_layout()
        src = _save(fig, root, rel)
    finally:
        plt.close(fig)
    listed = "; ".join(f"{' and '.join(n)} {x:.1f} clean, {y:.1f} worst case" for n, x, y in merged)
    return Plot(
        src=src,
        alt=f"Scatter of clean against worst-case AUROC for {len(points)} methods on {board.protocol} / "
        f"{board.dataset}: {listed}.",
        caption="Clean against worst-case AUROC (mean over cells and seeds), a marker per method; the dotted "
        "diagonal is no drop. Methods at the same point share one marker, labelled with all their names.",
        kind="scatter",
    )


def grad_evals_plot(root: Path, rel: str, group: pd.DataFrame) -> Plot | None:
    """Mean AUROC against the gradient evaluations per image each attack spent (symlog axis; query-only
    attacks sit at 0): a colour per entry, a marker per attack; points where several attacks of an entry
    coincide are labelled with all of them."""
    ok = plain_cells(ok_rows(group))
    if ok.empty:
        return None
    plt = _pyplot()
    entries = list(dict.fromkeys(ok["_entry"].tolist()))
    attacks = ordered_attacks(ok["attack"].astype(str).tolist())
    fig, ax = plt.subplots(figsize=(7.6, 4.8))
    described = []
    try:
        colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        series = []  # (entry, [(attack, x, y)])
        for entry in entries:
            mine = ok[ok["_entry"] == entry]
            points = []
            for attack in attacks:
                part = mine[mine["attack"] == attack]
                if part.empty:
                    continue
                x = float(part["grad_evals"].astype(float).mean())
                y = 100 * seed_stat(part.pivot_table(index="cell", columns="seed", values="value")).mean
                points.append((attack, x, y))
            series.append((entry, points))
        # Entries with exactly the same points are drawn once and named together.
        groups: list[tuple[list[str], list]] = []
        for entry, points in series:
            for names, other in groups:
                if [(a, round(x, 9), round(y, 9)) for a, x, y in points] == [
                    (a, round(x, 9), round(y, 9)) for a, x, y in other
                ]:
                    names.append(entry)
                    break
            else:
                groups.append(([entry], points))
        for i, (names, points) in enumerate(groups):
            color = colors[i % len(colors)]
            for attack, x, y in points:
                marker = MARKERS[attacks.index(attack) % len(MARKERS)]
                ax.scatter([x], [y], color=color, marker=marker, s=36, zorder=3, alpha=0.85)
            merged = sorted(_merge_points(points), key=lambda p: p[1])
            label = " = ".join(names) + (" (identical)" if len(names) > 1 else "")
            ax.plot([p[1] for p in merged], [p[2] for p in merged], color=color, linewidth=0.9, alpha=0.6,
                    linestyle=STYLES[i % len(STYLES)], label=_label(label))  # fmt: skip
            for attack_names, x, y in merged:
                if len(attack_names) > 1:
                    ax.annotate(_label(" = ".join(attack_names), 18), (x, y), xytext=(5, -11 - 8 * (i % 3)),
                                textcoords="offset points", fontsize=6.5, color=color)  # fmt: skip
            described.append(
                f"{' = '.join(names)}: "
                + ", ".join(f"{' = '.join(n)} {y:.1f} at {x:g}" for n, x, y in merged)
            )
        for j, attack in enumerate(attacks):
            ax.scatter(
                [], [], color="grey", marker=MARKERS[j % len(MARKERS)], label=_label(f"attack {attack}")
            )
        ax.set_xscale("symlog", linthresh=1.0)
        ax.set_xlabel("gradient evaluations per image (mean; symlog scale, query-only attacks at 0)")
        ax.set_ylabel("AUROC (%)")
        ax.set_ylim(0, 100)
        ax.axhline(50, color="grey", linestyle="--", linewidth=0.8)
        ax.set_title("AUROC against the gradient budget spent", fontsize=10)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        fig.tight_layout()
        src = _save(fig, root, rel)
    finally:
        plt.close(fig)
    return Plot(
        src=src,
        alt="AUROC (%) against gradient evaluations per image, per method and attack. "
        + "; ".join(described),
        caption="Mean AUROC over cells and seeds against the mean gradient evaluations per image each attack "
        "spent: a colour per method, a marker per attack; attacks of a method that land on the same point "
        "are labelled together (joined by =), and methods with identical results share one line.",
        kind="grad",
    )


def eps_plot(root: Path, rel: str, group: pd.DataFrame) -> Plot | None:
    """AUROC against eps (in grey levels) per entry and attack, when the group has several eps values;
    identical curves drawn once, labelled with all their names."""
    import numpy as np

    ok = plain_cells(ok_rows(group))
    ok = ok[ok["attack"] != CLEAN]
    if ok["eps"].nunique() < 2:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.6, 4.8))
    described = []
    try:
        curves = []
        for (entry, attack), part in ok.groupby(["_entry", "attack"], sort=False):
            series = []
            for eps, at in part.groupby("eps"):
                stat = seed_stat(at.pivot_table(index="cell", columns="seed", values="value"))
                series.append((eps * 255.0, 100 * stat.mean))
            series.sort()
            xs, ys = np.array([p[0] for p in series]), np.array([p[1] for p in series])
            curves.append((f"{entry} / {attack}", (xs, ys)))
        for i, (names, (xs, ys)) in enumerate(_group_identical(curves)):
            label = " = ".join(names) + (" (identical)" if len(names) > 1 else "")
            ax.plot(
                xs, ys, marker=MARKERS[i % len(MARKERS)], linestyle=STYLES[i % 4], label=_label(label, 34)
            )
            described.append(
                " = ".join(names)
                + ": "
                + ", ".join(f"{y:.1f} at {x:g}/255" for x, y in zip(xs, ys, strict=True))
            )
        ax.set_xlabel("eps (grey levels of 255)")
        ax.set_ylabel("AUROC (%)")
        ax.set_ylim(0, 100)
        ax.set_title("AUROC against eps", fontsize=10)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        fig.tight_layout()
        src = _save(fig, root, rel)
    finally:
        plt.close(fig)
    return Plot(
        src=src,
        alt="AUROC (%) against eps per method and attack. " + "; ".join(described),
        caption="Mean AUROC over cells and seeds against the attack radius eps; curves that coincide are "
        "drawn once and labelled with all their names.",
        kind="eps",
    )


def cell_plots(root: Path, stem: str, group: pd.DataFrame, sources: list[Source]) -> list[Plot]:
    """ROC curves and score histograms per (entry, cell), from the raw scores of the lowest seed."""
    out = []
    ok = plain_cells(ok_rows(group))
    for (entry, cell), part in ok.groupby(["_entry", "cell"], sort=False):
        seed = int(min(part["seed"]))
        at_seed = part[part["seed"] == seed]
        source = sources[int(at_seed["_source"].iloc[0])]
        method = str(at_seed["method"].iloc[0])
        arrays = {}
        for attack in ordered_attacks(at_seed["attack"].astype(str).tolist()):
            loaded = load_scores(source, method, str(cell), seed, attack)
            if loaded is not None:
                arrays[attack] = loaded
        if not arrays:
            continue
        base = f"{stem}/{slug(str(entry))}-{slug(str(cell))}-seed{seed}"
        for maker, suffix in ((roc_plot, "roc"), (histogram_plot, "hist")):
            plot = maker(root, f"{base}-{suffix}.png", str(entry), str(cell), seed, arrays)
            if plot:
                plot.extra = {"entry": str(entry), "cell": str(cell)}
                out.append(plot)
        if source.scores_dir is not None:  # a run folder: its method's artifacts of this cell and seed
            artifacts = source.path / "artifacts" / method / f"{cell}-seed{seed}"
            for plot in artifact_pictures(root, base, artifacts, str(entry), str(cell)):
                plot.extra = {"entry": str(entry), "cell": str(cell)}
                out.append(plot)
    return out


def artifact_pictures(root: Path, base: str, folder: Path, entry: str, cell: str) -> list[Plot]:
    """A method's pictures of one cell and seed (RODEO's generated outliers): each ``NAME.npz`` holding an
    ``image`` array (height x width [x channels], uint8) drawn as ``NAME.png``, or a ``NAME.png`` as it is
    (a run folder of one's own: committed results hold pixels, never pictures)."""
    import numpy as np
    from PIL import Image

    plots = []
    for path in sorted(folder.glob("*.npz")) + sorted(folder.glob("*.png")):
        rel = f"{base}-{slug(path.stem)}.png"
        if path.suffix == ".npz":
            with np.load(path) as data:
                if "image" not in data.files:
                    continue
                image = data["image"]
            buffer = io.BytesIO()
            Image.fromarray(image).save(buffer, format="png")
            write_public(root / rel, buffer.getvalue())
        elif path.with_suffix(".npz").is_file():
            continue  # drawn from its pixels above
        else:
            write_public(root / rel, path.read_bytes())
        alt = f"{entry} on {cell}: {path.stem}, a picture the method wrote of its training (artifacts/)"
        plots.append(Plot(rel, alt, f"{entry}, {cell}: {path.stem}", "artifact"))
    return plots


def _set_ticks(ax: Any, x: Any, names: list) -> None:
    """Category tick labels, slanted when they would overlap."""
    labels = [_plain_label(n) for n in names]
    slant = len(labels) > 4 or max((len(t) for t in labels), default=0) > 12
    ax.set_xticks(x, labels, rotation=25 if slant else 0, ha="right" if slant else "center")


def write_plots(df: pd.DataFrame, plots_dir: Path) -> list[Path]:
    """Write ``auroc_by_attack.png`` and, with more than one cell, ``auroc_by_cell.png``; return the paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    plots_dir = Path(plots_dir)
    plots_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    summary = summary_table(df, "auroc") * 100.0
    methods, attacks = list(summary.index), list(summary.columns)
    fig, ax = plt.subplots(figsize=(max(7.0, 0.9 * len(methods) * max(1, len(attacks)) ** 0.5 + 3), 4.8))
    try:
        x = np.arange(len(methods))
        width = 0.8 / max(1, len(attacks))
        for i, attack in enumerate(attacks):
            heights = summary[attack].to_numpy(dtype=float)
            offsets = x - 0.4 + width * (i + 0.5)
            ax.bar(offsets, np.nan_to_num(heights, nan=0.0), width, label=_plain_label(attack))
            for xo, h in zip(offsets, heights, strict=True):
                if math.isnan(h):
                    ax.text(xo, 1.0, NA_TEXT, ha="center", va="bottom", fontsize=8, rotation=90)
        ax.axhline(50.0, color="grey", linestyle="--", linewidth=1, label="chance")
        _set_ticks(ax, x, methods)
        ax.set_ylim(0, 100)
        ax.set_ylabel("AUROC (%)")
        ax.set_title("Mean AUROC per method and attack (over cells and seeds)")
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        fig.tight_layout()
        target = plots_dir / "auroc_by_attack.png"
        with atomic_path(target) as tmp:
            fig.savefig(tmp, format="png", dpi=100)
        written.append(target)
    finally:
        plt.close(fig)

    by_cell = cell_table(df, "auroc") * 100.0
    by_cell = by_cell[~is_aggregate(by_cell.index.get_level_values("cell"))]
    cells = list(dict.fromkeys(by_cell.index.get_level_values("cell")))
    target = plots_dir / "auroc_by_cell.png"
    if len(cells) > 1:
        fig, ax = plt.subplots(figsize=(max(8.0, 0.8 * len(cells) + 5), 4.8))
        try:
            x = np.arange(len(cells))
            for method in dict.fromkeys(by_cell.index.get_level_values("method")):
                per_cell = by_cell.loc[method].reindex(cells)
                for attack in by_cell.columns:
                    ys = per_cell[attack].to_numpy(dtype=float)
                    if np.isnan(ys).all():
                        continue
                    ax.plot(x, ys, marker="o", label=_plain_label(f"{method} / {attack}"))
            ax.axhline(50.0, color="grey", linestyle="--", linewidth=1, label="chance")
            _set_ticks(ax, x, cells)
            ax.set_ylim(0, 100)
            ax.set_ylabel("AUROC (%)")
            ax.set_title("AUROC per cell (mean over seeds)")
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
            fig.tight_layout()
            with atomic_path(target) as tmp:
                fig.savefig(tmp, format="png", dpi=100)
            written.append(target)
        finally:
            plt.close(fig)
    else:
        # A stale plot from an earlier render of different data would not match this page.
        target.unlink(missing_ok=True)
    return written


def _plain_label(text: Any) -> str:
    """A plot label with mathtext's "$" escaped (no wrapping: the run report's bar charts)."""
    return str(text).replace("$", r"\$")
