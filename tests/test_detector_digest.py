"""results.csv's ``detector_digest``: which weights produced each row, and a resumed group never mixes
two detectors (a finished attack whose rows came from another training is recomputed)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import torch
from torch import nn

from bench import execute, store
from bench.digests import detector_digest, tensor_digest
from bench.plan import Unit, UnitGroup, group_units, plan_run

from .conftest import execute_run, read_rows


def _rewrite(run_dir: Path, change) -> None:
    """Apply ``change(row) -> row | None`` (None drops it) to every row of results.csv."""
    path = run_dir / "results.csv"
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        columns, rows = reader.fieldnames, list(reader)
    kept = [r for r in (change(dict(row)) for row in rows) if r is not None]
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=[c for c in columns if c in kept[0]], lineterminator="\n")
        writer.writeheader()
        writer.writerows(kept)


def test_the_digest_follows_every_bit_of_the_weights():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    before = detector_digest(net)
    assert len(before) == 16 and before == detector_digest(net)
    twin = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    twin.load_state_dict(net.state_dict())
    assert detector_digest(twin) == before  # the same weights in another module: the same digest
    with torch.no_grad():
        net[0].weight[1, 2] = torch.nextafter(net[0].weight[1, 2], torch.tensor(1.0))  # one ulp
    assert detector_digest(net) != before
    with torch.no_grad():
        net[0].weight[1, 2] = twin[0].weight[1, 2]
    net[1].num_batches_tracked += 1  # buffers count too
    assert detector_digest(net) != before
    assert tensor_digest(torch.ones(3, dtype=torch.bfloat16)) != tensor_digest(torch.ones(3))
    assert tensor_digest(torch.zeros(0)) == tensor_digest()


def test_groups_carry_the_digests_of_their_finished_attacks_only():
    units = [Unit("oe", "class0", 0, "pgd"), Unit("oe", "class1", 0, "clean")]
    digests = {("oe", "class0", 0): {"clean": "a" * 16, "pgd": "b" * 16}}  # pgd is pending (stale)
    first, second = group_units(units, digests)
    assert first.finished == (("clean", "a" * 16),) and second.finished == ()


def _pending_group(finished):
    return UnitGroup("oe", "class0", 0, ("pgd",), tuple(finished))


def test_units_to_run_widens_the_group_only_for_another_known_digest(tmp_path):
    plan = plan_run(_spec(tmp_path, ["clean", "pgd"]))
    same = _pending_group([("clean", "d" * 16)])
    assert execute.units_to_run(plan, same, "d" * 16) == (same.units(), set(), "")
    unknown = _pending_group([("clean", "")])  # rows from before the column: cannot be checked
    assert execute.units_to_run(plan, unknown, "d" * 16)[1] == set()
    other = _pending_group([("clean", "e" * 16)])
    units, redo, warning = execute.units_to_run(plan, other, "d" * 16)
    assert [u.attack for u in units] == ["clean", "pgd"] and redo == {"clean"}  # plan order
    assert "oe class0 seed 0" in warning and "e" * 16 in warning and "d" * 16 in warning


def _spec(tmp_path, attacks):
    from bench.plan import RunSpec

    return RunSpec(
        out=tmp_path / "run",
        profile="ci",
        device="cpu",
        methods=["oe"],
        protocol="nd",
        attacks=attacks,
        cells=["class0"],
    )


def _run(tmp_path):
    return execute_run(tmp_path, methods=["oe"], protocol="nd", attacks=["clean", "pgd"], cells=["class0"])


def _without_pgd(digest=None):
    """Drop the pgd rows (pgd pending again) and, unless None, set the clean rows' digest."""

    def change(row):
        if row["attack"] == "pgd":
            return None
        return row if digest is None else {**row, "detector_digest": digest}

    return change


def test_a_resumed_group_never_mixes_two_detectors(tmp_path):
    first = _run(tmp_path)
    rows = read_rows(first.run_dir)
    (digest,) = {r["detector_digest"] for r in rows}
    assert len(digest) == 16 and int(digest, 16) >= 0

    # the same detector (from the cache): the finished clean rows stay byte for byte
    _rewrite(first.run_dir, _without_pgd())
    clean_before = read_rows(first.run_dir)
    second = _run(tmp_path)
    rows = read_rows(second.run_dir)
    assert [r for r in rows if r["attack"] == "clean"] == clean_before
    assert {r["detector_digest"] for r in rows} == {digest}
    assert second.manifest["invocations"][-1]["units_redone"] == 0

    # the clean rows as if another training had made them, and pgd not done yet: clean is recomputed
    other = "0123456789abcdef"
    _rewrite(first.run_dir, _without_pgd(other))
    third = _run(tmp_path)
    rows = read_rows(third.run_dir)
    assert {r["detector_digest"] for r in rows} == {digest}  # the clean rows were written again
    assert {r["attack"] for r in rows} == {"clean", "pgd"}
    last = third.manifest["invocations"][-1]
    assert last["units_pending"] == 1 and last["units_redone"] == 1
    refused, warning = [w for w in third.manifest["warnings"] if other in w]
    assert refused.startswith("corrupt cache entry") and "of the run's rows" in refused  # issue 31, item 9
    assert "oe class0 seed 0" in warning and "clean" in warning and digest in warning
    on_disk = json.loads((third.run_dir / "manifest.json").read_text())
    assert on_disk["invocations"][-1]["units_redone"] == 1

    # rows from before the column (no digest) are kept as they are: nothing to compare them with
    _rewrite(first.run_dir, _without_pgd(""))
    kept = [r for r in read_rows(first.run_dir) if r["attack"] == "clean"]
    fourth = _run(tmp_path)
    rows = read_rows(fourth.run_dir)
    assert [r for r in rows if r["attack"] == "clean"] == kept
    assert fourth.manifest["invocations"][-1]["units_redone"] == 0


def test_a_failure_while_redoing_keeps_the_rows_until_a_redo_succeeds(tmp_path, monkeypatch):
    first = _run(tmp_path)
    _rewrite(first.run_dir, _without_pgd("f" * 16))

    def broken(*args, **kwargs):
        raise RuntimeError("attack exploded")

    monkeypatch.setattr(execute, "attack_unit", broken)
    again = _run(tmp_path)
    rows = read_rows(again.run_dir)
    # an error never replaces good rows (issue 31, item 2): clean keeps the other detector's rows until a
    # redo succeeds, and the same command tries again
    assert {(r["attack"], r["status"]) for r in rows} == {("clean", "ok"), ("pgd", "error")}
    assert {r["detector_digest"] for r in rows if r["attack"] == "clean"} == {"f" * 16}
    assert all("attack exploded" in r["reason"] for r in rows if r["status"] == "error")
    assert any(
        "clean: the recompute failed (RuntimeError: attack exploded)" in w for w in again.manifest["warnings"]
    )


def test_a_results_file_from_before_the_digest_is_read_and_extended(tmp_path):
    run = _run(tmp_path)
    _rewrite(
        run.run_dir,
        # a file written before the digest (and the later backbone and warnings) columns existed
        lambda r: (
            None
            if r["attack"] == "pgd"
            else {k: v for k, v in r.items() if k not in ("detector_digest", "backbone", "warnings")}
        ),
    )
    header = (run.run_dir / "results.csv").read_text().splitlines()[0].split(",")
    assert header == store.PRE_DIGEST_COLUMNS
    old = store.ResultStore(run.run_dir).read_rows()
    assert old and {r["detector_digest"] for r in old} == {""}
    assert store.ResultStore(run.run_dir).detector_digests() == {("oe", "class0", 0): {"clean": ""}}
    more = _run(tmp_path)
    header = (more.run_dir / "results.csv").read_text().splitlines()[0].split(",")
    assert header == store.COLUMNS
    rows = read_rows(more.run_dir)
    assert {r["detector_digest"] for r in rows if r["attack"] == "clean"} == {""}
    assert len({r["detector_digest"] for r in rows if r["attack"] == "pgd"}) == 1


def test_rows_without_a_detector_have_no_digest(tmp_path):
    run = execute_run(tmp_path, methods=["msp"], protocol="nd", attacks=["clean"], cells=["class0"])
    rows = read_rows(run.run_dir)
    assert rows and {(r["status"], r["detector_digest"]) for r in rows} == {("na", "")}
