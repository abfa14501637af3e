"""python -m bench.paper_table: ours beside the published mean-over-cells rows, partial grids marked."""

from __future__ import annotations

from bench.paper_table import comparison_rows, main, markdown
from tests.test_site import make_run, unit_rows

PUBLISHED = (
    "method,protocol,dataset,cell,attack,metric,value,source\n"
    "atom,nd,digits,mean,clean,auroc,92.0,RODEO Table 1a\n"
    "atom,nd,digits,mean,pgd,auroc,70.0,RODEO Table 1a\n"
    "atom,nd,digits,class0,pgd,auroc,10.0,RODEO Table 3\n"  # a per-class row: not in the mean table
    "oe,nd,digits,mean,pgd,auroc,50.0,RODEO Table 1a\n"  # we did not run oe: no row
)


def _fixture(tmp_path):
    rows = []
    for cell, clean, pgd in (("class0", 0.9, 0.6), ("class1", 0.8, 0.7)):
        rows += unit_rows("atom", cell, 0, "clean", clean, dataset="digits")
        rows += unit_rows("atom", cell, 0, "pgd", pgd, dataset="digits")
    run = make_run(tmp_path / "run", rows)
    published = tmp_path / "published"
    published.mkdir()
    (published / "rodeo.csv").write_text(PUBLISHED, encoding="utf-8")
    return run, published


def test_rows_difference_cells_and_gap(tmp_path):
    run, published = _fixture(tmp_path)
    rows = comparison_rows([run], published)
    assert [(r["attack"], r["published"], r["diff"], r["cells_ran"], r["cells_total"]) for r in rows] == [
        ("clean", "92.0", "-7.0", 2, 10),  # ours (90 + 80) / 2 = 85.0
        ("pgd", "70.0", "-5.0", 2, 10),  # ours 65.0
    ]
    table = markdown(rows, gap=5.0).splitlines()
    assert len(table) == 4 and table[1].count("---") == 10
    assert "-7.0 (gap)" in table[2] and "(gap)" not in table[3]  # 5.0 is not above the gap
    assert "2 of 10 (partial)" in table[2]


def test_cli_prints_the_table_and_refuses_a_missing_folder(tmp_path, capsys):
    run, published = _fixture(tmp_path)
    assert main([str(run), "--published", str(published)]) == 0
    assert "| digits | nd | atom | pgd | 65.0 | 70.0 | -5.0 |" in capsys.readouterr().out
    assert main([str(run), "--published", str(tmp_path / "nowhere")]) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_cells_planned_come_from_the_manifest_without_the_data(tmp_path, monkeypatch):
    """A clone of the committed results prints the table without the data files: the planned cells come
    from the manifest (units over methods x seeds x attacks), not from building the data set."""
    import json

    from bench.paper_table import planned_cells
    from bench.registry import DATASETS

    run, published = _fixture(tmp_path)
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["config"] = {"dataset": "digits", "protocol": "nd", "methods": {"atom": {}}, "seeds": [0]}
    manifest["config"]["attacks"] = {"clean": {}, "pgd": {}}
    manifest["invocations"] = [{"units_total": 14}]  # 7 cells planned
    (run / "manifest.json").write_text(json.dumps(manifest))
    assert planned_cells(manifest) == (("digits", "nd"), 7)
    assert planned_cells({}) == (None, 0)
    monkeypatch.setattr(DATASETS, "get", lambda name: (_ for _ in ()).throw(AssertionError("data built")))
    assert {r["cells_total"] for r in comparison_rows([run], published)} == {7}


def test_grid_prints_each_cell_in_attack_order_and_marks_pending_methods(tmp_path, capsys):
    import json

    rows = []
    for cell, clean, pgd in (("class10", 0.95, 0.5), ("class2", 0.9, 0.6)):
        rows += unit_rows("atom", cell, 0, "pgd", pgd, dataset="digits")  # stored before clean
        rows += unit_rows("atom", cell, 0, "clean", clean, dataset="digits")
    run = make_run(tmp_path / "run", rows)
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["config"] = {"dataset": "digits", "protocol": "nd", "methods": {"oe": {}, "atom": {}}}
    (run / "manifest.json").write_text(json.dumps(manifest))
    assert main(["--grid", str(run)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "| data, nd cell | oe | atom |",
        "| --- | --- | --- |",
        "| digits class2 | (pending) | 90.0 / 60.0 |",  # class2 before class10, clean before pgd
        "| digits class10 | (pending) | 95.0 / 50.0 |",
    ]


def test_compact_folds_attacks_and_tables_printing_the_same_numbers(tmp_path, capsys):
    """--compact: one row per method and published numbers; a table printing a subset of another's
    numbers folds into it, in reading order (1a, 3c, 10), while one printing another number keeps a row."""
    run, published = _fixture(tmp_path)
    (published / "rodeo.csv").write_text(
        "method,protocol,dataset,cell,attack,metric,value,source\n"
        'atom,nd,digits,mean,clean,auroc,92.0,"RODEO Table 10, row ATOM, column Clean"\n'
        'atom,nd,digits,mean,pgd,auroc,70.0,"RODEO Table 10, row ATOM, column PGD"\n'
        'atom,nd,digits,mean,clean,auroc,92.0,"RODEO Table 1a, row ATOM, column Clean"\n'
        'atom,nd,digits,mean,pgd,auroc,70.0,"RODEO Table 1a, row ATOM, column PGD"\n'
        'atom,nd,digits,mean,pgd,auroc,70.0,"RODEO Table 3c, row ATOM, column PGD"\n'
        'atom,nd,digits,mean,clean,auroc,95.0,"RODEO Table 4, row ATOM, column Clean"\n',
        encoding="utf-8",
    )
    assert main([str(run), "--published", str(published), "--compact"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[2:] == [
        "| digits | nd | atom | clean / PGD | 85.0 / 65.0 | 92.0 / 70.0 | -7.0 (gap) / -5.0 "
        "| 2 of 10 (partial) "
        "| RODEO Tables 1a, 3c, 10 |",
        "| digits | nd | atom | clean | 85.0 | 95.0 | -10.0 (gap) | 2 of 10 (partial) | RODEO Table 4 |",
    ]


def _planned_run(tmp_path, rows, attacks=("clean", "pgd")):
    import json

    run = make_run(tmp_path / "run", rows)
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["config"] = {"dataset": "digits", "protocol": "nd", "methods": {"atom": {}}, "seeds": [0]}
    manifest["config"]["attacks"] = dict.fromkeys(attacks, {})
    manifest["invocations"] = [{"units_total": 20}]  # 10 cells planned
    (run / "manifest.json").write_text(json.dumps(manifest))
    return run


def test_a_group_in_flight_counts_in_neither_table(tmp_path, capsys):
    """class1 has clean but not yet pgd (its group is running): the grid leaves it out, and the comparison
    averages class0 alone for both attacks instead of mixing one cell's pgd with two cells' clean."""
    rows = unit_rows("atom", "class0", 0, "clean", 0.9, dataset="digits")
    rows += unit_rows("atom", "class0", 0, "pgd", 0.6, dataset="digits")
    rows += unit_rows("atom", "class1", 0, "clean", 0.5, dataset="digits")
    run = _planned_run(tmp_path, rows)
    _, published = _fixture(tmp_path / "pub")
    rows = comparison_rows([run], published)
    assert [(r["attack"], r["ours"].text(), r["cells_ran"]) for r in rows] == [
        ("clean", "90.0", 1),
        ("pgd", "60.0", 1),
    ]
    assert main(["--grid", str(run)]) == 0
    assert capsys.readouterr().out.splitlines()[2:] == ["| digits class0 | 90.0 / 60.0 |"]


def test_readme_blocks_are_rewritten_from_the_runs_and_bad_input_is_refused(tmp_path, capsys):
    rows = []
    for attack, value in (("clean", 0.9), ("pgd", 0.6)):
        rows += unit_rows("atom", "class0", 0, attack, value, dataset="digits")
    _planned_run(tmp_path / "results" / "reference", rows)
    (tmp_path / "results" / "published").mkdir(parents=True)
    (tmp_path / "results" / "published" / "rodeo.csv").write_text(PUBLISHED, encoding="utf-8")
    readme = tmp_path / "README.md"
    readme.write_text(
        "text\n<!-- paper_table --grid results/reference/* -->\nstale\n<!-- /paper_table -->\nmore\n"
        "<!-- paper_table --compact results/reference/* -->\n<!-- /paper_table -->\n",
        encoding="utf-8",
    )
    assert main(["--readme", str(readme)]) == 0
    assert "2 blocks, rewritten" in capsys.readouterr().out
    text = readme.read_text(encoding="utf-8")
    assert "stale" not in text and text.startswith("text\n<!-- paper_table --grid results/reference/* -->\n")
    assert "| digits class0 | 90.0 / 60.0 |" in text and "\nmore\n" in text
    assert "| digits | nd | atom | clean / PGD | 90.0 / 60.0 | 92.0 / 70.0 |" in text
    assert main(["--readme", str(readme)]) == 0  # a second pass changes nothing
    assert "2 blocks, unchanged" in capsys.readouterr().out
    (tmp_path / "plain.md").write_text("no blocks\n", encoding="utf-8")
    assert main(["--readme", str(tmp_path / "plain.md")]) == 2
    assert "has no <!-- paper_table ARGS --> block" in capsys.readouterr().err


def test_cells_sets_each_cell_beside_the_papers_per_cell_rows(tmp_path, capsys):
    """--cells: the per-cell published rows (not the means), one row per cell of ours in cell order with
    its attacks folded; a published cell we have not run has no row, and the mean row is not among them."""
    run, published = _fixture(tmp_path)
    (published / "rodeo.csv").write_text(
        "method,protocol,dataset,cell,attack,metric,value,source\n"
        'atom,nd,digits,mean,clean,auroc,92.0,"RODEO Table 1a, row ATOM, column Clean"\n'
        'atom,nd,digits,class1,pgd,auroc,60.0,"RODEO Table 3c, row ATOM PGD, column 1"\n'
        'atom,nd,digits,class1,clean,auroc,81.0,"RODEO Table 3c, row ATOM Clean, column 1"\n'
        'atom,nd,digits,class0,clean,auroc,99.0,"RODEO Table 3c, row ATOM Clean, column 0"\n'
        'atom,nd,digits,class7,clean,auroc,50.0,"RODEO Table 3c, row ATOM Clean, column 7"\n',
        encoding="utf-8",
    )
    assert main([str(run), "--published", str(published), "--cells"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "| data | protocol | method | cell | attack | ours | published | ours - published | source |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        "| digits | nd | atom | class0 | clean | 90.0 | 99.0 | -9.0 (gap) | RODEO Table 3c |",
        "| digits | nd | atom | class1 | clean / PGD | 80.0 / 70.0 | 81.0 / 60.0 | -1.0 / +10.0 (gap) "
        "| RODEO Table 3c |",
    ]
