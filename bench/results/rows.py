"""Reading stored results: a run folder's results.csv and manifest.json, or a bare results CSV, and
several of them combined into one frame (RobustBench's rule: the rows are the data, pages a function of
them)."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.errors import BadInput
from bench.store import COLUMNS, LEGACY_COLUMNS

# Columns a results file may lack (written before them): read as empty. ``backbone`` names the backbone a
# method ran on; one starting with "embedded" is the harness's small stand-in for the paper's model.
OPTIONAL_COLUMNS = ("backbone", "warnings")
STAND_IN_PREFIX = "embedded"
STAND_IN_NOTE = "stand-in backbone: not the paper's method"


def row_columns() -> list[str]:
    """The columns of a row as the results model holds it: the store's, then the optional ones."""
    return [*COLUMNS, *(c for c in OPTIONAL_COLUMNS if c not in COLUMNS)]


def stand_in(rows: pd.DataFrame) -> bool:
    """Whether any of ``rows`` ran on a stand-in backbone (``backbone`` starting with "embedded")."""
    if "backbone" not in rows.columns:
        return False
    return bool(rows["backbone"].astype(str).str.startswith(STAND_IN_PREFIX).any())


if TYPE_CHECKING:
    import pandas as pd


RESULTS_FILE = "results.csv"


MANIFEST_FILE = "manifest.json"


_FLOAT_COLUMNS = ("value", "eps", "fit_seconds", "attack_seconds")


_INT_COLUMNS = ("seed", "steps", "restarts", "grad_evals", "queries", "n_in", "n_out")


def load_results(run_dir: Path) -> pd.DataFrame:
    """Read ``run_dir/results.csv``: text columns stay text, value/eps float, seed and budgets int."""
    path = Path(run_dir) / RESULTS_FILE
    if not path.is_file():
        raise BadInput(f"no {RESULTS_FILE} in {run_dir}")
    return read_results_file(path)


def read_results_file(path: Path) -> pd.DataFrame:
    """Read a tidy results CSV at ``path`` (any name) with the dtypes of :func:`load_results`."""
    import pandas as pd

    try:
        # Everything as text first, so that a method called "NA" or an empty reason stays a string.
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        df = pd.DataFrame({c: pd.Series(dtype=str) for c in COLUMNS})
    except (ValueError, OSError) as error:  # not UTF-8, not CSV (ParserError is a ValueError), unreadable
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:120]
        raise BadInput(f"{path} is not a readable results CSV ({reason}); accepted: a results CSV") from None
    for col in _FLOAT_COLUMNS:
        if col in df.columns:
            df[col] = pd.to_numeric(df[col], errors="coerce").astype(float)
    for col in _INT_COLUMNS:
        if col in df.columns:
            df[col] = _as_int(pd.to_numeric(df[col], errors="coerce"))
    if "seed" in df.columns and df["seed"].dtype != "int64":  # a missing, fractional, infinite or huge seed
        raise BadInput(
            f"{path} has a seed that is not an integer; accepted: a results CSV with integer seeds"
        )
    return df


def _as_int(col: pd.Series) -> pd.Series:
    """int64 when complete and integral, nullable Int64 when some are missing, float otherwise (also for
    inf and integers beyond int64, which a malformed file may hold)."""
    present = col.dropna()
    if not ((present == present.round()) & (present.abs() < 2**62)).all():
        return col.astype(float)
    return col.astype("int64") if len(present) == len(col) else col.astype("Int64")


def load_manifest(run_dir: Path) -> dict[str, Any]:
    """Read ``run_dir/manifest.json`` ({} when it is missing)."""
    path = Path(run_dir) / MANIFEST_FILE
    if not path.is_file():
        return {}
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as error:  # not UTF-8, not JSON, unreadable
        raise BadInput(
            f"{path} is not a readable JSON file ({type(error).__name__}); accepted: a run's manifest"
        ) from None
    if not isinstance(manifest, dict):
        raise BadInput(f"{path} is not a JSON object")
    return manifest


@dataclass
class Source:
    """One input: a run folder (results.csv, manifest.json, scores/) or a bare results CSV."""

    path: Path
    df: pd.DataFrame
    manifest: dict[str, Any]
    scores_dir: Path | None
    slug: str
    results_name: str
    superseded: int = 0
    shown_path: str = ""  # how a published page names the input (bench.site: relative to the inputs)

    @property
    def run_ids(self) -> list[str]:
        return [str(r) for r in dict.fromkeys(self.df["run_id"].tolist())]


def load_source(path: Path, index: int = 0) -> Source:
    """Read a run folder or a results CSV; BadInput naming the path when it is neither."""
    path = Path(path)
    if path.is_dir():
        results = path / RESULTS_FILE
        if not results.is_file():
            raise BadInput(f"no {RESULTS_FILE} in {path}; accepted: a run folder or a results CSV file")
        manifest = load_manifest(path)
        scores = path / "scores"
        scores_dir = scores if scores.is_dir() else None
    elif path.is_file() and path.suffix == ".csv":
        results, manifest, scores_dir = path, {}, None
    else:
        raise BadInput(f"{path} is neither a run folder nor a .csv file")
    df = read_results_file(results)
    missing = [c for c in LEGACY_COLUMNS if c not in df.columns]
    if missing:
        raise BadInput(
            f"{results} lacks the columns {', '.join(missing)}; accepted: the columns of results.csv"
        )
    for column in ("attack_hash", "detector_digest", *OPTIONAL_COLUMNS):  # files from before these columns
        if column not in df.columns:
            df[column] = ""
    df = df[row_columns()].copy()
    name = path.stem if path.is_file() else path.name
    return Source(
        path=path,
        df=df,
        manifest=manifest,
        scores_dir=scores_dir,
        slug=f"{index:02d}-{slug(str(name))}",
        results_name=RESULTS_FILE if path.is_dir() else path.name,
    )


def slug(text: str) -> str:
    """A file-name-safe form of ``text``; names that had to change get a short hash (no collisions)."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")[:60] or "x"
    if safe == text:
        return safe
    return f"{safe}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def combine(sources: list[Source]) -> pd.DataFrame:
    """All rows with ``_source`` (input index), ``_hyper`` (the method's config as run, JSON) and ``_entry``
    (the leaderboard row: the method, plus the differing hyperparameters where one (method, profile) ran
    with several). A row repeated by a later input (same method, config, profile, protocol, dataset, cell,
    seed, attack, eps and metric) replaces the earlier one; each source counts its superseded rows."""
    import pandas as pd

    frames = []
    for i, source in enumerate(sources):
        frame = source.df.copy()
        frame["_source"] = i
        config = source.manifest.get("config") if isinstance(source.manifest.get("config"), dict) else {}
        methods = config.get("methods") if isinstance(config.get("methods"), dict) else {}
        frame["_hyper"] = [
            json.dumps(methods[m], sort_keys=True, default=str) if m in methods else ""
            for m in frame["method"]
        ]
        modified = attack_modifications(config)
        frame["_attack_mod"] = [modified.get(a, "") for a in frame["attack"]]
        frames.append(frame)
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=[*row_columns(), "_source"])
    # Rows without a manifest (a bare CSV) join the one recorded configuration of their (method, profile).
    known = df[df["_hyper"] != ""].groupby(["method", "profile"])["_hyper"].unique()
    for (method, profile), hypers in known.items():
        if len(hypers) == 1:
            unknown = (df["method"] == method) & (df["profile"] == profile) & (df["_hyper"] == "")
            df.loc[unknown, "_hyper"] = hypers[0]
    if "_attack_mod" not in df.columns:
        df["_attack_mod"] = ""
    if "attack_hash" not in df.columns:
        df["attack_hash"] = ""
    # the attack's code and settings too: a weakened attack's rows never replace the profile's
    key = ["method", "profile", "_hyper", "protocol", "dataset", "cell", "seed", "attack", "attack_hash",
           "_attack_mod", "eps", "metric"]  # fmt: skip
    superseded = df.duplicated(key, keep="last")
    for i, count in df[superseded].groupby("_source").size().items():
        sources[int(i)].superseded = int(count)
    df = df[~superseded].reset_index(drop=True)
    df["_entry"] = [
        f"{entry} [modified attack: {mod}]" if mod else entry
        for entry, mod in zip(entry_labels(df), df["_attack_mod"], strict=True)
    ]
    return df


def attack_modifications(config: dict) -> dict[str, str]:
    """Per attack of a run's manifest config, its settings that differ from the profile's budget (the
    ``--set`` values, e.g. ``pgd.step_factor=0.25``); attacks run as the profile says are left out."""
    attacks = config.get("attacks") if isinstance(config.get("attacks"), dict) else {}
    return {
        str(name): ", ".join(f"{name}.{k}={v}" for k, v in sorted(settings.items()))
        for name, settings in attacks.items()
        if isinstance(settings, dict) and settings
    }


def entry_labels(df: pd.DataFrame) -> list[str]:
    variants: dict[tuple[str, str], list[str]] = {}
    for method, profile, hyper in zip(df["method"], df["profile"], df["_hyper"], strict=True):
        variants.setdefault((method, profile), [])
        if hyper not in variants[(method, profile)]:
            variants[(method, profile)].append(hyper)
    labels: dict[tuple[str, str, str], str] = {}
    for (method, profile), hypers in variants.items():
        if len(hypers) == 1:
            labels[(method, profile, hypers[0])] = str(method)
            continue
        parsed = [json.loads(h) if h else None for h in hypers]
        recorded = [p for p in parsed if isinstance(p, dict)]
        keys = sorted({k for p in recorded for k in p})
        differing = [k for k in keys if len({json.dumps(p.get(k), default=str) for p in recorded}) > 1]
        for hyper, p in zip(hypers, parsed, strict=True):
            if p is None:
                variant = "hyperparameters not recorded"
            else:
                variant = ", ".join(f"{k}={p.get(k)}" for k in differing) or "same hyperparameters"
            labels[(method, profile, hyper)] = f"{method} [{variant}]"
    return [labels[k] for k in zip(df["method"], df["profile"], df["_hyper"], strict=True)]


METRIC_NAMES = {
    "auroc": "AUROC",
    "fpr95": "FPR95",
    "aupr_in": "AUPR-in",
    "aupr_out": "AUPR-out",
    "id_acc": "ID acc.",
}


CLEAN = "clean"
