"""The benchmarks run (in quick mode, on a slice), so they cannot rot; their figures are theirs."""

from __future__ import annotations

import re

import pytest
import torch


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.slow
def test_trainer_benchmark_quick(fmnist_dir, capsys, restore_threads):
    from benchmarks import trainer

    trainer.main(["--quick", "--data-dir", str(fmnist_dir)])
    lines = capsys.readouterr().out.strip().splitlines()
    last = re.fullmatch(
        r"speedup_vs_dataloader=(\d+\.\d\d) ratio_to_batch1024=(\d+\.\d\d)", lines[-1]
    )
    assert last and float(last[1]) > 0 and float(last[2]) > 0
    for loop in ("tutorial", "plain", "bs 64", "bs 1024", "bs 32", "bs 16"):
        assert any(loop in line and re.search(r"\d\.\d{3}\s+\d\.\d{3}$", line) for line in lines)
    assert any(re.search(r"= \d+\.\d% of the trial", line) for line in lines)
    assert any(re.match(r"peak RSS .*: \d+ MiB", line) for line in lines)
    parity = r"  seed 0: plain 0\.\d{4} \| control 0\.\d{4} \| hpo 0\.\d{4}"
    assert any(re.match(parity, line) for line in lines)


@pytest.mark.slow
def test_trainer_ideas_quick(fmnist_dir, capsys, restore_threads):
    from benchmarks import trainer_ideas

    trainer_ideas.main(["--quick", "--data-dir", str(fmnist_dir)])
    out = capsys.readouterr().out
    assert out.count("* ") == 3  # what hpo keeps is marked in each table
    assert len(re.findall(r"\d+\.\d\s+\d+\.\d\s+\d+\.\d\d$", out, re.M)) >= 20


@pytest.mark.slow
def test_throughput_quick(fmnist_dir, capsys):
    from benchmarks import throughput

    throughput.main(["--device", "cpu", "--workers", "1", "--quick", "--data-dir", str(fmnist_dir)])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    match = re.fullmatch(r"trials_per_hour=(\d+) workers=1 device=cpu cuda_graph=False", last)
    assert match and int(match[1]) > 0


@pytest.mark.parametrize("script", ["gpu_prepare.sh", "gpu_check.sh"])
def test_gpu_scripts_parse(script):
    import subprocess
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / script
    result = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_quality_reads_each_side_the_same_way(tmp_path):
    """benchmarks/quality.py: the best complete trial (not a pruned one), its accuracies, the
    best-so-far curve in time order, where trials were pruned, best epochs that were not the
    last, and the paired interval over rounds."""
    import datetime

    import optuna
    from optuna.distributions import FloatDistribution
    from optuna.trial import FrozenTrial, TrialState

    from benchmarks.quality import interval, read

    url = f"sqlite:///{tmp_path}/q.db"
    study = optuna.create_study(study_name="q", storage=url)
    start = datetime.datetime(2026, 1, 1, 12, 0, 0)
    for k, (state, value) in enumerate(
        [(TrialState.COMPLETE, 0.5), (TrialState.PRUNED, 0.1), (TrialState.COMPLETE, 0.3),
         (TrialState.COMPLETE, 0.4), (TrialState.FAIL, None)]
    ):  # fmt: skip
        study.add_trial(
            FrozenTrial(
                number=k,
                trial_id=k,
                state=state,
                value=value if state == TrialState.COMPLETE else None,
                # trial 0's best epoch is its first (0.25), not its last
                intermediate_values=(
                    {1: 0.25, 2: value} if k == 0 else {1: value} if value is not None else {}
                ),
                params={"x": 0.1 * k},
                distributions={"x": FloatDistribution(0, 1)},
                user_attrs={"val_accuracy": 0.8 + k / 100, "test_accuracy": 0.7 + k / 100},
                system_attrs={},
                datetime_start=start,
                datetime_complete=start + datetime.timedelta(seconds=10 * (k + 1)),
            )
        )
    side = read("hpo", url, "q", start.timestamp())
    assert (side.finished, side.pruned) == (4, 1)
    best = (side.best_loss, side.best_accuracy, side.test_accuracy)
    assert best == pytest.approx((0.3, 0.82, 0.72))
    assert side.curve == [(10.0, 0.5), (30.0, 0.3)]
    assert side.pruned_after == {1: 1}
    assert (side.best_not_last, side.best_any_epoch) == (1, pytest.approx(0.25))

    mean, low, high = interval([-0.01, -0.02, -0.015, -0.012, -0.018])
    assert low < mean < high < 0
    assert interval([0.1])[1] != interval([0.1])[1]  # one round: no interval (NaN)


def test_repeats_counts_trials_that_took_an_earlier_point():
    from benchmarks.repeats import nearest_only, tally
    from hpo.compare.replay import Entry, GridRecord, point_key
    from hpo.config.ordinal import Listed
    from hpo.config.spec import parse_spec

    spec = parse_spec(
        {
            "study": {"name": "tiny", "metric": "val_accuracy"},
            "sampler": {"name": "grid"},
            "space": {"depth": 1, "units": [16, 64, 256], "batch_size": [32, 64, 128]},
        }
    )
    entries = {}
    for point in spec.grid():  # 9 points; the widest, smallest batch is best
        value = point["units_1"] / 256 - point["batch_size"] / 1024
        entries[point_key(point)] = Entry(dict(point), (value,), "COMPLETE", value, 1, 1.0, None)
    record = GridRecord(entries, "tiny")
    rule = Listed.sample_relative
    with nearest_only():
        assert Listed.sample_relative is not rule
        before = tally(spec, record, "random", "ordinal", seeds=2, budget=12)
    assert Listed.sample_relative is rule
    # 12 trials on 9 points: at least 3 repeat one, whatever the sampler
    assert len(before.repeats) == 2 and all(r >= 3 for r in before.repeats)
    assert max(before.bests) <= 1 - 32 / 1024 and 0 <= before.reached <= 2
