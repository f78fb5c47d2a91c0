"""The `repbench` command line. Errors are one line on stderr and a non-zero exit, never a traceback."""
from __future__ import annotations

import functools
import sys
import warnings
from pathlib import Path

import click
import yaml

from .config import PRESET_HELP, PRESETS
from .registry import PluginWarning, RepbenchError

EXIT_ERROR, EXIT_INTERRUPTED = 2, 130


def friendly(fn):
    """Turn repbench errors and Ctrl-C into one-line messages with distinct exit codes."""
    @functools.wraps(fn)
    def wrapper(*args, **kw):
        try:
            return fn(*args, **kw)
        except RepbenchError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(EXIT_ERROR)
        except KeyboardInterrupt:
            click.echo("interrupted: the last finished epoch's checkpoint is kept; run the same command with "
                       "--resume to continue", err=True)
            sys.exit(EXIT_INTERRUPTED)
    return wrapper


def parse_options(pairs: tuple[str, ...]) -> dict:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise RepbenchError(f"--option expects KEY=VALUE, got '{pair}'")
        out[key.strip()] = yaml.safe_load(value)
    return out


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="repbench")
def cli():
    """repbench: benchmark representation learners (VAE, local and full PixelCNN VAEs, baselines)."""
    warnings.simplefilter("default", PluginWarning)


def battery_options(fn):
    """Options that choose and size the metric battery, shared by `run` and `eval`."""
    from .battery import GROUPS
    opts = [
        click.option("--metrics", default=",".join(GROUPS), show_default=True,
                     help="Comma-separated metric groups to run."),
        click.option("--probe-seeds", type=int, default=None, help="Repeats of each probe [3; smoke: 1]."),
        click.option("--iw-samples", type=int, default=None,
                     help="Samples k of the importance-weighted bound bpd_iw [10; smoke: 4]."),
        click.option("--linear-method", type=click.Choice(["linearsvc", "svc"]), default="linearsvc",
                     show_default=True, help="linearsvc: standardized LinearSVC; svc: SVC(kernel='linear') as in "
                                             "the paper's code."),
        click.option("--probe-epochs", type=int, default=None, help="Epochs of the MLP probe [20; smoke: 3]."),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


def battery_overrides(metrics, probe_seeds, iw_samples, linear_method, probe_epochs) -> dict:
    """The battery options the user set; the rest come from the preset's battery."""
    given = {"metrics": tuple(m.strip() for m in metrics.split(",") if m.strip()), "probe_seeds": probe_seeds,
             "iw_samples": iw_samples, "linear_method": linear_method, "nonlinear_epochs": probe_epochs}
    return {k: v for k, v in given.items() if v is not None}


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
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="Where to train; auto picks CUDA when present.")
@click.option("--tracking-uri", default=None, help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else a "
                                                    "SQLite file under the results folder).")
@click.option("--experiment", default="repbench", show_default=True, help="MLflow experiment name.")
@click.option("--results-dir", type=click.Path(path_type=Path), default=Path("results"), show_default=True,
              help="Folder for run folders and the local MLflow store.")
@click.option("--data-root", default=None, help="Folder of downloaded datasets (default: $REPBENCH_DATA or "
                                                 "~/.cache/repbench/data).")
@click.option("--download", is_flag=True, help="Allow downloading the dataset if it is missing.")
@click.option("--resume", is_flag=True, help="Continue the interrupted run with the same configuration.")
@click.option("--no-augment", is_flag=True, help="Train without the dataset's augmentation (cifar10: crop + flip).")
@click.option("--grid", type=int, default=8, show_default=True, help="Images per row in the sample grid; 0 skips it.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@battery_options
@friendly
def run(model, h, dataset, preset, seed, epochs, options, device, tracking_uri, experiment, results_dir, data_root,
        download, resume, no_augment, grid, quiet, metrics, probe_seeds, iw_samples, linear_method, probe_epochs):
    """Train one learner on one dataset, run the metrics, and log everything to MLflow."""
    from .battery import battery_for
    from .runner import RunSpec, run as run_one
    opts = parse_options(options)
    if h is not None:
        opts["h"] = h
    if epochs is not None:
        opts["epochs"] = epochs
    if "h" in opts and model == "vae" and opts["h"] == 0:
        opts.pop("h")  # `--model vae --h 0` is just the vae
    record = run_one(RunSpec(model, opts, dataset, preset, seed, device, results_dir, tracking_uri, experiment,
                             data_root, download, resume, progress=not quiet, grid=grid, augment=not no_augment,
                             battery=battery_for(preset, battery_overrides(metrics, probe_seeds, iw_samples,
                                                                           linear_method, probe_epochs))))
    print_result(record)


@cli.command(name="eval")
@click.option("--run", "run_ref", default=None, help="MLflow run id or run folder name (a unique prefix will do).")
@click.option("--checkpoint", type=click.Path(path_type=Path), default=None, help="Any repbench checkpoint instead.")
@click.option("--dataset", "-d", default=None, help="Dataset (default: the run's own, else mnist5k).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--tracking-uri", default=None, help="MLflow tracking URI of the run (default as for `run`).")
@click.option("--results-dir", type=click.Path(path_type=Path), default=Path("results"), show_default=True)
@click.option("--data-root", default=None, help="Folder of downloaded datasets.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@battery_options
@friendly
def eval_cmd(run_ref, checkpoint, dataset, device, tracking_uri, results_dir, data_root, quiet, metrics, probe_seeds,
             iw_samples, linear_method, probe_epochs):
    """Re-run the metric battery on a trained learner (representations come from the on-disk cache)."""
    from .runner import evaluate_saved
    if bool(run_ref) == bool(checkpoint):
        raise RepbenchError("give exactly one of --run RUN_ID and --checkpoint PATH")
    record = evaluate_saved(run_ref=run_ref, checkpoint=checkpoint, dataset=dataset, results_dir=results_dir,
                            battery=battery_overrides(metrics, probe_seeds, iw_samples, linear_method, probe_epochs),
                            device=device, tracking_uri=tracking_uri, data_root=data_root, progress=not quiet)
    print_result(record)


def print_result(record: dict) -> None:
    from tabulate import tabulate
    metrics, units = record["metrics"], record.get("units", {})
    rows = []
    for name, value in metrics.items():
        if name.endswith("_std"):
            continue
        std = metrics.get(name + "_std")
        shown = "n/a" if value is None else f"{value:.4g}" + (f" ± {std:.2f}" if std is not None else "")
        unit = units.get(name, {})
        rows.append([name, shown, unit.get("unit", ""), unit.get("better", "")])
    click.echo(f"\n{record['name']}  ({record['status']}; folder {record['folder']})")
    click.echo(tabulate(rows, headers=["metric", "value", "unit", "better"], tablefmt="github", disable_numparse=True))
    if record.get("timings_s"):
        click.echo("seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in record["timings_s"].items()))
    if record.get("mlflow_run_id"):
        click.echo(f"MLflow run {record['mlflow_run_id']}")
    if record.get("tracking_error"):
        click.echo(f"warning: MLflow tracking failed ({record['tracking_error']}); results are in the run folder")


@cli.command(name="ls")
@friendly
def ls():
    """List learners, datasets and presets."""
    from tabulate import tabulate
    from .api import LEARNERS
    from .data import DATASETS
    rows = [[n, ((cls.__doc__ or "").strip().splitlines() or [""])[0], LEARNERS.origin(n)] for n, cls in LEARNERS.items()]
    click.echo("Learners\n" + tabulate(rows, headers=["name", "description", "from"], tablefmt="github"))
    rows = [[n, spec.description] for n, spec in DATASETS.items()]
    click.echo("\nDatasets\n" + tabulate(rows, headers=["name", "description"], tablefmt="github"))
    click.echo("\nPresets\n" + tabulate(list(PRESET_HELP.items()), headers=["name", "description"], tablefmt="github"))


@cli.command()
@click.argument("suite_file", type=click.Path(path_type=Path))
@click.option("--rerun", is_flag=True, help="Run every cell again, even those with a finished run.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--tracking-uri", default=None, help="MLflow tracking URI (default as for `run`).")
@click.option("--results-dir", type=click.Path(path_type=Path), default=Path("results"), show_default=True)
@click.option("--data-root", default=None, help="Folder of downloaded datasets.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.option("--jobs", "-j", type=click.IntRange(min=1), default=1, show_default=True,
              help="Cells to run at once, each in its own process with an equal share of the cores "
                   "(on CPU, --jobs equal to the core count gives the most images per second).")
@friendly
def suite(suite_file, rerun, device, tracking_uri, results_dir, data_root, quiet, jobs):
    """Run every cell of a suite (learners x datasets x presets x seeds); finished cells are reused."""
    from tabulate import tabulate
    from .suite import load_suite, run_suite
    spec = load_suite(suite_file)
    outcomes = run_suite(spec, results_dir=results_dir, rerun=rerun, device=device, tracking_uri=tracking_uri,
                         progress=not quiet, data_root=data_root, jobs=jobs)
    rows = []
    for o in outcomes:
        m = o.get("record", {}).get("metrics", {})
        rows.append([str(o["cell"]), o["status"]] + [_fmt(m.get(k)) for k in ("bpd", "mutual_info", "intrinsic_dim",
                                                                             "linear_probe")] + [o.get("error", "")])
    click.echo(tabulate(rows, headers=["cell", "status", "bpd", "mutual_info", "intrinsic_dim", "linear_probe",
                                       "error"], tablefmt="github", disable_numparse=True))
    failed = [o for o in outcomes if o["status"] == "FAILED"]
    if failed:
        click.echo(f"error: {len(failed)} of {len(outcomes)} cells failed: " +
                   "; ".join(f"{o['cell']}: {o['error']}" for o in failed), err=True)
        sys.exit(1)


def _fmt(v) -> str:
    return "" if v is None else f"{v:.4g}"


@cli.command()
@click.option("--suite", "suite_file", type=click.Path(path_type=Path), default=None,
              help="Report the newest finished run of each cell of this suite.")
@click.option("--experiment", default="repbench", show_default=True, help="Without --suite: MLflow experiment.")
@click.option("--tag", "tags", multiple=True, metavar="KEY=VALUE", help="Without --suite: MLflow tag filters.")
@click.option("--format", "fmt", type=click.Choice(["markdown", "latex", "csv"]), default="markdown",
              show_default=True)
@click.option("--figure", type=click.Path(path_type=Path), default=None, help="Also draw all learners' PCA spectra.")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Write the tables to this file too.")
@click.option("--paper", "paper_file", type=click.Path(path_type=Path), default=None,
              help="YAML of published numbers to show beside ours (e.g. benchmarks/reference/paper_numbers.yaml).")
@click.option("--tracking-uri", default=None)
@click.option("--results-dir", type=click.Path(path_type=Path), default=Path("results"), show_default=True)
@friendly
def report(suite_file, experiment, tags, fmt, figure, out, paper_file, tracking_uri, results_dir):
    """The paper's tables from finished runs (mean ± std over seeds)."""
    from .report import build_report, load_paper_numbers, records_from_mlflow, records_from_suite
    from .suite import load_suite
    from .tracking import default_tracking_uri
    if suite_file:
        spec = load_suite(suite_file)
        records, title = records_from_suite(spec, results_dir), spec.name
    else:
        tag_filter = {k: v for k, v in (t.split("=", 1) for t in tags)} if tags else {}
        records = records_from_mlflow(tracking_uri or default_tracking_uri(results_dir), experiment, tag_filter)
        title = experiment
    paper = load_paper_numbers(paper_file) if paper_file else None
    text = build_report(records, fmt, figure, title, paper)
    click.echo(text)
    if out:
        Path(out).write_text(text)


@cli.command()
@click.argument("suite_file", type=click.Path(path_type=Path))
@click.option("--results-dir", type=click.Path(path_type=Path), default=Path("results"), show_default=True)
@click.option("--write-baseline", is_flag=True, help="Store the current results as the suite's baseline.")
@friendly
def check(suite_file, results_dir, write_baseline):
    """Compare a suite's newest results with its thresholds and baseline; exit 1 on a regression."""
    from .check import check_suite, write_baseline as write
    from .suite import load_suite
    spec = load_suite(suite_file)
    if write_baseline:
        click.echo(f"baseline written to {write(spec, results_dir)}")
        return
    failures, passes = check_suite(spec, results_dir)
    for line in passes + failures:
        click.echo(line)
    if failures:
        click.echo(f"error: {len(failures)} check(s) failed for suite '{spec.name}'", err=True)
        sys.exit(1)
    click.echo(f"all {len(passes)} checks passed for suite '{spec.name}'")


@cli.command()
@click.option("--port", type=int, default=5000, show_default=True)
@click.option("--tracking-uri", default=None, help="Store to show (default: the local SQLite store).")
@click.option("--results-dir", type=click.Path(path_type=Path), default=Path("results"), show_default=True)
@friendly
def ui(port, tracking_uri, results_dir):
    """Start the MLflow UI on the local store, on 127.0.0.1; Ctrl-C stops it."""
    import shutil
    import signal
    import subprocess
    from .tracking import default_tracking_uri
    exe = shutil.which("mlflow")
    if exe is None:
        raise RepbenchError("the `mlflow` command is not on PATH; reinstall repbench (pip install -e .)")
    uri = tracking_uri or default_tracking_uri(results_dir)
    click.echo(f"MLflow UI at http://127.0.0.1:{port} (store {uri}); compare runs by selecting them; Ctrl-C stops it")
    proc = subprocess.Popen([exe, "ui", "--backend-store-uri", uri, "--host", "127.0.0.1", "--port", str(port)])
    signal.signal(signal.SIGTERM, lambda *_: proc.terminate())  # a terminated `repbench ui` takes its server along
    try:
        sys.exit(proc.wait())
    except KeyboardInterrupt:
        proc.terminate()
        proc.wait(timeout=30)


def main():
    cli(prog_name="repbench")


if __name__ == "__main__":
    main()
