"""The `repbench` command line. Errors are one line on stderr and a non-zero exit, never a traceback."""
from __future__ import annotations

import functools
import os
import signal
import sys
import warnings
from pathlib import Path

import click
import yaml

from .config import PRESET_HELP, PRESETS
from .registry import PluginWarning
from .errors import RepbenchError

EXIT_ERROR, EXIT_INTERRUPTED = 2, 130
RESUME_ADVICE = {
    "run": "the last finished epoch's checkpoint is kept; run the same command with --resume to continue",
    "suite": "finished cells are kept and the interrupted ones keep their last finished epoch; run the same "
             "`repbench suite` command again to continue",
}


def friendly(advice: str = ""):
    """Turn repbench errors and Ctrl-C into one-line messages with distinct exit codes."""
    def deco(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kw):
            try:
                return fn(*args, **kw)
            except RepbenchError as exc:
                click.echo(f"error: {exc}", err=True)
                sys.exit(EXIT_ERROR)
            except KeyboardInterrupt:
                click.echo("interrupted" + (f": {advice}" if advice else ""), err=True)
                sys.exit(EXIT_INTERRUPTED)
        return wrapper
    return deco


def parse_pairs(pairs: tuple[str, ...], flag: str, parse_value=yaml.safe_load) -> dict:
    """KEY=VALUE pairs of a repeatable option, values read as YAML scalars."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise RepbenchError(f"{flag} expects KEY=VALUE, got '{pair}'")
        try:
            out[key.strip()] = parse_value(value)
        except yaml.YAMLError:
            raise RepbenchError(f"{flag} {key.strip()}: cannot read the value '{value}'") from None
    return out


# ------------------------------------------------------------------------------------------ shared options
def checked(kind: str):
    """A click callback that refuses a tracking URI MLflow cannot use or an experiment name it cannot store, as
    a usage error before any work."""
    def callback(ctx, param, value):
        if value is None or (kind == "experiment" and value == "repbench"):
            return value
        from .runs.tracking import check_tracking
        try:
            check_tracking(value if kind == "uri" else None, value if kind == "experiment" else None)
        except RepbenchError as exc:
            raise click.BadParameter(str(exc)) from None
        return value
    return callback


SHARED = {
    "results_dir": click.option("--results-dir", type=click.Path(path_type=Path), default=Path("results"),
                                show_default=True, help="Folder for run folders and the local MLflow store."),
    "tracking_uri": click.option("--tracking-uri", default=None, callback=checked("uri"),
                                 help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else a SQLite file "
                                      "under the results folder)."),
    "device": click.option("--device", default="auto", show_default=True, metavar="auto|cpu|cuda|cuda:N",
                           help="Where to train and evaluate; auto picks CUDA when present."),
    "data_root": click.option("--data-root", default=None, help="Folder of downloaded datasets (default: "
                                                                "$REPBENCH_DATA or ~/.cache/repbench/data)."),
    "quiet": click.option("--quiet", "-q", is_flag=True, help="No progress bars."),
    "experiment": click.option("--experiment", default="repbench", show_default=True, callback=checked("experiment"),
                               help="MLflow experiment name."),
}


def shared(*names):
    """Apply shared options by name, in the order given."""
    def deco(fn):
        for name in reversed(names):
            fn = SHARED[name](fn)
        return fn
    return deco


def battery_options(fn):
    """Options that choose and size the metric battery, shared by `run` and `eval`: --metrics, and one option per
    battery setting that declares a flag (measure/battery.py), with its help and the presets' values."""
    from .measure import battery_flags
    from .metrics import battery_metrics, default_metrics
    opts = [click.option("--metrics", default=",".join(default_metrics()), show_default=True,
                         help=f"Comma-separated metrics to run, among: {', '.join(battery_metrics())}.")]
    opts += [click.option(f.flag, f.name, type=click.Choice(f.choices) if f.choices else f.kind, default=None,
                          metavar=f.metavar, help=f.help) for f in battery_flags()]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


def battery_overrides(metrics: str, **given) -> dict:
    """The battery options the user set, as BatteryConfig fields; the rest come from the preset's battery."""
    from .measure import flag_values
    return {"metrics": tuple(m.strip() for m in metrics.split(",") if m.strip()), **flag_values(given)}


class OneLineGroup(click.Group):
    """Click's usage errors as one line too (`error: Invalid value for '--preset': ...`), not a usage block."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.ClickException as exc:
            where = getattr(getattr(exc, "ctx", None), "command_path", None)
            hint = f" (see `{where} --help`)" if isinstance(exc, click.UsageError) and where else ""
            click.echo(f"error: {exc.format_message()}{hint}", err=True)
            sys.exit(exc.exit_code)
        except click.exceptions.Abort:
            click.echo("interrupted", err=True)
            sys.exit(EXIT_INTERRUPTED)
        sys.exit(rv if isinstance(rv, int) else 0)


def one_line_warning(message, category, filename, lineno, line=None) -> str:
    return f"warning: {message}\n"


@click.group(cls=OneLineGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="repbench")
def cli():
    """repbench: benchmark representation learners (VAE, local and full PixelCNN VAEs, baselines)."""
    warnings.simplefilter("default", PluginWarning)
    warnings.formatwarning = one_line_warning
    from .malloc import setting_error
    if setting_error():
        bad = click.ClickException(setting_error())
        bad.exit_code = 2
        raise bad


# ------------------------------------------------------------------------------------------ run / eval
@cli.command()
@click.option("--model", "-m", "model", default="lpvae", show_default=True, help="Learner name (see `repbench ls`).")
@click.option("--h", "h", type=int, default=None, help="Decoder horizon for lpvae (integer >= 0; 0 = vae).")
@click.option("--dataset", "-d", default="mnist5k", show_default=True, help="Dataset name (see `repbench ls`).")
@click.option("--preset", "-p", type=click.Choice(PRESETS), default="quick", show_default=True,
              help="Model and training size: " + "; ".join(f"{k}: {v}" for k, v in PRESET_HELP.items()))
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for weights, batches and sampling.")
@click.option("--epochs", type=int, default=None, help="Override the preset's number of epochs.")
@click.option("--option", "-o", "options", multiple=True, metavar="KEY=VALUE",
              help="Any other learner option, e.g. -o width=128 -o lr=1e-3 (repeatable).")
@shared("device", "tracking_uri", "experiment", "results_dir", "data_root")
@click.option("--download", is_flag=True, help="Allow downloading the dataset if it is missing.")
@click.option("--resume", is_flag=True, help="Continue the interrupted run with the same configuration.")
@click.option("--no-augment", is_flag=True, help="Train without the dataset's augmentation (cifar10: crop + flip).")
@click.option("--grid", type=int, default=8, show_default=True, help="Images per row in the sample grid; 0 skips it.")
@shared("quiet")
@battery_options
@friendly(RESUME_ADVICE["run"])
def run(model, h, dataset, preset, seed, epochs, options, device, tracking_uri, experiment, results_dir, data_root,
        download, resume, no_augment, grid, quiet, metrics, **given):
    """Train one learner on one dataset, run the metrics, and log everything to MLflow."""
    from .measure import battery_for
    from .runs import RunSpec, run as run_one
    from .runs.runner import finished_run
    opts = parse_pairs(options, "--option")
    for key, value in (("h", h), ("epochs", epochs)):
        if value is None:
            continue
        if opts.get(key, value) != value:
            raise RepbenchError(f"--{key} {value} and -o {key}={opts[key]} disagree; give it once")
        opts[key] = value
    spec = RunSpec(learner=model, options=opts, dataset=dataset, preset=preset, seed=seed, device=device,
                   results_dir=results_dir, tracking_uri=tracking_uri, experiment=experiment, data_root=data_root,
                   download=download, resume=resume, progress=not quiet, grid=grid, augment=not no_augment,
                   battery=battery_for(preset, battery_overrides(metrics, **given)))
    done = None if resume else finished_run(spec)
    if done is not None:
        click.echo(f"note: {done.name} is a finished run of this configuration; `repbench run` trains it again, "
                   f"in a new folder (a run asked for by hand is never skipped: repeating one checks that it "
                   f"reproduces); to reuse it instead, `repbench eval --run {done.name}` measures more metrics on "
                   f"it without training, and a suite with this cell reuses it", err=True)
    print_result(run_one(spec), tracking_uri=tracking_uri)


@cli.command(name="eval")
@click.option("--run", "run_ref", default=None,
              help="MLflow run id, run folder name (a unique prefix will do) or run folder path.")
@click.option("--checkpoint", type=click.Path(path_type=Path), default=None, help="Any repbench checkpoint instead.")
@click.option("--features", type=click.Path(path_type=Path), default=None,
              help="Representations made elsewhere: an .npz with train, train_y, test, test_y (N x d floats, "
                   "integer labels), scored by the metrics that need only representations.")
@click.option("--name", default=None, help="With --features: the name shown in tables (default: the file's stem).")
@click.option("--dataset", "-d", default=None, help="Dataset of a --checkpoint (default mnist5k) or the dataset whose "
                                                    "splits --features holds, in its order (default external: other "
                                                    "images); a run's own.")
@shared("device", "tracking_uri", "experiment", "results_dir", "data_root", "quiet")
@battery_options
@friendly()
def eval_cmd(run_ref, checkpoint, features, name, dataset, device, tracking_uri, experiment, results_dir, data_root,
             quiet, metrics, **given):
    """Re-run the metric battery on a trained learner (representations come from the on-disk cache), or score
    representations made outside repbench."""
    from .runs import evaluate_saved
    if sum(map(bool, (run_ref, checkpoint, features))) != 1:
        raise RepbenchError("give exactly one of --run RUN_ID, --checkpoint PATH and --features FILE.npz")
    battery = battery_overrides(metrics, **given)
    default_list = metrics == ",".join(_default_metrics())
    if features:
        from .runs import evaluate_features
        if "metrics" in battery and default_list:
            battery.pop("metrics")  # the default list: every metric that applies to bare representations
        record = evaluate_features(features, name=name, dataset=dataset or "external", battery=battery,
                                   results_dir=results_dir, tracking_uri=tracking_uri, experiment=experiment,
                                   progress=not quiet, data_root=data_root)
    else:
        record = evaluate_saved(run_ref=run_ref, checkpoint=checkpoint, dataset=dataset, results_dir=results_dir,
                                battery=battery, device=device, tracking_uri=tracking_uri, data_root=data_root,
                                progress=not quiet)
    print_result(record, only=None if default_list else battery.get("metrics"), tracking_uri=tracking_uri)


def _default_metrics():
    from .metrics import default_metrics
    return default_metrics()


def run_link(run_id: str, tracking_uri: str | None) -> str:
    """`: <address of the run's page>` on a tracking server (a local store has no address: `repbench ui`)."""
    import os
    from .runs import connect, is_remote
    from .ui import run_page
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or ""
    if not is_remote(uri):
        return ""
    try:
        return f": {run_page(uri.rstrip('/'), connect(uri).get_run(run_id).info.experiment_id, run_id)}"
    except Exception:  # a server gone since the run ended: the id alone still finds the run
        return ""


def print_result(record: dict, only=None, tracking_uri: str | None = None) -> None:
    """The record's metrics as a table (with `only`: those metrics' values alone), timings, MLflow run. A probe
    whose solver did not converge says so beside its number, which no table or gate takes."""
    from tabulate import tabulate
    from .metrics import METRICS, metric_info, entry_of
    from .runs import unconverged
    metrics, settings, flagged = record["metrics"], record.get("measured_with", {}), unconverged(record)
    rows = []
    for name, value in metrics.items():
        if name.endswith("_std") or (only and getattr(entry_of(name), "name", name) not in only):
            continue
        std = metrics.get(name + "_std")
        repeats = settings.get(getattr(entry_of(name), "name", ""), {}).get("probe_seeds", 2)
        spread = std is not None and repeats > 1   # one probe seed has no spread
        shown = ("n/a" if value is None else f"{value:.2f} ± {std:.2f}" if spread   # mean and spread alike
                 else f"{value:.4g}")
        shown = f"unconverged ({shown})" if name in flagged else shown
        unit, direction, _ = metric_info(name)
        rows.append([name, shown, unit, direction])
    click.echo(f"\n{record['name']}  ({record['status']}; folder {record['folder']})")
    click.echo(tabulate(rows, headers=["metric", "value", "unit", "better"], tablefmt="github", disable_numparse=True))
    if only and len(rows) < sum(not n.endswith("_std") for n in metrics):
        click.echo(f"(the other metrics of this run are in {Path(record['folder']) / 'metrics.json'})")
    if flagged:
        click.echo(f"warning: {', '.join(sorted(n for n in flagged if n in metrics and not n.endswith('_std')))}: "
                   f"the probe's solver stopped before converging (measured_with.*.fits); these values fail "
                   f"`repbench check` and show as unconverged in reports", err=True)
    # the shared steps (likelihood, extract, probes) always; a metric that only reads them takes no time of its
    # own, and a column of 0.0 read as if nothing had been timed
    timed = {k: v for k, v in (record.get("timings_s") or {}).items() if k not in METRICS or round(v, 1) > 0}
    if timed:
        click.echo("seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in timed.items()))
    if record.get("mlflow_run_id"):
        click.echo(f"MLflow run {record['mlflow_run_id']}{run_link(record['mlflow_run_id'], tracking_uri)}")
    if record.get("tracking_error"):
        click.echo(f"warning: MLflow tracking failed ({record['tracking_error']}); results are in the run folder")


@cli.command(name="ls")
@friendly()
def ls():
    """List learners, datasets, metrics and presets."""
    from tabulate import tabulate
    from .learners import LEARNERS
    from .data import DATASETS
    from .metrics import METRICS
    rows = [[n, ((cls.__doc__ or "").strip().splitlines() or [""])[0], LEARNERS.origin(n)] for n, cls in LEARNERS.items()]
    click.echo("Learners\n" + tabulate(rows, headers=["name", "description", "from"], tablefmt="github"))
    rows = [[n, spec.description] for n, spec in DATASETS.items()]
    click.echo("\nDatasets\n" + tabulate(rows, headers=["name", "description"], tablefmt="github"))
    rows = [[n, m.unit, m.direction, ", ".join(m.needs), m.description] for n, m in METRICS.in_order()
            if m.compute is not None]
    click.echo("\nMetrics\n" + tabulate(rows, headers=["name", "unit", "better", "needs", "description"],
                                        tablefmt="github"))
    click.echo("\nPresets\n" + tabulate(list(PRESET_HELP.items()), headers=["name", "description"], tablefmt="github"))


# ------------------------------------------------------------------------------------------ suites
@cli.command()
@click.argument("suite_file", type=click.Path(path_type=Path))
@click.option("--rerun", is_flag=True, help="Run every cell again, even those with a finished run.")
@click.option("--only", multiple=True, metavar="LEARNER",
              help="Run only this learner's cells (its display name, as in the table: vae, lpvae-h2); repeatable.")
@shared("device", "tracking_uri", "results_dir", "data_root", "quiet")
@click.option("--jobs", "-j", type=click.IntRange(min=1), default=1, show_default=True,
              help="Cells to run at once, each in its own process with an equal share of the cores "
                   "(on CPU, --jobs equal to the core count gives the most images per second).")
@click.option("--ray", "ray_address", default=None, metavar="ADDRESS",
              help="Run each cell as a task on this Ray cluster (auto, HOST:PORT, ray://HOST:10001), with an "
                   "MLflow server (--tracking-uri) as the shared record. Needs pip install 'repbench[ray]'.")
@click.option("--cpus-per-cell", type=click.FloatRange(min=0, min_open=True), default=None,
              help="With --ray: CPUs each cell asks for [the suite's ray: key, else 1].")
@click.option("--gpus-per-cell", type=click.FloatRange(min=0), default=None,
              help="With --ray: GPUs each cell asks for [the suite's ray: key, else 1 where the cluster has GPUs].")
@click.option("--checkpoint-every", type=click.IntRange(min=1), default=None, metavar="EPOCHS",
              help="With --ray: send each cell's checkpoint to the server every EPOCHS epochs, for a retry on "
                   "another node to resume from [the suite's ray: key, else 10 for paper, 1 otherwise].")
@friendly(RESUME_ADVICE["suite"])
def suite(suite_file, rerun, only, device, tracking_uri, results_dir, data_root, quiet, jobs, ray_address,
          cpus_per_cell, gpus_per_cell, checkpoint_every):
    """Run every cell of a suite (learners x datasets x presets x seeds), or with --only some learners' cells;
    finished cells are reused."""
    from tabulate import tabulate
    from .metrics import summary_metrics
    from .runs import resolve_device, unconverged
    from .suites import asked_values, load_suite, only_learners, run_suite
    ray = ray_options(ray_address, device, jobs, cpus_per_cell, gpus_per_cell, checkpoint_every)
    if ray is None:
        resolve_device(device)
    whole = load_suite(suite_file)
    spec = only_learners(whole, only)
    if only:
        click.echo(f"--only: {len(spec.cells)} of the suite's {len(whole.cells)} cells; the whole suite runs the "
                   f"others and reuses these", err=True)
    outcomes = run_suite(spec, results_dir=results_dir, rerun=rerun, device=device, tracking_uri=tracking_uri,
                         progress=not quiet, data_root=data_root, jobs=jobs, ray=ray)
    values = [asked_values(spec, o["cell"], (o.get("record") or {}).get("metrics", {})) for o in outcomes]
    columns = [m for m in summary_metrics() if m != "nonlinear_probe" and any(m in v for v in values)]
    rows = [[str(o["cell"]), o["status"]] + [_fmt(v, k, unconverged(o.get("record") or {})) for k in columns]
            + [o.get("error", "")] for o, v in zip(outcomes, values)]
    click.echo(tabulate(rows, headers=["cell", "status"] + columns + ["error"], tablefmt="github",
                        disable_numparse=True))
    failed = [o for o in outcomes if o["status"] == "FAILED"]
    busy = [o for o in outcomes if o["status"] == "BUSY"]
    if busy:
        click.echo(f"error: {len(busy)} of {len(outcomes)} cells are being trained by "
                   f"another process and were left to it (run the suite again once it ends): "
                   + "; ".join(str(o["cell"]) for o in busy), err=True)
    if failed:
        click.echo(f"error: {len(failed)} of {len(outcomes)} cells failed: " +
                   "; ".join(f"{o['cell']}: {o['error']}" for o in failed), err=True)
    if failed or busy:
        sys.exit(1)


def ray_options(address, device, jobs, cpus, gpus, every):
    """The cluster options of `suite`, or None to run on this machine; options that need the other are refused."""
    if address is None:
        given = [f for f, v in (("--cpus-per-cell", cpus), ("--gpus-per-cell", gpus), ("--checkpoint-every", every))
                 if v is not None]
        if given:
            raise RepbenchError(f"{given[0]} applies to cells run on a Ray cluster: add --ray ADDRESS")
        return None
    if device != "auto":
        raise RepbenchError("with --ray each cell uses the device Ray gives it (see --gpus-per-cell); leave out --device")
    if jobs != 1:
        raise RepbenchError("with --ray the cluster runs as many cells at once as its resources hold (see "
                            "--cpus-per-cell); leave out --jobs")
    from .suites import RayOptions
    return RayOptions(address, cpus, gpus, every)


def _fmt(metrics: dict, key: str, flagged=()) -> str:
    """A value for a console table: blank when not measured, n/a when it does not apply, unconverged when it is
    `flagged` (its probe's solver stopped short), else to the metric's decimals (so a column lines up: 77.0
    beside 76.5, not 77), a count as a whole number."""
    from .metrics import metric_info
    if key not in metrics:
        return "-"
    if key in flagged:
        return "unconverged"
    value = metrics[key]
    if value is None or isinstance(value, int):
        return "n/a" if value is None else str(value)
    return f"{value:.{metric_info(key)[2]}f}"


@cli.command()
@click.option("--suite", "suite_file", type=click.Path(path_type=Path), default=None,
              help="Report the newest finished run of each cell of this suite (and its compare pairs): from the "
                   "run folders, or with --tracking-uri from that MLflow store alone.")
@click.option("--experiment", default="repbench", show_default=True, callback=checked("experiment"),
              help="Without --suite: MLflow experiment.")
@click.option("--tag", "tags", multiple=True, metavar="KEY=VALUE", help="Without --suite: MLflow tag filters.")
@click.option("--format", "fmt", type=click.Choice(["markdown", "latex", "html", "json", "csv"]), default="markdown",
              show_default=True, help="latex: table floats with captions (needs booktabs and graphicx); html: a "
                                      "self-contained leaderboard page written to the folder --out; json, csv: "
                                      "one row per learner, dataset, preset and value, for programs (the JSON's "
                                      "schema: repbench/report/results.schema.json).")
@click.option("--figure", type=click.Path(path_type=Path), default=None, help="Also draw all learners' PCA spectra.")
@click.option("--figures", "figures_dir", type=click.Path(path_type=Path), default=None,
              help="Draw every figure into this folder: spectra, probe vs mutual information, training curves.")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Write the tables to this file too (with --format html: the folder of the page).")
@click.option("--paper", "paper_file", is_flag=False, flag_value="default", default=None, metavar="[FILE]",
              help="Show published numbers beside ours (default file: benchmarks/reference/paper_numbers.yaml).")
@shared("tracking_uri", "results_dir")
@friendly()
def report(suite_file, experiment, tags, fmt, figure, figures_dir, out, paper_file, tracking_uri, results_dir):
    """The paper's tables from finished runs (mean ± std over seeds, differences with confidence intervals)."""
    from .report import (build_report, left_out_values, load_paper_numbers, missing_cells, records_from_mlflow,
                         records_from_suite)
    from .suites import load_suite, suite_command
    from .runs import default_tracking_uri
    compare = ()
    check_paths(figure=figure, figures=figures_dir, out=out if fmt == "html" else None)
    if suite_file and tags:
        raise RepbenchError("--tag filters runs without --suite; a suite's runs are its cells, found by their "
                            "configuration")
    if fmt == "html" and out is None:
        raise RepbenchError("--format html writes a page into a folder: give it with --out DIR")
    if out is not None and fmt != "html":  # before any work: the report would be printed, then lost
        out_file(out)
    paper = load_paper_numbers(None if paper_file == "default" else paper_file) if paper_file else None
    if suite_file:  # from the run folders, or with --tracking-uri from that store alone
        spec = load_suite(suite_file)
        records, title, compare = records_from_suite(spec, results_dir, tracking_uri), spec.name, spec.compare
        missing = missing_cells(spec, records)
        if not records:
            raise RepbenchError(f"no finished runs of suite '{spec.name}' under {results_dir}; run it first: "
                                f"`{suite_command(spec, results_dir)}`")
        if missing:
            click.echo(f"note: {len(missing)} of {len(spec.cells)} cells {'has' if len(missing) == 1 else 'have'} "
                       f"no finished run and {'is' if len(missing) == 1 else 'are'} left out: {'; '.join(missing)}",
                       err=True)
        other = left_out_values(records)
        if other:
            click.echo(f"note: {len(other)} value(s) were measured only with other settings than the suite's and "
                       f"are left out (—): {'; '.join(other)}; `{suite_command(spec, results_dir)}` measures them",
                       err=True)
    else:
        tag_filter = parse_pairs(tags, "--tag", parse_value=str)
        records = records_from_mlflow(tracking_uri or default_tracking_uri(results_dir), experiment, tag_filter,
                                      history=figures_dir is not None)
        title = experiment + (f" ({', '.join(f'{k}={v}' for k, v in tag_filter.items())})" if tag_filter else "")
    if fmt == "html":
        from .report import write_page, build
        page = write_page(build(records, title, paper, compare, figures_dir or Path(out) / "figures", figure),
                          out, f"repbench leaderboard: {title}")
        click.echo(f"leaderboard page written to {page} ({page.stat().st_size / 1e6:.1f} MB, self-contained)")
        return
    text = build_report(records, fmt, figure, title, paper, compare, figures_dir)
    if out:  # written first: a file that cannot be written fails before the report scrolls past
        try:
            Path(out).write_text(text)
        except OSError as exc:
            raise RepbenchError(f"cannot write {out}: {exc.strerror or exc}") from None
    click.echo(text)


def out_file(path: Path) -> None:
    """A file `--out` can write: its folder is made if missing; a folder in its place or no way to make one is an
    error."""
    if path.is_dir():
        raise RepbenchError(f"--out {path} is a folder; give a file name (a folder is for --format html)")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RepbenchError(f"--out {path}: cannot create its folder {path.parent}: {exc.strerror or exc}") from None


def check_paths(**paths) -> None:
    """Output paths checked before any work: a folder option naming a file (or a file option naming a folder) is
    one line, not a traceback after the tables were built. `figure` is a file; the others are folders."""
    for flag, path in paths.items():
        if path is None or not Path(path).exists():
            continue
        if flag == "figure" and Path(path).is_dir():
            raise RepbenchError(f"--figure {path} is a folder; give the image file to write (spectra.png)")
        if flag != "figure" and not Path(path).is_dir():
            raise RepbenchError(f"--{flag} {path} is a file, not a folder")


@cli.command()
@click.argument("suite_file", type=click.Path(path_type=Path))
@shared("results_dir", "tracking_uri")
@click.option("--write-baseline", is_flag=True, help="Store the current results as the suite's baseline.")
@friendly()
def check(suite_file, results_dir, tracking_uri, write_baseline):
    """Compare a suite's newest results (from the run folders, or with --tracking-uri from that MLflow store
    alone) with its thresholds and baseline; exit 1 on a regression."""
    from .suites import check_suite, write_baseline as write, load_suite
    spec = load_suite(suite_file)
    if write_baseline:
        click.echo(f"baseline written to {write(spec, results_dir, tracking_uri)}")
        return
    failures, passes = check_suite(spec, results_dir, tracking_uri)
    for line in passes + failures:
        click.echo(line)
    if failures:
        click.echo(f"error: {len(failures)} check(s) failed for suite '{spec.name}'", err=True)
        sys.exit(1)
    click.echo(f"all {len(passes)} checks passed for suite '{spec.name}'")


@cli.command()
@click.option("--port", type=click.IntRange(1, 65535), default=5000, show_default=True)
@shared("tracking_uri", "results_dir", "experiment")
@friendly()
def ui(port, tracking_uri, results_dir, experiment):
    """Start the MLflow UI on the local store, on 127.0.0.1, opened on the runs list; Ctrl-C stops it."""
    from .runs import default_tracking_uri
    from .ui import serve
    serve(tracking_uri or default_tracking_uri(results_dir), port, echo=click.echo, experiment=experiment)


def main():
    from .malloc import tune
    from .runs import interrupt_on_sigterm
    tune()  # before a command allocates tensors: see malloc.py
    interrupt_on_sigterm()
    try:
        cli(prog_name="repbench")
    except KeyboardInterrupt:  # a stop that landed after the command's own handler: its output is out, whole
        code = EXIT_INTERRUPTED
    except SystemExit as exc:
        code = exc.code
    finally:  # from here to the interpreter's end a stop is the exit code alone, never a traceback
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, _exit_interrupted)
    sys.exit(code)


def _exit_interrupted(signum, frame):
    sys.stdout.flush()
    os._exit(EXIT_INTERRUPTED)


if __name__ == "__main__":
    main()
