"""What ``bench list datasets`` shows: every registered data set's resolution, classes, source, licence
and whether its files are here, read from the data sets' specs (no image is loaded)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from bench.errors import BadInput

from . import folder_sets, ood_sets, sources, torchvision_sets


@dataclass(frozen=True)
class CatalogEntry:
    name: str
    resolution: str  # C x H x W
    classes: int
    source: str
    licence: str
    present: bool
    fetch: str  # how to get it

    def line(self) -> str:
        state = "present" if self.present else "absent"
        return (
            f"{self.name}  {state}  {self.resolution}  classes={self.classes}  licence={self.licence}  "
            f"source={self.source}  get: {self.fetch}"
        )


def catalog(root: str | Path | None = None) -> dict[str, CatalogEntry]:
    """One entry per data set, in the registry's order of families: embedded, MNIST-like, torchvision,
    folders."""
    entries = [
        CatalogEntry(
            "digits",
            "1x8x8",
            10,
            "scikit-learn load_digits() (UCI optical digits)",
            "CC BY 4.0 (UCI), shipped with scikit-learn",
            True,
            "embedded",
        )
    ]
    for name, spec in sources.SPECS.items():
        entries.append(
            CatalogEntry(
                name,
                f"1x{sources.SIDE}x{sources.SIDE}",
                sources.NUM_CLASSES,
                f"IDX files ({spec.idx.folder}) or {spec.mirror.kind} {spec.mirror.package}",
                spec.licence,
                sources._is_converted(name, sources.data_root(root)),
                f"bench data fetch {name}",
            )
        )
    for name, spec in torchvision_sets.TORCHVISION_SPECS.items():
        entries.append(
            CatalogEntry(
                name,
                "x".join(str(d) for d in torchvision_sets.IMAGE_SHAPE),
                len(spec.classes),
                f"torchvision.datasets.{spec.loader} ({spec.source})",
                spec.licence,
                torchvision_sets.is_converted(name, root),
                f"bench data fetch {name}",
            )
        )
    for name, spec in folder_sets.FOLDER_SPECS.items():
        entries.append(
            CatalogEntry(
                name,
                f"3x{spec.resolution}x{spec.resolution}",
                len(spec.classes),
                spec.source,
                spec.licence,
                folder_sets.is_present(name, root),
                f"manual: {spec.layout(sources.data_root(root))}",
            )
        )
    return {entry.name: entry for entry in entries}


def _torchvision_ood_sets() -> list[str]:
    return [name for name, spec in ood_sets.OOD_SETS.items() if spec.torchvision is not None]


def _check_fetchable(names) -> None:
    """BadInput for a name ``bench data fetch`` cannot fetch: unknown, or a manual (folder) download."""
    fetchable = [*sources.SPECS, *torchvision_sets.TORCHVISION_SPECS, *_torchvision_ood_sets()]
    for name in names:
        if name in folder_sets.FOLDER_SPECS:
            spec = folder_sets.FOLDER_SPECS[name]
            raise BadInput(
                f"{name} is a manual download: put it at {spec.layout(sources.data_root())} (source "
                f"{spec.source}); accepted by bench data fetch: {', '.join(fetchable)}"
            )
        if name not in fetchable:
            raise BadInput(f"unknown data set {name!r}; accepted: {', '.join(fetchable)}")


def fetch(names, force: bool = False) -> list[str]:
    """``bench data fetch``: every name is checked first, then each is fetched by its family's module."""
    _check_fetchable(names)
    lines = sources.fetch_with_progress([n for n in names if n in sources.SPECS], force=force)
    for name in dict.fromkeys(n for n in names if n in torchvision_sets.TORCHVISION_SPECS):
        record = torchvision_sets.fetch(
            name, force=force, log=lambda message: print(message, file=sys.stderr)
        )
        counts = record.get("counts", {})
        timing = (
            "already converted"
            if record["status"] == "present"
            else f"converted in {record.get('convert_seconds', 0):.1f} s"
        )
        lines.append(
            f"{name}: {timing}; source {record['source']['loader']}, split {record['split_version']}, "
            f"train {counts.get('train')} / test {counts.get('test')}; "
            f"{sources.data_root() / record['converted']['file']} "
            f"({record['converted']['bytes'] / 1e6:.1f} MB)"
        )
    for name in dict.fromkeys(n for n in names if n in _torchvision_ood_sets()):
        try:
            paths = ood_sets.fetch_ood_set(name)
        except Exception as error:  # network, md5 mismatch, disk: torchvision's message
            raise BadInput(
                f"{name}: torchvision could not fetch it ({' '.join(str(error).split())[:160]}); put "
                f"{ood_sets.OOD_SETS[name].source} under {sources.data_root() / ood_sets.TORCHVISION_DIR}/"
            ) from None
        lines.append(
            f"{name}: {len(paths)} images (OOD set) under {sources.data_root() / ood_sets.TORCHVISION_DIR}"
        )
    return lines


def verify(names) -> list[str]:
    """``bench data verify``: re-hash the named (default: every converted) data set's files."""
    _check_fetchable(names)
    if any(name in _torchvision_ood_sets() for name in names):
        raise BadInput(
            "bench data verify checks converted data sets; the OOD sets "
            f"{', '.join(_torchvision_ood_sets())} are checked by torchvision each time they are read"
        )
    chosen = list(names) or [
        *(n for n in sources.SPECS if sources.read_record(n) is not None),
        *(n for n in torchvision_sets.TORCHVISION_SPECS if sources.read_record(n) is not None),
    ]
    return [sources.verify_one(n) if n in sources.SPECS else torchvision_sets.verify_one(n) for n in chosen]


def status_lines() -> list[str]:
    """``bench data list``: the MNIST family's detailed lines, then one catalog line per other set."""
    lines = sources.status_lines()
    shown = {"digits", *sources.SPECS}
    lines += [entry.line() for name, entry in catalog().items() if name not in shown]
    return lines


def dataset_lines(names: list[str]) -> list[str]:
    """``bench list datasets``: a catalog line per registered name (the bare name for a plugin's set)."""
    entries = catalog()
    return [
        entries[name].line() if name in entries else f"{name}  (registered by a plugin)" for name in names
    ]
