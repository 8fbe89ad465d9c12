"""``ctxsvc bench``: localization tasks from git history, run against ctxsvc and baselines.

    tasks.py       the task record and the JSON-lines task files
    gitrepo.py     reading a repository; snapshots checked out into a private clone
    mining.py      tasks from first-parent history: query, gold files, changed regions
    baselines.py   BM25 over files and windows, the oracle, greedy packing
    metrics.py     file hit, region recall, savings, percentiles, aggregation
    runner.py      every task through every system at every budget, snapshot by snapshot
    report.py      the report as JSON, Markdown and PNG plots
    terminal.py    rich tables and progress
    repository.py  one repository end to end (what ``ctxsvc bench`` calls)

``benchmarks/localization.py`` runs the shared task files through the same
runner, so published figures and a user's own run come from one code path.
"""
