"""Comparison: grid search against samplers and pruners, with statistics (``hpo compare``).

- ``arms``: what is compared (sampler ± pruner, seeds, budget)
- ``run``: running the arms as studies, or replaying them against a recorded grid
- ``replay``: a sampler and pruner replayed on a recorded full grid (no training)
- ``trace`` / ``stats``: runs as cost-ordered trials; best-so-far curves, AUC, tests
- ``report``: the comparison as terminal tables, CSV files and an HTML page
"""
