"""A rerun of stale units writes its artifacts again; a plain resume keeps them."""

from __future__ import annotations

from types import SimpleNamespace

from bench.execute import collect_artifacts
from bench.plan import Unit, UnitGroup
from bench.store import ResultStore


class WritesOne:
    def write_artifacts(self, task, ctx, folder):
        (folder / "exposure.json").write_text('{"generated": 2000}')


def plan_for(run_dir, stale):
    profile = object()
    cell = SimpleNamespace(cell_id="class0", task=SimpleNamespace(profile=profile))
    plan = SimpleNamespace(
        run_dir=run_dir,
        stale=stale,
        device="cpu",
        methods={"rodeo": WritesOne()},
        profile_for=lambda name: profile,
    )
    return plan, cell


def test_stale_units_replace_their_artifacts_and_a_resume_keeps_them(tmp_path):
    old = tmp_path / "artifacts" / "rodeo" / "class0-seed0"
    old.mkdir(parents=True)
    (old / "exposure.json").write_text('{"generated": 500}')
    (old / "exposure.png").write_bytes(b"old")
    group = UnitGroup("rodeo", "class0", 0, ("clean", "pgd"))

    plan, cell = plan_for(tmp_path, stale=[])
    assert collect_artifacts(plan, group, cell, cache=None, log=None) == {}

    plan, cell = plan_for(tmp_path, stale=[Unit("rodeo", "class0", 0, "pgd")])
    files = collect_artifacts(plan, group, cell, cache=None, log=None)
    assert files == {"exposure.json": b'{"generated": 2000}'}
    ResultStore(tmp_path).save_artifacts("rodeo/class0-seed0", files)
    assert sorted(p.name for p in old.iterdir()) == ["exposure.json"]  # the stale png is gone too
    assert (old / "exposure.json").read_text() == '{"generated": 2000}'
    assert not [p for p in old.parent.iterdir() if p.name.startswith(".")]  # no staging left behind
