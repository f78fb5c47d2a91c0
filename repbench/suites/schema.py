"""Suites: learners x datasets x presets x seeds declared in YAML, their regression thresholds, and the runs.

    name: mnist-quick
    learners: [{name: vae}, {name: lpvae, options: {h: 2}}]
    datasets: [mnist5k]
    presets: [quick]
    seeds: [0]
    metrics: [bpd, mutual_info, intrinsic_dim, linear_probe, nonlinear_probe, rep_types]   # optional
    battery: {probe_seeds: 3}                                                              # optional
    thresholds: [{learner: lpvae-h2, metric: linear_probe, min: 80}]   # optional; learner, dataset, preset: globs
    compare: [[vae, lpvae-h2]]        # optional: differences with confidence intervals over seeds
    baseline: {file: baselines/smoke.json, tolerance: {bpd: 0.05}}                         # optional
    ray: {cpus_per_cell: 1, gpus_per_cell: 0, checkpoint_every: 1}    # optional: cells as Ray tasks (--ray)

Unknown keys anywhere are errors that name the key and the file, and so are a key repeated in one mapping and a
threshold or tolerance that would gate nothing.
"""
from __future__ import annotations

import fnmatch
import itertools
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml

from ..errors import RepbenchError, first_line

SUITE_KEYS = ("name", "description", "learners", "datasets", "presets", "seeds", "metrics", "battery",
              "thresholds", "baseline", "compare", "features", "ray")
FEATURE_KEYS = ("name", "file", "dataset")
LEARNER_KEYS = ("name", "options", "seeds", "datasets")
THRESHOLD_KEYS = ("learner", "metric", "min", "max", "dataset", "preset")
BASELINE_KEYS = ("file", "tolerance")
RAY_KEYS = ("cpus_per_cell", "gpus_per_cell", "checkpoint_every")


@dataclass(frozen=True)
class Cell:
    learner: str
    options: dict
    dataset: str
    preset: str
    seed: int

    @property
    def display(self) -> str:
        """The learner's own display name (lpvae-h2); the bare name if its options are invalid."""
        try:
            return self.build().display_name
        except RepbenchError:
            return self.learner

    def build(self):
        """The cell's learner, untrained (its options checked)."""
        from ..data import DATASETS
        from ..learners import create_learner
        return create_learner(self.learner, preset=self.preset, image_shape=DATASETS.get(self.dataset).image_shape,
                              seed=self.seed, **self.options)

    def prefix(self) -> str:
        from ..runs import run_prefix
        return run_prefix(self.build(), self.dataset)

    def __str__(self) -> str:
        return f"{self.display} / {self.dataset} / {self.preset} / seed {self.seed}"


@dataclass(frozen=True)
class FeatureCell:
    """Representations made outside repbench (an .npz, see `repbench eval --features`), scored beside the cells."""
    display: str
    file: Path
    dataset: str = "external"
    preset: str = "features"
    seed: int = 0

    def prefix(self) -> str:
        import hashlib
        return f"{self.display}-{self.dataset}-{self.preset}-s{self.seed}-" \
               f"{hashlib.sha256(self.file.read_bytes()).hexdigest()[:10]}"

    def __str__(self) -> str:
        return f"{self.display} / {self.dataset} / features from {self.file.name}"


@dataclass(frozen=True)
class Threshold:
    metric: str
    learner: str = "*"            # display name or glob (lpvae-h*)
    dataset: str = "*"
    min: float | None = None
    max: float | None = None
    preset: str = "*"

    def applies(self, display: str, dataset: str, preset: str = "*") -> bool:
        return all(fnmatch.fnmatch(value, pattern) for value, pattern in
                   ((display, self.learner), (dataset, self.dataset), (preset, self.preset)))

    def violated(self, value: float | None) -> bool:
        """Missing, NaN or infinite values fail every threshold: a number that cannot be trusted never passes."""
        if value is None or not math.isfinite(value):
            return True
        return (self.min is not None and value < self.min) or (self.max is not None and value > self.max)

    def describe(self) -> str:
        parts = ([f">= {self.min:g}"] if self.min is not None else []) + ([f"<= {self.max:g}"] if self.max is not None
                                                                          else [])
        return " and ".join(parts)


@dataclass(frozen=True)
class Suite:
    name: str
    path: Path
    cells: tuple[Cell, ...]
    description: str = ""
    battery: dict = field(default_factory=dict)
    thresholds: tuple[Threshold, ...] = ()
    baseline_file: Path | None = None
    tolerance: dict = field(default_factory=dict)
    compare: tuple[tuple[str, str], ...] = ()   # learner pairs (display names) whose differences the report tests
    features: tuple[FeatureCell, ...] = ()       # outside representations scored beside the learners
    ray: dict = field(default_factory=dict)     # resources of a cell run as a Ray task (see cluster.py)


def suite_command(suite: Suite, results_dir: Path, command: str = "suite") -> str:
    """The command (suite, check) on this suite and `results_dir`, for hints that a user copies as they are."""
    where = "" if Path(results_dir) == Path("results") else f" --results-dir {results_dir}"
    return f"repbench {command} {suite.path}{where}"


def only_learners(suite: Suite, names: tuple[str, ...]) -> Suite:
    """The suite with only the cells of these learners (display names: vae, lpvae-h2), in the suite's order; its
    other cells keep their results and run the next time the whole suite does."""
    if not names:
        return suite
    known = {c.display for c in suite.cells} | {f.display for f in suite.features}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise RepbenchError(f"--only {unknown[0]}: suite '{suite.name}' has no such learner; its learners: "
                            f"{', '.join(sorted(known))}")
    return replace(suite, cells=tuple(c for c in suite.cells if c.display in names),
                   features=tuple(f for f in suite.features if f.display in names))


def _check_keys(obj, allowed, where: str, path: Path) -> dict:
    if not isinstance(obj, dict):
        raise RepbenchError(f"{path}: {where} must be a mapping, got {type(obj).__name__}")
    bad = [k for k in obj if k not in allowed]
    if bad:
        raise RepbenchError(f"{path}: unknown key '{bad[0]}' in {where}; valid keys: {', '.join(allowed)}")
    return obj


def _list(obj, key: str, path: Path, default=None) -> list:
    value = obj.get(key, default)
    if value is None:
        raise RepbenchError(f"{path}: '{key}' is required")
    return value if isinstance(value, list) else [value]


def _ints(obj, key: str, path: Path, default) -> list[int]:
    values = _list(obj, key, path, default)
    bad = [v for v in values if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 2 ** 31]
    if bad or not values:
        raise RepbenchError(f"{path}: '{key}' must be a list of integers from 0 to 2^31 - 1, got {values!r}")
    return values


def _names(obj, key: str, path: Path, default, known) -> list[str]:
    values = _list(obj, key, path, default)
    for v in values:
        if not isinstance(v, str):
            raise RepbenchError(f"{path}: '{key}' must be a list of names, got {v!r}")
        _at(path, lambda: known(v))
    return values


def _at(path: Path, fn, where: str = ""):
    """Run a check; a RepbenchError it raises names the suite file (and the place in it)."""
    try:
        return fn()
    except RepbenchError as exc:
        raise RepbenchError(f"{path}: {where + ': ' if where else ''}{exc}") from None


def _number(value, what: str, path: Path) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise RepbenchError(f"{path}: {what} must be a number, got {value!r}")
    return float(value)


def _known_metric(name, path: Path, where: str) -> str:
    from ..metrics import entry_of
    if not isinstance(name, str) or entry_of(name) is None or entry_of(name).compute is None:
        raise RepbenchError(f"{path}: {where} names metric {name!r}, which the battery does not record "
                            f"(see `repbench ls`)")
    return name


def _learner_entry(item, seeds: list[int], path: Path) -> tuple[str, dict, list[int]]:
    item = {"name": item} if isinstance(item, str) else item
    _check_keys(item, LEARNER_KEYS, "a learner entry", path)
    if not isinstance(item.get("name"), str):
        raise RepbenchError(f"{path}: a learner entry needs a name (name: vae), got {item!r}")
    options = item.get("options") or {}
    if not isinstance(options, dict):
        raise RepbenchError(f"{path}: options of learner '{item['name']}' must be a mapping, got {options!r}")
    datasets = item.get("datasets")
    if datasets is not None and not (isinstance(datasets, list) and all(isinstance(d, str) for d in datasets)):
        raise RepbenchError(f"{path}: datasets of learner '{item['name']}' must be a list of names, got {datasets!r}")
    # fewer seeds for a slow learner; a learner may run on some of the suite's datasets only
    return item["name"], dict(options), _ints(item, "seeds", path, seeds), datasets


def _threshold(t, path: Path) -> Threshold:
    _check_keys(t, THRESHOLD_KEYS, "a threshold", path)
    metric = _known_metric(t.get("metric"), path, "a threshold")
    low, high = _number(t.get("min"), f"min of the threshold on {metric}", path), \
        _number(t.get("max"), f"max of the threshold on {metric}", path)
    if low is None and high is None:
        raise RepbenchError(f"{path}: threshold on '{metric}' needs min or max")
    return Threshold(metric, str(t.get("learner", "*")), str(t.get("dataset", "*")), low, high,
                     str(t.get("preset", "*")))


def load_suite(path: str | Path) -> Suite:
    """Read and check a suite file: every key, value, learner option and battery setting, before any work."""
    from ..measure import BATTERY_KEYS, battery_for
    from ..config import check_preset
    from ..data import DATASETS
    path = Path(path)
    if not path.is_file():
        raise RepbenchError(f"suite file {path} does not exist" if not path.exists() else f"{path} is not a file")
    try:
        raw = yaml.load(path.read_text(), UniqueKeys) or {}
    except yaml.YAMLError as exc:
        raise RepbenchError(f"{path}: not valid YAML ({first_line(exc)})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RepbenchError(f"cannot read suite file {path}: {exc}") from None
    _check_keys(raw, SUITE_KEYS, "the suite", path)
    seeds = _ints(raw, "seeds", path, [0])
    learners = [_learner_entry(item, seeds, path) for item in _list(raw, "learners", path)]
    if not learners:
        raise RepbenchError(f"{path}: 'learners' is empty; the suite would run and gate nothing")
    datasets = _names(raw, "datasets", path, ["mnist5k"], DATASETS.get)
    presets = _names(raw, "presets", path, ["quick"], check_preset)
    # Seed-major order: a suite stopped part-way has whole seeds of every learner rather than all seeds of a few.
    all_seeds = sorted({s for _, _, own, _ in learners for s in own}, key=lambda s: (s not in seeds, s))
    for name, _, _, only in learners:
        for d in only or []:
            if d not in datasets:
                raise RepbenchError(f"{path}: learner '{name}' names dataset '{d}', which the suite's datasets lack")
    cells = tuple(Cell(name, opts, d, p, s) for s in all_seeds for (name, opts, own, only), d, p in
                  itertools.product(learners, datasets, presets) if s in own and (only is None or d in only))
    if not cells:
        raise RepbenchError(f"{path}: the suite has no cells (empty datasets, presets or seeds)")
    for cell in cells:
        _at(path, cell.build, f"learner '{cell.learner}'")
    thresholds = tuple(_threshold(t, path) for t in _list(raw, "thresholds", path, []))
    battery = dict(_check_keys(raw.get("battery") or {}, BATTERY_KEYS, "battery", path))
    if raw.get("metrics") is not None:
        battery["metrics"] = tuple(_list(raw, "metrics", path))
    for preset in presets:
        _at(path, lambda: battery_for(preset, battery), "battery")
    base = _check_keys(raw.get("baseline") or {}, BASELINE_KEYS, "baseline", path)
    tolerance = base.get("tolerance") or {}
    if not isinstance(tolerance, dict):
        raise RepbenchError(f"{path}: baseline tolerance must be a mapping of metric: number, got {tolerance!r}")
    for metric, tol in tolerance.items():
        _known_metric(metric, path, "the baseline tolerance")
        if _number(tol, f"tolerance of {metric}", path) < 0:
            raise RepbenchError(f"{path}: tolerance of {metric} must be >= 0, got {tol!r}")
    baseline_file = (path.parent / str(base["file"])) if base.get("file") else None
    if bool(baseline_file) != bool(tolerance):
        raise RepbenchError(f"{path}: baseline needs both a file and a tolerance for at least one metric "
                            f"(baseline: {{file: baselines/x.json, tolerance: {{bpd: 0.05}}}}); it would gate nothing")
    features = tuple(_feature(f, path) for f in _list(raw, "features", path, []))
    _gates_something(path, thresholds, tolerance, cells + features, battery)
    return Suite(str(raw.get("name") or path.stem), path, cells, str(raw.get("description") or ""), battery,
                 thresholds, baseline_file, tolerance,
                 _pairs(raw, path, {c.display for c in cells} | {f.display for f in features}), features,
                 _ray(raw, path))


class UniqueKeys(yaml.SafeLoader):
    """YAML's safe loader with a key repeated in one mapping an error: PyYAML would keep the last one silently
    (a second `thresholds:` dropping the first list)."""


def _unique_mapping(loader: UniqueKeys, node, deep: bool = False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if isinstance(key, (str, int, float, bool)) and key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"key '{key}' is repeated at line "
                                                    f"{key_node.start_mark.line + 1}", key_node.start_mark)
        seen.add(key) if isinstance(key, (str, int, float, bool)) else None
    return loader.construct_mapping(node, deep)


UniqueKeys.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def battery_of(battery: dict, cell):
    """The battery a suite with these battery keys runs on a cell (a features cell: the metrics that score bare
    representations, as `eval --features` measures them)."""
    from ..measure import battery_for
    if isinstance(cell, FeatureCell):
        from ..runs.outside import representation_metrics
        return representation_metrics(battery_for("quick", battery))
    return battery_for(cell.preset, battery)


def asked_values(suite: Suite, cell, metrics: dict) -> dict:
    """The values of a cell's record that the suite's battery measures on it: a reused run may hold more, measured
    with other settings, which the suite's summary must not show as its own."""
    cfg = battery_of(suite.battery, cell)
    return {k: v for k, v in metrics.items() if measures(cfg, k)}


def measures(cfg, name: str) -> bool:
    """Whether a battery records the value `name` (linear_probe.labels_600 only with 600 among its label counts)."""
    import re
    from ..metrics import METRICS
    labels = re.search(r"\.labels_(\d+)", name)
    return any(METRICS.get(m).owns(name) for m in cfg.metrics) and \
        (labels is None or int(labels.group(1)) in cfg.label_counts)


def _gates_something(path: Path, thresholds, tolerance: dict, cells, battery: dict) -> None:
    """Each threshold and tolerance must gate a value the suite measures: one naming a learner, dataset, preset
    or metric the suite does not have would pass every check while gating nothing."""
    cfgs = {}
    for c in cells:
        cfgs.setdefault((c.display, c.dataset, c.preset), _at(path, lambda: battery_of(battery, c), "battery"))
    have = {"learner": sorted({k[0] for k in cfgs}), "dataset": sorted({k[1] for k in cfgs}),
            "preset": sorted({k[2] for k in cfgs})}
    metrics = sorted({m for cfg in cfgs.values() for m in cfg.metrics})
    for t in thresholds:
        for what in ("learner", "dataset", "preset"):
            pattern = getattr(t, what)
            if not any(fnmatch.fnmatch(v, pattern) for v in have[what]):
                raise RepbenchError(f"{path}: the threshold on {t.metric} names {what} '{pattern}', which the suite "
                                    f"does not have (its {what}s: {', '.join(have[what])}); it would gate nothing")
        if not any(t.applies(*key) and measures(cfg, t.metric) for key, cfg in cfgs.items()):
            raise RepbenchError(f"{path}: the threshold on {t.metric} applies to no learner, dataset and preset "
                                f"of the suite that measures {t.metric} (its metrics: {', '.join(metrics)}); it "
                                f"would gate nothing")
    for metric in tolerance:
        if not any(measures(cfg, metric) for cfg in cfgs.values()):
            raise RepbenchError(f"{path}: the baseline tolerance names metric '{metric}', which the suite does not "
                                f"measure (its metrics: {', '.join(metrics)}); it would gate nothing")


def _ray(raw: dict, path: Path) -> dict:
    """The `ray:` key: CPUs and GPUs per cell (numbers >= 0, fractions allowed, as Ray takes them) and epochs
    between checkpoint uploads (an integer >= 1)."""
    ray = dict(_check_keys(raw.get("ray") or {}, RAY_KEYS, "ray", path))
    for key, least in (("cpus_per_cell", "> 0"), ("gpus_per_cell", ">= 0")):
        value = _number(ray[key], f"ray: {key}", path) if key in ray else None
        if value is not None and (value < 0 or (value == 0 and least == "> 0")):
            raise RepbenchError(f"{path}: ray: {key} must be {least}, got {ray[key]!r}")
    every = ray.get("checkpoint_every")
    if every is not None and (isinstance(every, bool) or not isinstance(every, int) or every < 1):
        raise RepbenchError(f"{path}: ray: checkpoint_every must be an integer >= 1 (epochs), got {every!r}")
    return ray


def _feature(item, path: Path) -> FeatureCell:
    _check_keys(item, FEATURE_KEYS, "a features entry", path)
    if not isinstance(item.get("name"), str) or not isinstance(item.get("file"), str):
        raise RepbenchError(f"{path}: a features entry needs a name and a file (name: mine, file: mine.npz)")
    file = (path.parent / item["file"]).resolve()
    if not file.is_file():
        raise RepbenchError(f"{path}: features file {file} does not exist")
    return FeatureCell(item["name"], file, str(item.get("dataset", "external")))


def _pairs(raw: dict, path: Path, displays: set[str]) -> tuple[tuple[str, str], ...]:
    pairs = _list(raw, "compare", path, [])
    for pair in pairs:
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(p, str) for p in pair)):
            raise RepbenchError(f"{path}: compare takes pairs of learners, e.g. [[vae, lpvae-h2]], got {pair!r}")
        unknown = [p for p in pair if p not in displays]
        if unknown:
            raise RepbenchError(f"{path}: compare names '{unknown[0]}', which is not a learner of this suite "
                                f"({', '.join(sorted(displays))})")
    return tuple(tuple(p) for p in pairs)
