"""The results model: the one seam between stored rows and every table, page and check built on them.

- :mod:`bench.results.rows`: read results.csv files and run folders (``Source``), combine several runs;
- :mod:`bench.results.stats`: per-cell and per-seed statistics, the leaderboard with its worst-case
  column, attack budgets, validity warnings;
- :mod:`bench.results.published`: the papers' numbers and ours beside them.

``report``, ``site``, ``paper_table``, ``compare`` and ``baseline`` read results through these; pages
(:mod:`bench.site`, :mod:`bench.report`) and plots (:mod:`bench.plots`) are functions of what they return.
"""
