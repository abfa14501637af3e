"""Command line: ``bench run``, ``list``, ``data``, ``backbones``, ``report``, ``compare``,
``paper-table`` and ``study`` (the measurement studies of :mod:`bench.studies`).

Options that take several values accept them space-separated after one flag
(``--methods msp energy oe``), repeated (``--methods msp --methods oe``) or comma-separated.
Bad input prints one line naming the bad value and the accepted ones, and exits with code 2.
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path

import click

from bench.errors import BadInput

MULTI_VALUE_OPTIONS = ("--methods", "--attacks", "--seeds", "--cells")
LISTABLE = ("methods", "datasets", "attacks", "protocols", "profiles", "oe-sources")


class MultiValueCommand(click.Command):
    """Rewrites ``--methods a b c`` into ``--methods a --methods b --methods c`` before parsing."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        rewritten: list[str] = []
        current: str | None = None
        for arg in args:
            if arg.startswith("-"):
                name, eq, value = arg.partition("=")
                current = name if name in MULTI_VALUE_OPTIONS else None
                if current and eq:
                    rewritten += [item for v in value.split(",") if v for item in (current, v)]
                    current = None  # "--methods=a" takes exactly its own value
                    continue
                if current:
                    continue
                rewritten.append(arg)
            elif current:
                rewritten += [item for v in arg.split(",") if v for item in (current, v)]
            else:
                rewritten.append(arg)
        return super().parse_args(ctx, rewritten)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """bench: adversarially robust outlier detection benchmark."""


@cli.command("run", cls=MultiValueCommand)
@click.option("--methods", "methods", multiple=True, required=True, help="One or more method names.")
@click.option("--protocol", required=True, help="nd, osr or ood.")
@click.option("--dataset", default="digits", show_default=True)
@click.option("--attacks", "attacks", multiple=True, help="Attack names (default: every registered attack).")
@click.option("--profile", default="quick", show_default=True, help="quick, reference, paper or ci.")
@click.option("--seeds", "seeds", multiple=True, default=("0",), show_default=True, help="One or more seeds.")
@click.option(
    "--cells",
    "cells",
    multiple=True,
    help="Only these cells, e.g. class0 class3 (default: all); the same command without it adds the rest.",
)
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Run directory.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda.")
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE", help="e.g. --set oe.lam=1.0")
@click.option(
    "--oe", default=None, help="Auxiliary-outlier source (default: the dataset's; bench list oe-sources)."
)
@click.option("--dry-run", is_flag=True, help="Print the grid and its budget, then exit.")
@click.option(
    "--rerun-stale",
    is_flag=True,
    help="Recompute the finished units of --out whose method or attack code has changed since.",
)
@click.option(
    "--executor", default="local", show_default=True, help="local, or ray (pip install -e '.[ray]')."
)
@click.option(
    "--address", default=None, help="ray: auto or HOST:PORT of a running cluster (default: start one)."
)
@click.option("--retries", default="2", show_default=True, help="ray: retries of a task whose worker died.")
@click.option(
    "--frozen-detectors",
    type=click.Path(path_type=Path),
    default=None,
    help="Evaluate the detectors saved in this folder (by --save-detectors); fit none.",
)
@click.option(
    "--save-detectors",
    type=click.Path(path_type=Path),
    default=None,
    help="Also write every detector of the run into this folder (for --frozen-detectors).",
)
def run_command(
    methods,
    protocol,
    dataset,
    attacks,
    profile,
    seeds,
    cells,
    out,
    device,
    settings,
    oe,
    dry_run,
    rerun_stale,
    executor,
    address,
    retries,
    frozen_detectors,
    save_detectors,
):
    """Run methods x protocol cells x seeds x attacks and write results, scores and a report."""
    from bench.plan import RunSpec, plan_run
    from bench.store import StorageError

    parsed_seeds = []
    for seed in seeds:
        try:
            parsed_seeds.append(int(seed))
        except ValueError:
            raise BadInput(f"bad seed {seed!r}; seeds are integers >= 0") from None
    try:
        parsed_retries = int(retries)
    except ValueError:
        raise BadInput(f"bad --retries {retries!r}; accepted: an integer >= 0") from None
    spec = RunSpec(
        methods=list(methods),
        protocol=protocol,
        dataset=dataset,
        attacks=list(attacks) or None,
        profile=profile,
        seeds=parsed_seeds,
        cells=list(cells) or None,
        out=out,
        device=device,
        settings=list(settings),
        oe=oe,
        command="bench " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        rerun_stale=rerun_stale,
        executor=executor,
        address=address,
        retries=parsed_retries,
        dry_run=dry_run,
        frozen_detectors=frozen_detectors,
        save_detectors=save_detectors,
    )
    plan = plan_run(spec)
    if device == "auto":
        where = "on each Ray worker's node" if plan.device == "auto" else plan.device
        click.echo(f"device: {where} (chosen by --device auto)")
    if dry_run:
        print_dry_run(plan)
        return
    try:
        execute(plan)
    except StorageError as error:
        click.echo(f"bench: error: {error}", err=True)
        sys.exit(1)


def print_dry_run(plan) -> None:
    """The cells (counted from the labels), methods and attack budgets; builds no cell, OE pool or OOD
    set, so it takes seconds on any profile."""
    from rich.console import Console
    from rich.table import Table

    from bench.registry import PROTOCOLS

    console = Console()
    dataset = plan.dataset
    protocol = PROTOCOLS.get(plan.spec.protocol)()
    sizes = [
        s
        for s in protocol.cell_sizes(dataset, plan.profile)
        if plan.spec.cells is None or s[0] in plan.spec.cells
    ]
    cap = plan.profile.max_eval_per_side
    grid = Table(
        title=f"run {plan.run_id}: {len(sizes)} cells x {len(plan.spec.seeds)} seed(s) x {len(plan.methods)} "
        "methods"
    )
    for column in ("cell", "train images", "test inliers", "test outliers"):
        grid.add_column(column, justify="right")
    for cell_id, n_train, n_in, n_out in sizes:
        grid.add_row(cell_id, str(n_train), str(n_in), str(n_out) if n_out >= 0 else "?")
    console.print(grid)
    console.print(
        f"test images per side: {'all' if cap is None else f'at most {cap}, a sample fixed per cell'}; "
        f"seeds {', '.join(map(str, plan.spec.seeds))}"
    )
    console.print(
        f"methods: {', '.join(plan.methods)}; profile {plan.profile.name} "
        f"({plan.profile.network}, {plan.profile.epochs} epochs); device {plan.device}"
    )
    if plan.stale:
        console.print(f"stale units to recompute (--rerun-stale): {len(plan.stale)}")
    if "absent" in dataset.notes:
        console.print(f"data not here, counts of the official release: {dataset.notes['absent']}")
    budget = Table(title="attack budget (gradient evaluations)")
    for column in ("attack", "eps", "steps", "restarts", "grad evals / image", "grad evals total"):
        budget.add_column(column, justify="right")
    known = [n_in + n_out for _, _, n_in, n_out in sizes if n_out >= 0]
    images = sum(known) * len(plan.methods) * len(plan.spec.seeds)
    total = 0
    for name in plan.attacks:
        attack = plan.attack(name, 0)
        b = attack.budget()
        eps = dataset.eps if attack.uses_eps else 0.0
        total += b.grad_evals * images
        budget.add_row(
            name,
            f"{eps * 255:.3g}/255",
            str(b.steps),
            str(b.restarts),
            str(b.grad_evals),
            f"{b.grad_evals * images:,}",
        )
    console.print(budget)
    unknown = " (cells with '?' outliers not counted)" if len(known) < len(sizes) else ""
    console.print(
        f"total: {total:,} gradient evaluations over {images:,} image scorings per attack{unknown}; "
        f"output: {plan.run_dir}"
    )
    print_recipes(console, plan)
    from bench.estimate import estimate, measure_step

    device = "cuda" if plan.device in {"cuda", "auto"} and torch_cuda_available() else "cpu"
    networks = dict.fromkeys(plan.profile_for(name).network for name in plan.methods)
    shape = dataset.image_shape
    costs = {net: measure_step(net, shape, dataset.num_classes + 1, device) for net in networks}
    train_hours, attack_hours = estimate(plan, sizes, total, costs)
    measured = ", ".join(f"{net} {1000 * cost.seconds_per_image:.3g} ms" for net, cost in costs.items())
    cost = next(iter(costs.values()))
    console.print(
        f"estimate: {train_hours + attack_hours:,.1f} {cost.unit} (training {train_hours:,.1f}, attacks "
        f"{attack_hours:,.1f}), from the time per image of a forward + backward pass at "
        f"{'x'.join(map(str, shape))} measured on {cost.device} (batch {cost.batch}): {measured}; a floor: "
        "no data loading, diffusion sampling or CLIP towers"
    )


def print_recipes(console, plan) -> None:
    """Per method: network, backbones, epochs, optimiser, schedule and what differs from the paper."""
    from bench.method_view import print_method_views

    print_method_views(console, plan)


def torch_cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def execute(plan) -> None:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from bench.report import write_report
    from bench.results.rows import load_results
    from bench.results.stats import summary_table
    from bench.runner import Runner
    from bench.store import StorageError

    console = Console()
    started = time.perf_counter()
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task("preparing", total=None)

        def on_progress(description: str, completed: int, total: int) -> None:
            progress.update(task, description=description or "running", completed=completed, total=total)

        runner = Runner(plan, progress=on_progress, log=lambda message: progress.console.log(message))
        manifest = runner.run()
    pending = manifest["invocations"][-1]["units_pending"]
    report_path = plan.run_dir / "report.html"
    if pending or not report_path.exists():
        try:
            write_report(plan.run_dir)
        except OSError as error:
            raise StorageError(
                f"could not write the report of {plan.run_dir} ({error.strerror or error}); the results are "
                f"kept in results.csv: python -m bench.report {plan.run_dir} writes it once that is fixed"
            ) from error
    frame = load_results(plan.run_dir)
    print_summary(console, summary_table(frame, metric="auroc"), plan)
    errors = manifest["invocations"][-1].get("units_error", 0)
    console.print(
        f"{pending} of {manifest['invocations'][-1]['units_total']} units computed in "
        f"{time.perf_counter() - started:.1f} s"
        + (
            f" ({errors} with status=error: see their reason; the same command retries them)"
            if errors
            else ""
        )
        + f"; results in {plan.run_dir}/results.csv, report {report_path}"
    )


def print_summary(console, table, plan) -> None:
    from rich.table import Table

    rich_table = Table(
        title="AUROC (%), mean over cells",
        caption=f"{plan.spec.dataset} / {plan.spec.protocol} / profile {plan.profile.name}",
    )
    rich_table.add_column("method")
    for attack in table.columns:
        rich_table.add_column(str(attack), justify="right")
    for method, row in table.iterrows():
        cells = ["n/a" if value != value else f"{100 * value:.1f}" for value in row.tolist()]
        rich_table.add_row(str(method), *cells)
    console.print(rich_table)


@cli.command("list")
@click.argument("what")
def list_command(what: str) -> None:
    """List registered methods, datasets, attacks, protocols or profiles. Methods: a line each with
    protocols, needs and defaults; attacks: with defaults (the paper profile's budget)."""
    from bench.config import PROFILES
    from bench.datasets.catalog import auxiliary_lines, dataset_lines
    from bench.datasets.oe_sources import list_oe_sources
    from bench.registry import (
        describe_attack,
        describe_method,
        list_attacks,
        list_datasets,
        list_methods,
        list_protocols,
    )

    listers = {
        "methods": lambda: [describe_method(name) for name in list_methods()],
        "datasets": lambda: [*dataset_lines(list_datasets()), *auxiliary_lines()],
        "attacks": lambda: [describe_attack(name) for name in list_attacks()],
        "protocols": list_protocols,
        "profiles": lambda: list(PROFILES),
        "oe-sources": list_oe_sources,
    }
    if what not in listers:
        raise BadInput(f"unknown list {what!r}; accepted: {', '.join(LISTABLE)}")
    for name in listers[what]():
        click.echo(name)


@cli.group("backbones")
def backbones_group() -> None:
    """Embedded (glyph-clip, glyph-ddpm), the papers' and hub backbones: build, fetch and list."""


@backbones_group.command("build")
@click.option("--only", default=None, help="clip or ddpm (default: both).")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Folder (default: the package's).")
@click.option("--steps", default=None, help="Training steps for each backbone (default: the shipped ones).")
@click.option("--size", default="16", help="Image size of the DDPM: 16 (glyph-ddpm) or 32 (glyph-ddpm-32).")
def backbones_build_command(only, out, steps, size) -> None:
    """Train the embedded backbones on the glyph corpus (CPU, deterministic) and write their files."""
    from bench.backbones.build import build_backbones, check_build_args

    if steps is not None:
        try:
            steps = int(steps)
        except ValueError:
            raise BadInput(f"bad --steps {steps!r}; accepted: an integer >= 1") from None
    try:
        size = int(size)
    except ValueError:
        raise BadInput(f"bad --size {size!r}; accepted: 16, 32") from None
    check_build_args(out, only, steps, size)  # before any work or write
    started = time.perf_counter()
    results = build_backbones(out, only=only, steps=steps, log=click.echo, size=size)
    for name, meta in results.items():
        size = f"{meta['weights_bytes']:,} bytes"
        click.echo(f"{name}: {meta['weights_file']} ({size}), sha256 {meta['weights_sha256']}")
    click.echo(f"built {', '.join(results)} in {time.perf_counter() - started:.0f} s")


@backbones_group.command("fetch")
@click.argument("names", nargs=-1, required=True)
@click.option("--force", is_flag=True, help="Download again even if verified files are present.")
def backbones_fetch_command(names, force) -> None:
    """Download the papers' backbones NAMES (openai-vit-b-32, ddpm-cifar10-32) into $BENCH_DATA/backbones,
    checked against pinned sha256 (bench.backbones.paper)."""
    from bench.backbones.paper import fetch

    for line in fetch(names, force=force):
        click.echo(line)


@backbones_group.command("list")
def backbones_list_command() -> None:
    """List the embedded backbones (file, size, parameters, build metrics) and the hub name forms."""
    from bench.backbones import list_backbones

    for row in list_backbones():
        if row["source"] == "hub":
            click.echo(f"{row['name']}  kind={row['kind']}  source=hub  file: {row['file']}")
            continue
        if row["status"] != "ok":
            click.echo(
                f"{row['name']}  kind={row['kind']}  source=embedded  file={row['file']}  {row['status']}"
            )
            continue
        metrics = ", ".join(
            f"{key}={value:.4g}" for key, value in row["metrics"].items() if isinstance(value, int | float)
        )
        click.echo(
            f"{row['name']}  kind={row['kind']}  source=embedded  file={row['file']}  "
            f"size={row['size_bytes']:,} bytes  params={row['params']:,}  steps={row['steps']}  {metrics}"
        )


@cli.group("data")
def data_group() -> None:
    """Real data sets under $BENCH_DATA (mnist, fmnist, cifar10, cifar100, svhn; folder sets): fetch,
    list, verify."""


@data_group.command("fetch")
@click.argument("names", nargs=-1, required=True)
@click.option("--force", is_flag=True, help="Convert again even if a converted file is present.")
def data_fetch_command(names, force) -> None:
    """Download (pinned by sha256) and convert NAMES, from the first source that works."""
    from bench.datasets.catalog import fetch

    for line in fetch(names, force=force):
        click.echo(line)


@data_group.command("list")
def data_list_command() -> None:
    """Each data set's source, counts, licence, split version and whether it is present."""
    from bench.datasets.catalog import status_lines

    for line in status_lines():
        click.echo(line)


@data_group.command("verify")
@click.argument("names", nargs=-1)
def data_verify_command(names) -> None:
    """Re-hash the converted files (default: all present) and the kept downloads; exit 2 on a mismatch."""
    from bench.datasets.catalog import verify

    lines = verify(names)
    for line in lines or ["nothing to verify: no data set is converted (bench data fetch NAME)"]:
        click.echo(line)


@cli.command("report")
@click.argument("runs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--out", type=click.Path(path_type=Path), default=Path("site"), show_default=True, help="Site folder."
)
@click.option(
    "--published",
    type=click.Path(path_type=Path),
    default=None,
    help="Folder of published-number CSVs (default: results/published when it exists).",
)
@click.option("--no-plots", is_flag=True, help="Skip the plots (tables only; much faster).")
@click.option(
    "--include-host",
    is_flag=True,
    help="Publish the inputs' full paths and the manifests' hosts, platforms and command lines.",
)
def report_command(runs, out, published, no_plots, include_host) -> None:
    """Build the static leaderboard site from run folders (or results CSV files) into --out."""
    from bench.site import build_site

    if published is None and Path("results/published").is_dir():
        published = Path("results/published")
    elif published is not None and not published.is_dir():
        raise BadInput(f"--published {published} is not a folder; accepted: a folder of CSV files")
    started = time.perf_counter()
    try:
        result = build_site(
            list(runs), out, published_dir=published, plots=not no_plots, include_host=include_host
        )
    except OSError as error:  # an --out that cannot be written (name too long, read-only, disk full)
        raise BadInput(
            f"--out {str(out)[:80]} cannot be written ({error.strerror or type(error).__name__}); "
            "accepted: a folder under a writable folder"
        ) from None
    click.echo(
        f"site: {len(result.pages)} pages, {result.files} files, {result.bytes / 1e6:.1f} MB in "
        f"{time.perf_counter() - started:.1f} s; open {result.out / 'index.html'}"
    )


@cli.command("compare")
@click.argument("baseline", type=click.Path(path_type=Path))
@click.argument("candidate", type=click.Path(path_type=Path))
@click.option(
    "--tolerance", default="0.02", show_default=True, help="AUROC drop that counts as a regression."
)
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable JSON object instead.")
def compare_command(baseline, candidate, tolerance, as_json) -> None:
    """Match rows on (method, protocol, dataset, cell, seed, attack, metric); exit 1 on an AUROC regression
    beyond --tolerance or a row missing on either side (CI's checks across machines: bench ci)."""
    from bench.compare import compare, format_text, parse_tolerance

    result = compare(baseline, candidate, parse_tolerance("--tolerance", tolerance))
    click.echo(result.to_json() if as_json else format_text(result))
    if not result.ok:
        sys.exit(1)  # click's ctx.exit() would be swallowed by main()'s standalone_mode=False


PASS_THROUGH = {"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []}


@cli.command("paper-table", context_settings=PASS_THROUGH)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def paper_table_command(args) -> None:
    """Our numbers beside the papers' as Markdown (--readme FILE rewrites its generated blocks);
    ``bench paper-table --help`` for the options."""
    from bench.paper_table import main as paper_table_main

    sys.exit(paper_table_main(list(args)))


@cli.command("study", context_settings=PASS_THROUGH)
@click.argument("name", required=False)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def study_command(name, args) -> None:
    """Run a measurement study: ``bench study NAME [ARGS ...]``; ``bench study NAME --help`` for its
    options, ``bench study --help`` for the studies."""
    from bench.studies import STUDIES, describe, run_study

    if name in (None, "-h", "--help"):
        click.echo(f"Usage: bench study NAME [ARGS ...]\n\nStudies (docs/findings.md):\n{describe()}")
        return
    if name not in STUDIES:
        raise BadInput(f"unknown study {name!r}; accepted: {', '.join(STUDIES)}")
    sys.exit(run_study(name, list(args)))


@cli.group("ci")
def ci_group() -> None:
    """Regression tracking against the committed baseline (results/baseline/, docs/ci.md)."""


def _jobs_option(function):
    return click.option(
        "--jobs",
        type=click.IntRange(min=1),
        default=None,
        help="Grid jobs run at once, one thread each [default: one per core].",
    )(function)


def _baseline_option(function):
    return click.option(
        "--baseline",
        type=click.Path(path_type=Path),
        default=Path("results/baseline"),
        show_default=True,
        help="The baseline folder (frozen.csv, seeds.csv, detectors.npz).",
    )(function)


@ci_group.command("run")
@click.option("--work", type=click.Path(path_type=Path), required=True, help="Folder for the run folders.")
@_baseline_option
@_jobs_option
def ci_run_command(work, baseline, jobs) -> None:
    """Run both CI grids on this machine into WORK: frozen.csv (every attack on the baseline's frozen
    detectors) and seeds.csv (every method trained with the baseline's seeds)."""
    from bench.baseline import DETECTORS, default_jobs, run_grids

    if not (baseline / DETECTORS).is_file():
        raise BadInput(f"--baseline {str(baseline)!r} has no {DETECTORS}; accepted: a baseline folder")
    seconds = run_grids(work, baseline / DETECTORS, parallel=jobs or default_jobs())
    click.echo("seconds: " + json.dumps(seconds))


@ci_group.command("check")
@click.argument("candidate", type=click.Path(path_type=Path))
@_baseline_option
def ci_check_command(candidate, baseline) -> None:
    """Compare the grids of CANDIDATE (bench ci run's WORK) with the baseline; exit 1 on a failure."""
    from bench.baseline import check

    verdicts = check(baseline, candidate)
    click.echo("\n".join(v.text() for v in verdicts))
    if not all(v.ok for v in verdicts):
        sys.exit(1)


@ci_group.command("baseline")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="The new baseline folder.")
@click.option("--work", type=click.Path(path_type=Path), required=True, help="Folder for the run folders.")
@click.option("--replace", is_flag=True, help="Overwrite the baseline files already in --out.")
@_jobs_option
def ci_baseline_command(out, work, replace, jobs) -> None:
    """Regenerate a baseline: both grids on this machine, packing the seed-0 detectors into OUT (a folder
    that holds a baseline is refused unless --replace)."""
    from bench.baseline import BASELINE_FILES, default_jobs, make_baseline

    present = [name for name in BASELINE_FILES if (out / name).exists()]
    if present and not replace:
        raise BadInput(
            f"--out {str(out)!r} holds a baseline ({', '.join(present)}); accepted: a new folder, or "
            "--replace to overwrite it"
        )
    make_baseline(out, work, parallel=jobs or default_jobs())
    click.echo(f"baseline written to {out}")


def pin_for_profile(argv: list[str]) -> None:
    """A deterministic profile's numerics must be pinned before torch is imported (bench.determinism):
    ``bench run --profile ci`` pins them here, before any command imports torch."""
    from bench.determinism import pin_numerics

    for index, arg in enumerate(argv):
        if arg == "--profile" and index + 1 < len(argv):
            pin_numerics(argv[index + 1])
        elif arg.startswith("--profile="):
            pin_numerics(arg.split("=", 1)[1])


def main(argv: list[str] | None = None) -> None:
    """Entry point: one-line errors and exit code 2 for bad input."""
    pin_for_profile(sys.argv[1:] if argv is None else argv)
    try:
        cli.main(args=argv, prog_name="bench", standalone_mode=False)
    except (BadInput, click.UsageError) as error:
        message = error.format_message() if isinstance(error, click.ClickException) else str(error)
        click.echo(f"bench: error: {message}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("bench: aborted", err=True)
        sys.exit(130)
    except click.exceptions.Exit as exit_request:
        sys.exit(exit_request.exit_code)


if __name__ == "__main__":
    main()
