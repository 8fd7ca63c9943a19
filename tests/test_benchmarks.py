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
