"""Configuration: a study file read into frozen, validated dataclasses.

Everything a study file can say is checked here before anything runs: the search space and its
conditional structure, the sampler and pruner (name → factory registries, options checked by
name, by the type the Optuna constructor declares, and by range), the budget, data split and
fixed training settings. Imports Optuna (for distributions and registries) but never torch.

- ``spec``: study file → :class:`~hpo.config.spec.StudySpec`; ``space``: the search space
- ``registry`` / ``samplers`` / ``pruners``: name → factory registries
- ``suggest``: every ``suggest_*`` call, one point of the space drawn through a trial
- ``claims`` / ``repeats`` / ``confirm``: [[claim]] tables; training seeds per grid point;
  the spec of a confirm study (top configurations × fresh seeds)
"""
