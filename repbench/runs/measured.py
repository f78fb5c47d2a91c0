"""What a record has measured, and with which settings: a finished run is reused only for values measured with
the settings asked for now; the rest is measured again (from cached representations) and merged in."""
from __future__ import annotations

import json
import math

from ..metrics import METRICS, metric_info

DIAGNOSTICS = ("fits",)  # what measured_with says of how values ended, beside the settings that decide reuse
LATER_SETTINGS = {"probe_protocol": "fixed"}  # settings added since records began, as every earlier value had them


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
    from ..measure import BatteryConfig
    from ..config import override
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


def _typed(metric: str, values: dict) -> bool:
    return metric == "rep_types" and any("." in k for k in values)


def missing_metrics(record: dict, cfg) -> list[str]:
    """The metrics of `cfg` that `record` lacks or measured with other settings or another version of their code."""
    have = {m: {k: v for k, v in s.items() if k not in DIAGNOSTICS} for m, s in measured_with(record).items()}
    return [m for m in cfg.metrics if have.get(m) != as_stored(METRICS.get(m).resolved_settings(cfg))]


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


def as_stored(settings: dict) -> dict:
    """Settings as a record holds them after a trip through JSON (tuples become lists), for comparing."""
    return json.loads(json.dumps(settings, default=str))


def merge_record(old: dict, new: dict) -> dict:
    """`old` with `new`'s values, settings and figures' data taking precedence metric by metric."""
    probes = {p: {**old.get("probes", {}).get(p, {}), **by_type} for p, by_type in new.get("probes", {}).items()}
    return {**old, **{k: v for k, v in new.items() if k not in ("metrics", "units", "measured_with", "probes",
                                                                  "timings_s", "spectrum", "battery")},
            "metrics": {**old.get("metrics", {}), **new["metrics"]},
            "units": {**old.get("units", {}), **new["units"]},
            "measured_with": {**measured_with(old), **new["measured_with"]},
            "probes": {**old.get("probes", {}), **probes},
            "timings_s": {**old.get("timings_s", {}), **new.get("timings_s", {})},
            "spectrum": new.get("spectrum") or old.get("spectrum") or []}


def units_of(metrics: dict) -> dict[str, dict]:
    """name -> {unit, better} for the values of a record, from the metric registry."""
    out = {}
    for name in metrics:
        unit, direction, _ = metric_info(name)
        out[name] = {"unit": unit, "better": direction}
    return out
