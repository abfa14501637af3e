"""Regression tracking (bench.baseline, results/baseline/): merging, the committed baseline, the ci
profile's determinism and pinned numerics, and CPU kinds. No training here: tests/test_regression.py
reruns attacks on the committed frozen detectors."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import bench.config
import bench.runner
from bench import determinism
from bench.baseline import (
    CI_PROTOCOLS,
    CI_SKIP_METHODS,
    DEFAULT_BASELINE,
    DETECTORS,
    FROZEN_CELLS,
    FROZEN_CSV,
    FROZEN_SEED,
    PROVENANCE,
    SEED_ATTACKS,
    SEED_CELLS,
    SEED_PROTOCOLS,
    SEEDS,
    SEEDS_CSV,
    Job,
    MergeError,
    ci_methods,
    grid_cells,
    grid_jobs,
    grid_protocols,
    merge,
    pack_detectors,
    run_command,
    run_jobs,
    unpack_detectors,
)
from bench.cache import DetectorCache
from bench.compare import KEY, compare
from bench.errors import BadInput
from bench.frozen import check_entry, entry_dir
from bench.plan import RunSpec, expected_units, plan_run, prepare_dataset
from bench.provenance import avx512_tier, cpu_kind, cpu_vendor, hardware_kind, isa_level
from bench.registry import ATTACKS, METHODS, PROTOCOLS
from bench.store import COLUMNS, PRE_WARNINGS_COLUMNS, unit_of
from tests.conftest import bench_env

REPO = Path(__file__).resolve().parent.parent


def _row(method, protocol, cell, attack, metric, value, status="ok"):
    row = dict.fromkeys(COLUMNS, "")
    row.update(
        run_id=f"digits-{protocol}-ci",
        method=method,
        protocol=protocol,
        dataset="digits",
        cell=cell,
        seed="0",
        attack=attack,
        metric=metric,
        value=value,
        status=status,
        profile="ci",
    )
    return row


def _write(path: Path, rows, header=COLUMNS) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=header, lineterminator="\n", extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def _read(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames), list(reader)


@pytest.fixture
def fixture_csvs(tmp_path):
    nd = _write(
        tmp_path / "nd.csv",
        [
            _row("oe", "nd", "class1", "pgd", "auroc", "0.61"),
            _row("oe", "nd", "class0", "clean", "auroc", "0.9"),
            _row("msp", "nd", "class0", "clean", "auroc", "", status="na"),
        ],
    )
    osr = _write(tmp_path / "osr.csv", [_row("atom", "osr", "split0", "clean", "fpr95", "0.3")])
    ood = _write(tmp_path / "ood.csv", [_row("oe", "ood", "all:glyphs", "aa", "auroc", "0.7")])
    return [nd, osr, ood]


def test_merge_keeps_columns_and_every_row_sorted_on_the_compare_key(tmp_path, fixture_csvs):
    out = tmp_path / "sub" / "ci.csv"
    assert merge(fixture_csvs, out) == 5
    header, rows = _read(out)
    assert header == COLUMNS
    keys = [tuple(r[k] for k in KEY) for r in rows]
    assert keys == sorted(keys)
    assert {(r["method"], r["protocol"], r["cell"]) for r in rows} == {
        ("oe", "nd", "class1"),
        ("oe", "nd", "class0"),
        ("msp", "nd", "class0"),
        ("atom", "osr", "split0"),
        ("oe", "ood", "all:glyphs"),
    }
    na = next(r for r in rows if r["method"] == "msp")
    assert (na["status"], na["value"]) == ("na", "")
    # The merged file is what bench compare reads: identical to itself, and a lowered AUROC is caught.
    assert compare(out, out, 0.0).ok
    lowered = [dict(r, value="0.5") if r["cell"] == "class1" else r for r in rows]
    assert compare(out, _write(tmp_path / "lowered.csv", lowered), 0.0).ok is False


def test_merge_refuses_duplicate_keys_and_mismatched_columns(tmp_path, fixture_csvs):
    with pytest.raises(MergeError, match="twice"):
        merge([fixture_csvs[0], fixture_csvs[0]], tmp_path / "dup.csv")
    other = _write(tmp_path / "other.csv", [_row("oe", "nd", "class2", "pgd", "auroc", "0.6")], COLUMNS[:-1])
    with pytest.raises(MergeError, match="columns"):
        merge([fixture_csvs[0], other], tmp_path / "mixed.csv")
    with pytest.raises(MergeError, match="key columns"):
        merge([_write(tmp_path / "bare.csv", [{"value": "1"}], ["value"])], tmp_path / "bare-out.csv")
    assert not (tmp_path / "dup.csv").exists()


def test_the_ci_part_keeps_the_ci_cells_of_a_protocol_and_every_cell_of_the_others(tmp_path, fixture_csvs):
    out = tmp_path / "part.csv"
    assert merge(fixture_csvs, out, cells={"nd": ("class1",)}) == 3
    assert {(r["protocol"], r["cell"]) for r in _read(out)[1]} == {
        ("nd", "class1"),
        ("osr", "split0"),
        ("ood", "all:glyphs"),  # a sub-cell row belongs to its unit's cell, "all"
    }
    nd = {"nd": ("class1",)}
    assert merge(fixture_csvs, out, protocols=["nd", "ood"], skip_methods=["atom"], cells=nd) == 2
    known = set(SEED_CELLS["nd"])
    assert known and known < {f"class{c}" for c in range(10)}


@pytest.fixture
def restore_torch_settings():
    threads = torch.get_num_threads()
    algorithms = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    cudnn = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(algorithms, warn_only=warn_only)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn


def test_ci_profile_sets_the_deterministic_flags(restore_torch_settings, monkeypatch):
    torch.use_deterministic_algorithms(False)
    torch.set_num_threads(1)
    assert determinism.configure("quick") is None
    assert determinism.configure("paper") is None
    assert not torch.are_deterministic_algorithms_enabled() and torch.get_num_threads() == 1
    settings = determinism.configure(bench.config.get_profile("ci"), "cpu")
    assert settings == determinism.Settings(
        threads=determinism.threads(),
        deterministic_algorithms=True,
        warn_only=False,
        cudnn_deterministic=True,
        cudnn_benchmark=False,
    )
    assert torch.get_num_threads() == determinism.threads()
    monkeypatch.setenv(determinism.THREADS_VARIABLE, "3")
    assert determinism.configure("ci").threads == 3
    monkeypatch.delenv(determinism.THREADS_VARIABLE, raising=False)
    assert determinism.configure("ci").threads == determinism.THREADS == 2
    for bad in ("0", "two", "-1"):
        monkeypatch.setenv(determinism.THREADS_VARIABLE, bad)
        with pytest.raises(BadInput, match=f"BENCH_THREADS='{bad}'.*accepted: an integer >= 1"):
            determinism.configure("ci")
    assert torch.are_deterministic_algorithms_enabled()


def test_runner_configures_determinism_before_any_work(tmp_path, monkeypatch):
    seen = []

    class Stop(Exception):
        pass

    def record(profile, device):
        seen.append((profile.name, device))
        raise Stop

    monkeypatch.setattr(bench.runner, "configure_determinism", record)
    spec = RunSpec(methods=["oe"], protocol="nd", profile="ci", device="cpu", out=tmp_path / "run")
    with pytest.raises(Stop):
        bench.runner.Runner(plan_run(spec), cache=DetectorCache(tmp_path / "cache")).run()
    assert seen == [("ci", "cpu")]
    assert not (tmp_path / "run" / "results.csv").exists()


def test_merge_keeps_the_protocols_asked_for_and_drops_skipped_methods(tmp_path, fixture_csvs):
    out = tmp_path / "part.csv"
    assert merge(fixture_csvs, out, protocols=["nd", "ood"]) == 4
    assert {r["protocol"] for r in _read(out)[1]} == {"nd", "ood"}
    assert merge(fixture_csvs, out, protocols=["nd", "ood"], skip_methods=["msp"]) == 3
    assert {(r["method"], r["cell"]) for r in _read(out)[1]} == {
        ("oe", "class0"),
        ("oe", "class1"),
        ("oe", "all:glyphs"),
    }


def test_grid_commands_are_the_ci_profile_on_the_ci_cells(tmp_path):
    seeds = run_command("nd", tmp_path / "nd", SEEDS, SEED_ATTACKS)
    assert seeds[1:4] == ["-m", "bench", "run"]
    text = " ".join(seeds)
    assert "--profile ci" in text and "--protocol nd" in text and "--dataset digits" in text
    assert seeds[seeds.index("--methods") + 1 : seeds.index("--protocol")] == ci_methods()
    assert seeds[seeds.index("--seeds") + 1 : seeds.index("--cells")] == [str(s) for s in SEEDS]
    assert seeds[seeds.index("--cells") + 1 : seeds.index("--attacks")] == list(SEED_CELLS["nd"])
    assert set(CI_SKIP_METHODS) < set(METHODS.names())  # a renamed method must not silently leave CI
    frozen = run_command("ood", tmp_path / "ood", (FROZEN_SEED,), (), ("--frozen-detectors", "D"), "frozen")
    assert "--attacks" not in frozen and "--cells" not in frozen  # every attack, every ood cell
    assert frozen[-2:] == ["--frozen-detectors", "D"]
    frozen_nd = run_command("nd", tmp_path / "nd", (FROZEN_SEED,), (), (), "frozen")
    assert frozen_nd[frozen_nd.index("--cells") + 1 :] == list(FROZEN_CELLS["nd"])
    assert "osr" not in SEED_PROTOCOLS and set(SEED_PROTOCOLS) < set(CI_PROTOCOLS)


def _expected(protocol: str, seeds, attacks, grid: str) -> set[tuple]:
    spec = RunSpec(methods=ci_methods(), protocol=protocol, profile="ci", device="cpu", seeds=list(seeds),
                   attacks=list(attacks) or None, cells=list(grid_cells(grid, protocol)) or None)  # fmt: skip
    plan = plan_run(spec)
    return {
        (u.method, protocol, u.cell, u.seed, u.attack)
        for u in expected_units(plan, prepare_dataset(spec), PROTOCOLS.get(protocol)())
    }


@pytest.mark.parametrize(
    "name, grid, seeds, attacks",
    [(FROZEN_CSV, "frozen", (FROZEN_SEED,), ()), (SEEDS_CSV, "seeds", SEEDS, SEED_ATTACKS)],
)
def test_committed_baseline_covers_its_grid(name, grid, seeds, attacks):
    """frozen.csv: every CI method x every registered attack on the frozen detectors; seeds.csv: SEEDS x
    SEED_ATTACKS. A new method or attack needs a new baseline (bench ci baseline, docs/ci.md)."""
    header, rows = _read(REPO / DEFAULT_BASELINE / name)
    assert header in (COLUMNS, PRE_WARNINGS_COLUMNS)  # the committed baseline predates ``warnings``
    assert {r["profile"] for r in rows} == {"ci"} and {r["dataset"] for r in rows} == {"digits"}
    found = {(r["method"], r["protocol"], unit_of(r["cell"]), int(r["seed"]), r["attack"]) for r in rows}
    expected = set().union(*(_expected(p, seeds, attacks, grid) for p in grid_protocols(grid)))
    if not attacks:
        assert {u[4] for u in expected} == set(ATTACKS.names())
    assert found == expected, (
        f"missing: {sorted(expected - found)[:5]}, extra: {sorted(found - expected)[:5]}"
    )
    assert len({tuple(r[k] for k in KEY) for r in rows}) == len(rows)


def test_every_frozen_detector_is_committed_checked_and_behind_its_rows(tmp_path):
    """Each (method, protocol, cell) of frozen.csv has its entry in detectors.npz, whose digests check out
    and whose weights are the ones the rows record (detector_digest)."""
    from bench.detector import load_detector
    from bench.digests import detector_digest

    npz = REPO / DEFAULT_BASELINE / DETECTORS
    assert npz.stat().st_size < 16 * 2**20  # a few MB in the repository
    root = unpack_detectors(npz, tmp_path / "detectors")
    _, rows = _read(REPO / DEFAULT_BASELINE / FROZEN_CSV)
    groups = {(r["method"], r["protocol"], unit_of(r["cell"]), int(r["seed"])): r for r in rows}
    for (method, protocol, cell, seed), row in groups.items():
        entry = entry_dir(root, "digits", protocol, method, cell, seed)
        check_entry(entry)
        if row["status"] == "ok":
            assert detector_digest(load_detector(entry)) == row["detector_digest"], entry


def test_packing_round_trips_and_refuses_a_path_outside_the_folder(tmp_path):
    import numpy as np

    source = tmp_path / "source" / "digits" / "nd" / "oe" / "class0-seed0"
    source.mkdir(parents=True)
    (source / "detector.json").write_text('{"a": 1}')
    assert pack_detectors(tmp_path / "source", tmp_path / "d.npz") == 1
    back = unpack_detectors(tmp_path / "d.npz", tmp_path / "back")
    assert (back / "digits/nd/oe/class0-seed0/detector.json").read_text() == '{"a": 1}'
    np.savez(tmp_path / "evil.npz", **{"../escape": np.zeros(1, dtype=np.uint8)})
    with pytest.raises(BadInput, match="outside its folder"):
        unpack_detectors(tmp_path / "evil.npz", tmp_path / "x")
    assert not (tmp_path / "escape").exists()


def test_provenance_names_what_made_the_baseline():
    record = json.loads((REPO / DEFAULT_BASELINE / PROVENANCE).read_text())
    assert record["pinned_numerics"] == determinism.PINNED_NUMERICS
    assert record["seeds"] == list(SEEDS) and record["seed_attacks"] == list(SEED_ATTACKS)
    assert record["methods"] == ci_methods() and record["cpu_kinds"]


def test_bench_ci_check_of_the_baseline_against_itself_passes_and_a_missing_row_fails(tmp_path):
    from bench.cli import main

    source = REPO / DEFAULT_BASELINE
    candidate = tmp_path / "candidate"
    candidate.mkdir()
    for name in (FROZEN_CSV, SEEDS_CSV):
        (candidate / name).write_bytes((source / name).read_bytes())
    main(["ci", "check", str(candidate), "--baseline", str(source)])  # returns: no failure
    header, rows = _read(source / FROZEN_CSV)
    _write(candidate / FROZEN_CSV, rows[1:], header)  # one row lost
    with pytest.raises(SystemExit) as exit_:
        main(["ci", "check", str(candidate), "--baseline", str(source)])
    assert exit_.value.code == 1


def test_pinned_numerics_are_set_before_torch_and_recorded_in_the_manifest(tmp_path):
    """bench run --profile ci pins the math libraries' code paths (set before torch is imported); a
    variable the user set is kept; other profiles pin nothing."""
    env = {k: v for k, v in bench_env(tmp_path / "cache").items() if k not in determinism.PINNED_NUMERICS}
    names = sorted(determinism.PINNED_NUMERICS)
    probe = (
        "import sys, os; from bench.cli import pin_for_profile; pin_for_profile(sys.argv[1:]);"
        f"import torch, json; print(json.dumps({{k: os.environ.get(k) for k in {names!r}}}));"
        "print(torch.backends.cpu.get_cpu_capability())"
    )

    def pinned_by(*argv, environment=env):
        command = [sys.executable, "-c", probe, *argv]
        done = subprocess.run(command, env=environment, capture_output=True, text=True)
        values, capability = done.stdout.splitlines()
        return json.loads(values), capability

    assert pinned_by("--profile", "ci") == (determinism.PINNED_NUMERICS, "AVX2")
    assert set(pinned_by("--profile", "quick")[0].values()) == {None}
    mine = pinned_by("--profile=ci", environment=dict(env, MKL_CBWR="COMPATIBLE"))[0]
    assert mine["MKL_CBWR"] == "COMPATIBLE"  # the user's own setting is kept
    assert "torch" in sys.modules and determinism.pin_numerics("ci") == (
        determinism.numerics() == determinism.PINNED_NUMERICS
    )
    assert determinism.pin_numerics("quick") is False
    run = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "run", "--methods", "msp", "--protocol", "nd", "--profile", "ci",
         "--cells", "class0", "--attacks", "clean", "--device", "cpu", "--out", str(run)],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["invocations"][-1]["numerics"] == determinism.PINNED_NUMERICS


# --- CPU kinds ----------------------------------------------------------------------------------------------


def test_cpu_vendor_and_kind():
    assert cpu_vendor("processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t: avx2\n") == "intel"
    assert cpu_vendor("vendor_id : AuthenticAMD\n") == "amd"
    assert cpu_vendor("vendor_id\t: HygonGenuine\n") == "hygongenuine"
    assert cpu_vendor("processor\t: 0\n") == "unknown"
    kind = cpu_kind()
    machine, vendor, level = kind.split("-", 2)
    assert machine and vendor and level.startswith(torch.backends.cpu.get_cpu_capability().lower())


def test_the_avx512_rung_is_part_of_the_kind():
    """Two Intel AVX-512 machines, one with AMX (Sapphire Rapids) and one with VNNI only (Cascade Lake),
    are different kinds; the rung is the highest flag of oneDNN's ladder; AVX2 machines get none."""
    spr = "vendor_id\t: GenuineIntel\nflags\t\t: avx2 avx512f avx512_vnni avx512_bf16 avx512_fp16 amx_tile\n"
    clx = "vendor_id\t: GenuineIntel\nflags\t\t: avx2 avx512f avx512_vnni\n"
    skx = "vendor_id\t: GenuineIntel\nflags\t\t: avx2 avx512f avx512bw\n"
    zen3 = "vendor_id\t: AuthenticAMD\nflags\t\t: avx2 vaes\n"
    assert [avx512_tier(c) for c in (spr, clx, skx, zen3, "")] == ["amx", "vnni", "", "", ""]
    machine = cpu_kind(zen3, "AVX2").split("-")[0]
    assert cpu_kind(spr, "AVX512") == f"{machine}-intel-avx512-amx"
    assert cpu_kind(clx, "AVX512") == f"{machine}-intel-avx512-vnni"
    assert cpu_kind(skx, "AVX512") == f"{machine}-intel-avx512"
    assert cpu_kind(zen3, "AVX2") == f"{machine}-amd-avx2"
    assert cpu_kind(spr, "AVX2") == f"{machine}-intel-avx2"  # ATEN_CPU_CAPABILITY=avx2: no AVX-512 rung


def test_the_hardware_kind_ignores_a_pinned_kernel_level():
    zen4 = "vendor_id\t: AuthenticAMD\nflags\t\t: avx2 avx512f avx512bw avx512_bf16\n"
    zen3 = "vendor_id\t: AuthenticAMD\nflags\t\t: avx2 vaes\n"
    assert [isa_level(c) for c in (zen4, zen3, "")] == ["avx512", "avx2", "default"]
    machine = cpu_kind(zen3, "AVX2").split("-")[0]
    assert (
        hardware_kind(zen4) == f"{machine}-amd-avx512-bf16" and hardware_kind(zen3) == f"{machine}-amd-avx2"
    )


def test_ci_baseline_needs_out_and_never_overwrites_a_baseline_unless_asked(tmp_path, monkeypatch, capsys):
    """Issue 31, item 6: the committed baseline is written only on purpose."""
    import bench.baseline as baseline_module
    from bench.cli import main

    made = []
    monkeypatch.setattr(baseline_module, "make_baseline", lambda out, work, parallel: made.append(out))
    with pytest.raises(SystemExit) as exit_info:
        main(["ci", "baseline", "--work", str(tmp_path / "w")])
    assert exit_info.value.code == 2 and "--out" in capsys.readouterr().err
    committed = tmp_path / "baseline"
    committed.mkdir()
    (committed / "frozen.csv").write_text("the committed rows\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["ci", "baseline", "--out", str(committed), "--work", str(tmp_path / "w")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds a baseline (frozen.csv)" in err[0] and "--replace" in err[0]
    assert made == [] and (committed / "frozen.csv").read_text() == "the committed rows\n"
    main(["ci", "baseline", "--out", str(committed), "--work", str(tmp_path / "w"), "--replace"])
    main(["ci", "baseline", "--out", str(tmp_path / "new"), "--work", str(tmp_path / "w")])
    assert made == [committed, tmp_path / "new"]


def test_grid_jobs_cover_each_protocol_and_seed_once_longest_first(tmp_path):
    seeds = grid_jobs(tmp_path, "seeds")
    assert sorted((j.protocol, j.seeds) for j in seeds) == sorted(
        (p, (s,)) for p in SEED_PROTOCOLS for s in SEEDS
    )
    assert len({j.folder for j in seeds}) == len(seeds)
    assert seeds[0].protocol == "ood"  # the longest first
    frozen = grid_jobs(tmp_path, "frozen", ("--frozen-detectors", "D"))
    assert [j.protocol for j in frozen][0] == "ood" and {j.protocol for j in frozen} == set(CI_PROTOCOLS)
    assert all(j.seeds == (FROZEN_SEED,) and j.command()[-2:] == ["--frozen-detectors", "D"] for j in frozen)
    assert "--attacks" not in frozen[0].command()
    assert seeds[0].command()[-len(SEED_ATTACKS) - 1 :] == ["--attacks", *SEED_ATTACKS]


class _ScriptJob(Job):
    """A job whose command is a tiny Python script (no bench run)."""

    def command(self) -> list[str]:
        return [sys.executable, "-c", self.extra[0]]


def test_run_jobs_runs_in_parallel_with_one_thread_each_and_stops_on_a_failure(tmp_path, monkeypatch):
    monkeypatch.delenv(determinism.THREADS_VARIABLE, raising=False)
    report = "import os; print('threads', os.environ.get('BENCH_THREADS'), os.environ['MKL_CBWR'])"
    jobs = [_ScriptJob("seeds", "nd", (s,), tmp_path / f"j{s}", (report,)) for s in range(3)]
    seconds = run_jobs(jobs, parallel=2)
    assert set(seconds) == {j.name for j in jobs}
    assert all((tmp_path / f"j{s}.log").read_text() == "threads 1 AVX2,STRICT\n" for s in range(3))
    run_jobs(jobs[:1], parallel=1)  # alone, a job keeps the deterministic profile's own thread count
    assert (tmp_path / "j0.log").read_text() == "threads None AVX2,STRICT\n"
    failing = _ScriptJob("frozen", "osr", (0,), tmp_path / "bad", ("print('boom'); raise SystemExit(3)",))
    with pytest.raises(RuntimeError, match=r"frozen osr seed 0 failed \(exit 3\)(.|\n)*boom"):
        run_jobs([failing, *jobs], parallel=2)
