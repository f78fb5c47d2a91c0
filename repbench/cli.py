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
@click.option("--grid", type=int, default=8, show_default=True, help="Images per row in the sample grid; 0 skips it.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@battery_options
@friendly
def run(model, h, dataset, preset, seed, epochs, options, device, tracking_uri, experiment, results_dir, data_root,
        download, resume, grid, quiet, metrics, probe_seeds, iw_samples, linear_method, probe_epochs):
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
                             data_root, download, resume, progress=not quiet, grid=grid,
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


def main():
    cli(prog_name="repbench")


if __name__ == "__main__":
    main()
