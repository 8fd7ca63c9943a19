"""The ``hpo`` command: a thin click layer over the library.

Each command parses arguments, calls one library function and prints. Library errors
(:class:`~hpo.errors.HpoError`) become ``Error: <one line>`` with their exit code (2 for bad
input) and no traceback.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from typing import Any, TypeVar

import click

from hpo.compare.arms import DEFAULT_ARMS
from hpo.config.spec import SPEC_ATTR, StudySpec, load_spec
from hpo.coord import logs
from hpo.coord.failures import storage_failure
from hpo.coord.heartbeat import MAX_INTERVAL, MIN_INTERVAL
from hpo.coord.storage import mask, mask_text, resolve_url
from hpo.errors import HpoError


class _Group(click.Group):
    """The error boundary: whatever a user handed hpo ends here as one ``Error:`` line."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as err:  # click's own checks of options and arguments
            raise _one_line(_usage_message(err), 2) from None
        except HpoError as err:
            raise _one_line(str(err), err.exit_code) from None
        except OSError as err:
            # A file or disk that failed where no library call expected it (a full disk under
            # a CSV export, the study lock on a read-only disk) is still the user's to fix.
            if err.filename:
                raise _one_line(str(storage_failure(err)), 2) from None
            raise _one_line(str(err.strerror or err), 2) from None
        except Exception as err:
            failure = storage_failure(err)  # a database error the storage layer did not map
            if failure is None:
                raise
            raise _one_line(str(failure), failure.exit_code) from None


def _one_line(message: str, exit_code: int) -> click.ClickException:
    text = " ".join(mask_text(message).split()) or "unknown error"
    exc = click.ClickException(text)
    exc.exit_code = exit_code
    return exc


def _usage_message(err: click.UsageError) -> str:
    """click's message, with the command's help named on the same line."""
    command = err.ctx.command_path if err.ctx is not None else "hpo"
    return f"{err.format_message()} (see '{command} --help')"


class _FiniteFloat(click.FloatRange):
    """A float range that also refuses NaN and ±inf (NaN passes every comparison)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number


# Bounds far above real use, so that a slip (an extra zero) is refused before anything starts:
# every worker is a process that loads the data, and torch allocates per thread.
MAX_WORKERS = 256
MAX_THREADS = 1024
MAX_TRIALS = 10**9
MAX_TOP = 1000  # configurations retrained by 'hpo confirm'
MAX_CONFIRM_SEEDS = 1000  # seeds per configuration, as train.repeats


def _spec_and_url(study_file: str, storage: str | None) -> tuple[StudySpec, str]:
    spec = load_spec(study_file)
    return spec, resolve_url(spec.name, spec.storage, storage)


study_file_arg = click.argument("study_file", type=click.Path(dir_okay=False))
storage_opt = click.option(
    "--storage",
    metavar="URL",
    help="Storage URL (overrides $HPO_STORAGE and the study file), e.g. "
    "sqlite:///storage/x.db or postgresql+psycopg://user@host/db.",
)
data_dir_opt = click.option(
    "--data-dir",
    type=click.Path(file_okay=False),
    help="Fashion-MNIST root (holds FashionMNIST/raw); default $HPO_DATA_DIR or ./data.",
)
threads_opt = click.option(
    "--threads",
    type=click.IntRange(1, MAX_THREADS),
    help="Torch threads per worker (default: cores/workers).",
)
F = TypeVar("F", bound=Callable[..., Any])


def workers_opt(help: str) -> Callable[[F], F]:
    return click.option(
        "--workers", default=1, show_default=True, type=click.IntRange(1, MAX_WORKERS), help=help
    )


heartbeat_opt = click.option(
    "--heartbeat",
    "heartbeat",
    type=_FiniteFloat(MIN_INTERVAL, MAX_INTERVAL),
    metavar="SECONDS",
    help="How often every worker of the study signals it is alive (stored in the study; "
    "default 10). A trial silent for 4 beats is failed and queued again.",
)


@click.group(cls=_Group)
@click.version_option(package_name="hpo")
def main() -> None:
    """hpo: tune a PyTorch MLP on Fashion-MNIST with Optuna, from a study file.

    \b
    Example:
        hpo run studies/quickstart.toml --workers 2
        hpo best studies/quickstart.toml --json
    """


@main.command()
@study_file_arg
@workers_opt("Local worker processes.")
@click.option(
    "--n-trials", type=click.IntRange(1, MAX_TRIALS), help="Override the study's trial budget."
)
@storage_opt
@data_dir_opt
@threads_opt
@heartbeat_opt
def run(
    study_file: str,
    workers: int,
    n_trials: int | None,
    storage: str | None,
    data_dir: str | None,
    threads: int | None,
    heartbeat: float | None,
) -> None:
    """Create (or resume) the study and run it to its budget.

    Ctrl-C (or SIGTERM) stops every worker within moments: running trials are given back to
    the study, and the same command resumes it.

    \b
    Example:
        hpo run studies/quickstart.toml --workers 2
    """
    from hpo.coord.runner import run_study
    from hpo.insight.analysis import after_run

    spec, url = _spec_and_url(study_file, storage)
    click.echo(f"storage: {mask(url)}")
    logs.configure(logging.WARNING)
    report = run_study(
        spec,
        url,
        workers=workers,
        n_trials=n_trials,
        data_dir=data_dir,
        threads=threads,
        heartbeat_seconds=heartbeat,
        echo=click.echo,
        on_finish=lambda study: after_run(study, spec, click.echo),
    )
    _print_status(report.status, spec.metric)
    if report.stopped_by:
        click.echo(
            f"stopped by {report.stopped_by}: this run finished {report.finished_here} "
            f"trial(s); running trials were given back. Run the same command to resume."
        )
    report.check_workers()


@main.command()
@study_file_arg
@click.option(
    "--n-trials", type=click.IntRange(1, MAX_TRIALS), help="Override the study's trial budget."
)
@storage_opt
@heartbeat_opt
def create(
    study_file: str, n_trials: int | None, storage: str | None, heartbeat: float | None
) -> None:
    """Create the study in storage without running trials (then start workers).

    \b
    Example:
        hpo create studies/grid_smoke.toml --storage postgresql+psycopg://postgres@db/hpo
    """
    from hpo.coord.runner import create as create_study

    spec, url = _spec_and_url(study_file, storage)
    create_study(spec, url, n_trials, heartbeat)
    click.echo(f"study {spec.name} ready in {mask(url)}")


@main.command()
@study_file_arg
@storage_opt
@data_dir_opt
@threads_opt
@click.option(
    "--confirm",
    "join_confirm",
    is_flag=True,
    help="Join the study's confirm study (<name>.confirm, started by 'hpo confirm') instead.",
)
def worker(
    study_file: str,
    storage: str | None,
    data_dir: str | None,
    threads: int | None,
    join_confirm: bool,
) -> None:
    """Join an existing study and run trials until its budget is spent.

    Run this on any number of machines against one shared storage. SIGINT/SIGTERM gives the
    running trial back to the study and exits 0 within moments.

    \b
    Example:
        hpo worker studies/flagship.toml --storage postgresql+psycopg://hpo@db-host/hpo
        hpo worker studies/flagship.toml --confirm --storage postgresql+psycopg://hpo@db-host/hpo
    """
    from hpo.coord.progress import trial_line
    from hpo.coord.worker import run_worker

    spec, url = _spec_and_url(study_file, storage)
    if join_confirm:
        from hpo.coord.confirm import confirm_spec_of

        spec = confirm_spec_of(spec, url)
    click.echo(f"worker joining {spec.name} in {mask(url)}")
    logs.configure(logging.INFO)
    summary = run_worker(
        spec,
        url,
        data_dir=data_dir,
        threads=threads,
        on_trial=lambda t: click.echo(trial_line(t, spec.metric)),
    )
    ending = f"stopped by {summary.stopped_by}" if summary.stopped_by else "done"
    click.echo(
        f"worker {ending}: {summary.complete} complete, {summary.pruned} pruned, "
        f"{summary.failed} failed, {summary.given_back} given back"
    )


@main.command()
@study_file_arg
@storage_opt
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def status(study_file: str, storage: str | None, as_json: bool) -> None:
    """Show trial counts by state and the best trial so far.

    \b
    Example:
        hpo status studies/quickstart.toml
    """
    from hpo.config.pruners import legacy_note
    from hpo.coord import results

    spec, url = _spec_and_url(study_file, storage)
    study = results.open_study(spec, url)
    info = results.status(study)
    if as_json:
        click.echo(json.dumps(info, indent=2))
    else:
        click.echo(f"storage: {mask(url)}")
        _print_status(info, spec.metric)
        if why := legacy_note(study.user_attrs.get(SPEC_ATTR)):
            click.echo(f"note: {why}")


skip_eval_opt = click.option(
    "--skip-eval",
    is_flag=True,
    help="Skip the best model's per-class test metrics (they need one seeded retrain of the "
    "best trial, done once and kept in the study).",
)


@main.command()
@study_file_arg
@storage_opt
@data_dir_opt
@skip_eval_opt
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def best(
    study_file: str, storage: str | None, data_dir: str | None, skip_eval: bool, as_json: bool
) -> None:
    """Show the best trial: params, metrics, and per-class test metrics of its model.

    The model is the best trial retrained with its seed (checked against its recorded
    validation accuracy), once; the result is kept in the study.

    \b
    Example:
        hpo best studies/quickstart.toml --json
    """
    from hpo.coord import results
    from hpo.insight.confirm import read_confirmation
    from hpo.insight.evaluation import evaluate_best, render

    spec, url = _spec_and_url(study_file, storage)
    study = results.open_study(spec, url)
    info = results.best(study, spec.metric)
    confirmation = read_confirmation(study, spec.metric)
    evaluation = None if skip_eval else evaluate_best(study, spec, data_dir, echo=_err)
    if as_json:
        info["evaluation"] = evaluation.to_dict() if evaluation else None
        info["confirmation"] = confirmation.to_dict() if confirmation else None
        if confirmation:
            info["confirmation"]["headline"] = confirmation.headline(info["number"])
        click.echo(json.dumps(info, indent=2))
        return
    click.echo(f"best trial #{info['number']}: {spec.metric} = {info['value']:.4f}")
    if confirmation:
        click.echo(f"  {confirmation.headline(info['number'])}")
    for key, value in info["params"].items():
        click.echo(f"  {key} = {value}")
    for key, value in info["metrics"].items():
        click.echo(f"  [{key}] {value:.4f}" if isinstance(value, float) else f"  [{key}] {value}")
    if evaluation:
        click.echo(render(evaluation))


@main.command()
@study_file_arg
@storage_opt
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def claims(study_file: str, storage: str | None, as_json: bool) -> None:
    """Judge the study file's [[claim]] tables on the study's trials.

    Each claim is supported, contradicted or shows no clear difference, with the effect, its
    95% interval (over configurations and training seeds) and the trials behind each side;
    an unclear one says roughly how many more seeds would settle it.

    \b
    Example:
        hpo claims studies/claims/balance.toml --json
    """
    from hpo.insight.claims import study_verdicts

    spec, url = _spec_and_url(study_file, storage)
    verdicts = study_verdicts(spec, url)
    if as_json:
        click.echo(json.dumps([v.to_dict() for v in verdicts], indent=2))
        return
    for v in verdicts:
        click.echo(v.sentence())
        for side in v.sides:
            click.echo(f"  {side.describe()}")


@main.command()
@study_file_arg
@click.option(
    "--top",
    default=3,
    show_default=True,
    type=click.IntRange(1, MAX_TOP),
    help="How many of the study's best configurations to retrain.",
)
@click.option(
    "--seeds",
    default=5,
    show_default=True,
    type=click.IntRange(2, MAX_CONFIRM_SEEDS),
    help="Fresh training seeds per configuration (at least 2: an interval needs two).",
)
@workers_opt("Local worker processes (more can join from anywhere: 'hpo worker --confirm').")
@storage_opt
@data_dir_opt
@threads_opt
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def confirm(
    study_file: str,
    top: int,
    seeds: int,
    workers: int,
    storage: str | None,
    data_dir: str | None,
    threads: int | None,
    as_json: bool,
) -> None:
    """Retrain the study's top configurations under fresh seeds; say if the best is confirmed.

    The retraining is a study of its own, <name>.confirm in the same storage, with every
    (configuration, seed) pair run once; workers on other machines join it with
    'hpo worker STUDY_FILE --confirm'. Prints each configuration's mean validation and test
    accuracy with 95% intervals, and whether the best is distinguishable from the runner-up
    (paired t-test over seeds). The same command resumes it, or reads it once done.

    \b
    Example:
        hpo confirm studies/quickstart.toml --top 3 --seeds 5 --workers 2
    """
    from hpo.coord.results import open_study
    from hpo.insight.analysis import after_run
    from hpo.insight.confirm import confirm_study

    spec, url = _spec_and_url(study_file, storage)
    if not as_json:
        click.echo(f"storage: {mask(url)}")
    logs.configure(logging.WARNING)
    found = confirm_study(
        spec,
        url,
        top=top,
        seeds=seeds,
        workers=workers,
        data_dir=data_dir,
        threads=threads,
        echo=_err if as_json else click.echo,
    )
    after_run(open_study(spec, url), spec, _err)  # the study's note now says it
    if as_json:
        click.echo(json.dumps(found.to_dict(), indent=2))
        return
    click.echo(found.table().render("text"))
    click.echo(found.sentence())


@main.command()
@study_file_arg
@storage_opt
@data_dir_opt
@skip_eval_opt
def analyze(study_file: str, storage: str | None, data_dir: str | None, skip_eval: bool) -> None:
    """Save hpo's figures and the study note into the study; print the note.

    One figure per question (importance, widths, depth, batch size, learning curves, learning
    rate, efficiency frontier), shown by 'hpo dashboard' next to optuna-dashboard's own.

    \b
    Example:
        hpo analyze studies/quickstart.toml
    """
    from hpo.insight.analysis import analyze_study

    spec, url = _spec_and_url(study_file, storage)
    result = analyze_study(spec, url, data_dir=data_dir, evaluate=not skip_eval, echo=_err)
    click.echo(result.markdown())
    click.echo(
        f"saved {len(result.figures)} figures and the note to study {spec.name}; "
        f"see them with: hpo dashboard {study_file}"
    )


@main.command()
@study_file_arg
@storage_opt
@data_dir_opt
@skip_eval_opt
@click.option(
    "-o", "--output", required=True, type=click.Path(dir_okay=False), help="HTML file to write."
)
def report(
    study_file: str, storage: str | None, data_dir: str | None, skip_eval: bool, output: str
) -> None:
    """Write one self-contained HTML report (opens offline): figures, tables, study file.

    \b
    Example:
        hpo report studies/quickstart.toml -o report.html
    """
    from hpo.insight.analysis import analyze_study
    from hpo.insight.report import write

    spec, url = _spec_and_url(study_file, storage)
    result = analyze_study(
        spec, url, data_dir=data_dir, evaluate=not skip_eval, save_to_study=False, echo=_err
    )
    path = write(result, url, output)
    click.echo(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")


@main.command()
@study_file_arg
@storage_opt
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on; 0.0.0.0 opens the dashboard to the network.",
)
@click.option(
    "--port",
    default=8080,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Port to listen on (0: any free port).",
)
def dashboard(study_file: str, storage: str | None, host: str, port: int) -> None:
    """Serve optuna-dashboard on the study's storage and print the study's URL.

    Shows optuna-dashboard's pages (history, importance, contour, slice, parallel coordinates,
    intermediate values) and hpo's figures and note saved by 'hpo run' or 'hpo analyze'.

    \b
    Example:
        hpo dashboard studies/quickstart.toml --port 8080
    """
    from hpo.insight.dashboard import serve

    spec, url = _spec_and_url(study_file, storage)
    serve(spec, url, host, port, echo=click.echo)


@main.command()
@study_file_arg
@storage_opt
@click.option(
    "-o", "--output", required=True, type=click.Path(dir_okay=False), help="CSV file to write."
)
def export(study_file: str, storage: str | None, output: str) -> None:
    """Write one CSV row per trial: params, state, metrics, seconds.

    \b
    Example:
        hpo export studies/quickstart.toml -o trials.csv
    """
    from hpo.coord import results

    spec, url = _spec_and_url(study_file, storage)
    rows = results.export_csv(results.open_study(spec, url), output)
    click.echo(f"wrote {rows} trials to {output}")


@main.command()
@study_file_arg
@click.option(
    "--samplers",
    default=DEFAULT_ARMS,
    show_default=True,
    help="Comma-separated samplers; a '-pruned' suffix adds the study's pruner (tpe-pruned); "
    "a last '-ordinal' or '-categorical' searches every list of numbers so (tpe-categorical).",
)
@click.option(
    "--repeats",
    default=3,
    show_default=True,
    type=click.IntRange(1, 1000),
    help="Seeds per sampler.",
)
@click.option(
    "--budget",
    metavar="N[trials|epochs|s]",
    help="Compute per run in trials, training epochs or seconds (default: the grid's size).",
)
@workers_opt("Local worker processes per study (with --replay: replay processes).")
@click.option(
    "--replay",
    is_flag=True,
    help="Run only the grid live; replay the other samplers against its recorded curves.",
)
@click.option(
    "--tolerance",
    default=0.002,
    show_default=True,
    type=_FiniteFloat(min=0),
    help="How close to the grid's best counts as reached (0.002 = 0.2 pp of accuracy).",
)
@click.option(
    "--correction",
    type=click.Choice(["holm", "bonferroni"]),
    default="holm",
    show_default=True,
    help="Multiple-comparison correction over the pairs of samplers.",
)
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(file_okay=False),
    help="Directory for compare.html and the CSV files.",
)
@storage_opt
@data_dir_opt
@threads_opt
def compare(
    study_file: str,
    samplers: str,
    repeats: int,
    budget: str | None,
    workers: int,
    replay: bool,
    tolerance: float,
    correction: str,
    output: str,
    storage: str | None,
    data_dir: str | None,
    threads: int | None,
) -> None:
    """Compare samplers (grid, random, TPE, ± pruning) on the study's space, over seeds.

    Each sampler and seed runs as its own study in the same storage
    (<study>--<sampler>[-pruned]--s<seed>); finished ones are read, not rerun.

    \b
    Example:
        hpo compare studies/compare_grid_vs_tpe.toml --samplers grid,random,tpe-pruned \\
            --repeats 3 --workers 2 -o compare-out
        hpo compare studies/compare_grid_vs_tpe.toml --replay --repeats 100 -o replay-out
    """
    from hpo.compare import report
    from hpo.compare.arms import parse_arms, parse_budget
    from hpo.compare.run import run_comparison

    spec, url = _spec_and_url(study_file, storage)
    comparison = run_comparison(
        spec,
        url,
        arms=parse_arms(samplers, spec),
        repeats=repeats,
        budget=parse_budget(budget, spec),
        workers=workers,
        replay=replay,
        tolerance=tolerance,
        correction=correction,
        data_dir=data_dir,
        threads=threads,
        echo=click.echo,
    )
    click.echo(report.text(comparison))
    for path in report.write(comparison, output):
        click.echo(f"wrote {path}")


@main.command()
@click.argument("study_files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@storage_opt
def validate(study_files: tuple[str, ...], storage: str | None) -> None:
    """Check study files, and the storage URL each would use, as 'hpo run' does.

    Creates nothing and connects nowhere: a SQLite URL is checked on disk (a file can be
    there, an existing one is SQLite), a server's URL for its form.

    \b
    Example:
        hpo validate studies/*.toml
    """
    for path in study_files:
        spec, url = _spec_and_url(path, storage)
        size = f", {len(spec.grid())} grid points" if spec.is_grid else ""
        if spec.train.repeats > 1:
            size += f" × {spec.train.repeats} training seeds"
        click.echo(
            f"{path}: ok (study {spec.name}, sampler {spec.sampler.name}{size}, "
            f"storage {mask(url)})"
        )


def _err(message: str) -> None:
    click.echo(message, err=True)


def _print_status(info: dict[str, Any], metric: str | None = None) -> None:
    from hpo.coord.progress import status_line

    click.echo(f"study {info['study']}: {status_line(info, metric or 'value')}")
