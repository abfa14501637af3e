"""Speed of the commands a researcher waits on (pytest-benchmark): reported, never a failure of the default
suite, whose machines are shared and noisy. ``make bench-speed`` runs them with the attack benchmarks."""

from __future__ import annotations

import pytest

from bench.plan import RunSpec, plan_run

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("profile", ["quick", "paper"])
def test_dry_run_speed(benchmark, profile, capsys):
    """Planning and printing the main command's grid (tests/test_provenance.py checks it builds no data);
    the paper profile's dry run is meant to stay under 5 s."""
    from bench.cli import print_dry_run

    def dry_run():
        print_dry_run(
            plan_run(RunSpec(methods=["rodeo", "atom"], protocol="nd", profile=profile, dry_run=True))
        )

    benchmark.pedantic(dry_run, rounds=3, iterations=1)
    assert "attack budget" in capsys.readouterr().out
