"""The record of a run (metrics.json) as one type: who the run is, what it measured and with which settings, and
how its training went. A finished run is reused only for values measured with the settings asked for now
(`missing`); the rest is measured again (from cached representations) and merged in (`merge`)."""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from ..config import override
from ..errors import RepbenchError, first_line
from ..measure import BatteryConfig, BatteryResult
from ..metrics import METRICS, metric_info

IDENTITY = ("name", "learner", "display_name", "dataset", "preset", "seed")
DIAGNOSTICS = ("fits",)  # what measured_with says of how values ended, beside the settings that decide reuse
LATER_SETTINGS = {"probe_protocol": "fixed"}  # settings added since records began, as every earlier value had them


@dataclass(frozen=True)
class Measured:
    """What one pass of the battery measured. A field is None only in an older record that lacks it."""
    metrics: dict | None
    units: dict | None = None           # name -> {unit, better}, from the metric registry
    measured_with: dict | None = None   # metric -> the settings and code version its values were measured with
    spectrum: list | None = None        # PCA eigenvalues, for the spectrum figure
    probes: dict | None = None          # probe -> representation type -> accuracy (%) per probe seed
    timings_s: dict | None = None       # metric -> seconds
    battery: dict | None = None         # the battery's settings (BatteryConfig as a dict)

    @classmethod
    def of(cls, res: BatteryResult, cfg: BatteryConfig) -> "Measured":
        return cls(res.metrics, units_of(res.metrics), res.measured_with, res.spectrum, res.probes, res.timings_s,
                   asdict(cfg))


@dataclass(frozen=True)
class RunRecord:
    """metrics.json. Identity fields are None only where the record does not know them (an evaluated checkpoint
    knows its name, learner and dataset); `history` (per-epoch values) is None there too."""
    measured: Measured
    name: str | None = None
    learner: str | None = None
    display_name: str | None = None
    dataset: str | None = None
    preset: str | None = None
    seed: int | None = None
    history: list | None = None
    extra: dict = field(default_factory=dict)  # keys of an older record that this version does not write

    @classmethod
    def new(cls, identity: dict, measured: Measured, history: list | None = None) -> "RunRecord":
        """The one place a record is built: `identity` holds IDENTITY's keys (some, for an evaluated checkpoint)."""
        unknown = set(identity) - set(IDENTITY)
        if unknown:
            raise ValueError(f"not identity keys: {sorted(unknown)}")
        return cls(measured=measured, history=history, **identity)

    def to_json(self) -> dict:
        identity = {k: getattr(self, k) for k in IDENTITY if getattr(self, k) is not None}
        measured = {f.name: getattr(self.measured, f.name) for f in fields(Measured)
                    if getattr(self.measured, f.name) is not None}
        history = {} if self.history is None else {"history": self.history}
        return {**identity, **measured, **history, **self.extra}

    @classmethod
    def from_json(cls, record: dict) -> "RunRecord":
        measured = Measured(**{f.name: record.get(f.name) for f in fields(Measured)})
        known = set(IDENTITY) | {f.name for f in fields(Measured)} | {"history"}
        return cls(measured=measured, history=record.get("history"), extra={k: v for k, v in record.items()
                                                                            if k not in known},
                   **{k: record.get(k) for k in IDENTITY})

    def missing(self, battery: BatteryConfig) -> list[str]:
        """The metrics of `battery` that this record lacks or measured with other settings or another version of
        their code."""
        have = {m: {k: v for k, v in s.items() if k not in DIAGNOSTICS}
                for m, s in measured_with(self.to_json()).items()}
        return [m for m in battery.metrics if have.get(m) != as_stored(METRICS.get(m).resolved_settings(battery))]

    def merge(self, new: Measured) -> "RunRecord":
        """This record with `new`'s values, settings and figures' data taking precedence metric by metric (the
        battery's settings stay this record's: `measured_with` says how each value was measured)."""
        old = self.measured
        probes = {p: {**(old.probes or {}).get(p, {}), **by_type} for p, by_type in (new.probes or {}).items()}
        merged = Measured(metrics={**(old.metrics or {}), **new.metrics}, units={**(old.units or {}), **new.units},
                          measured_with={**measured_with(self.to_json()), **new.measured_with},
                          spectrum=new.spectrum or old.spectrum or [], probes={**(old.probes or {}), **probes},
                          timings_s={**(old.timings_s or {}), **(new.timings_s or {})}, battery=old.battery)
        return replace(self, measured=merged)


def measured_with(record: dict) -> dict[str, dict]:
    """metric -> the settings and code version its values were measured with (and how its probes' fits ended).
    Records written before metrics had versions were measured by version 1, and before a setting existed with its
    LATER_SETTINGS value; records written before settings were kept per metric carry the whole battery's
    settings once, and each metric's are derived from those."""
    if "measured_with" in record:
        return {m: {"version": 1, **_later(m), **s} for m, s in record["measured_with"].items()}
    legacy = record.get("battery")
    if not legacy:
        return {}
    try:
        cfg = override(BatteryConfig(), {k: v for k, v in legacy.items() if k != "metrics"}, "battery")
        cfg = override(cfg, {"metrics": tuple(legacy.get("metrics", ()))}, "battery")
    except Exception:  # an unreadable old record: nothing in it counts as measured
        return {}
    values = record.get("metrics", {})
    return {m: {**METRICS.get(m).resolved_settings(cfg), "version": 1} for m in cfg.metrics
            if m in METRICS and (m in values or _typed(m, values))}


def _later(metric: str) -> dict:
    """The settings `metric` depends on now that records older than them do not name."""
    settings = METRICS.get(metric).settings if metric in METRICS else ()
    return {k: v for k, v in LATER_SETTINGS.items() if k in settings}


def unconverged(record: dict) -> set[str]:
    """The value names of a record (with their spreads) whose probe's solver stopped short of converging on
    some probe seed: numbers that must never pass a gate or fill a table cell."""
    out = set()
    for settings in measured_with(record).values():
        for name, fit in (settings.get("fits") or {}).items():
            if False in fit.get("converged", ()):
                out |= {name, name + "_std"}
    return out


def trusted_metrics(record: dict) -> dict:
    """A record's values with those that did not converge as NaN, which fails every threshold and baseline."""
    bad = unconverged(record)
    return {k: math.nan if k in bad and v is not None else v for k, v in record.get("metrics", {}).items()}


def read_record(path: Path, where: str | None = None, ref: str | None = None) -> dict:
    """A finished run's metrics.json as the gate and the tables read it: a truncated file, or a value that is not a
    number (a hand-edited record), is a one-line error naming the file and how to repair it (`ref`: the run's
    folder name or MLflow run id; default the folder's name), never a traceback or a blank cell."""
    where = where or str(path)
    # measuring again repairs a record whole (Recorder.stored); --rerun would leave the broken one beside a new run
    repair = (f"measure it again (`repbench eval --run {ref or Path(path).parent.name}`, or the suite that made "
              f"it) or remove its run folder")
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        raise RepbenchError(f"{where} is unreadable or truncated ({first_line(exc, 80)}); {repair}") from None
    return check_record(record, where, repair)


def check_record(record, where: str, repair: str) -> dict:
    """`record` if its values are numbers (or None: does not apply) and its settings mappings, else one line."""
    values, settings = (record.get("metrics"), record.get("measured_with", {})) if isinstance(record, dict) \
        else (None, None)
    if not isinstance(values, dict) or not isinstance(settings, dict):
        raise RepbenchError(f"{where} is not a repbench record (no 'metrics' mapping); {repair}")
    bad = next((k for k, v in values.items() if v is not None and (isinstance(v, bool) or
                                                                   not isinstance(v, (int, float)))), None)
    if bad is not None:
        raise RepbenchError(f"{where}: the value of '{bad}' is {values[bad]!r}, not a number; {repair}")
    odd = next((m for m, s in settings.items() if not isinstance(s, dict)), None)
    if odd is not None:
        raise RepbenchError(f"{where}: the settings of '{odd}' are {settings[odd]!r}, not a mapping; {repair}")
    return record


def _typed(metric: str, values: dict) -> bool:
    return metric == "rep_types" and any("." in k for k in values)


def as_stored(settings: dict) -> dict:
    """Settings as a record holds them after a trip through JSON (tuples become lists), for comparing."""
    return json.loads(json.dumps(settings, default=str))


def units_of(metrics: dict) -> dict[str, dict]:
    """name -> {unit, better} for the values of a record, from the metric registry."""
    out = {}
    for name in metrics:
        unit, direction, _ = metric_info(name)
        out[name] = {"unit": unit, "better": direction}
    return out
