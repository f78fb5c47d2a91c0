"""A run's record as one type: metrics.json reads back into the same JSON, and completing a run merges what it
measured now into what it had, metric by metric."""
import json

from repbench.measure.battery import BatteryConfig
from repbench.runs.record import Measured, RunRecord

IDENTITY = {"name": "vae-synthetic-smoke-s0", "learner": "vae", "display_name": "vae", "dataset": "synthetic",
            "preset": "smoke", "seed": 0}
BPD = {"bpd": {"bpd": 8.0}}  # a metric's settings as the battery records them


def measured(metrics, settings, probes=None, battery=None) -> Measured:
    return Measured(metrics=metrics, units={m: {"unit": "?", "better": "lower"} for m in metrics},
                    measured_with=settings, spectrum=[], probes=probes or {}, timings_s={m: 1.0 for m in metrics},
                    battery=battery or {"metrics": list(metrics)})


def test_a_new_record_has_the_keys_of_metrics_json_in_their_order_and_reads_back_the_same():
    record = RunRecord.new(IDENTITY, measured({"bpd": 8.0}, BPD), history=[{"epoch": 1, "train_loss": 2.0}])
    written = json.loads(json.dumps(record.to_json()))
    assert list(written) == ["name", "learner", "display_name", "dataset", "preset", "seed", "metrics", "units",
                             "measured_with", "spectrum", "probes", "timings_s", "battery", "history"]
    assert RunRecord.from_json(written).to_json() == written
    assert RunRecord.from_json({**written, "old_key": 1}).to_json()["old_key"] == 1  # kept, not dropped


def test_an_evaluated_checkpoint_records_only_what_it_knows():
    record = RunRecord.new({"name": "vae on mnist5k", "learner": "vae", "dataset": "mnist5k"},
                           measured({"bpd": 8.0}, BPD)).to_json()
    assert "history" not in record and "seed" not in record and record["name"] == "vae on mnist5k"


def test_merge_takes_new_values_metric_by_metric_and_keeps_the_rest():
    old = RunRecord.new(IDENTITY, measured({"bpd": 8.0, "linear_probe": 90.0}, {**BPD, "linear_probe": {"c": 1}},
                                           probes={"linear_probe": {"mean": [90.0], "sample_k1": [80.0]}},
                                           battery={"probe_seeds": 3}), history=[{"epoch": 1}])
    new = measured({"linear_probe": 95.0}, {"linear_probe": {"c": 2}}, probes={"linear_probe": {"mean": [95.0]}},
                   battery={"probe_seeds": 1})
    merged = old.merge(new).to_json()
    assert merged["metrics"] == {"bpd": 8.0, "linear_probe": 95.0}
    # the old record's bpd was measured before metrics had versions: by version 1, which the merged record says
    assert merged["measured_with"] == {"bpd": {**BPD["bpd"], "version": 1}, "linear_probe": {"c": 2}}
    assert merged["probes"] == {"linear_probe": {"mean": [95.0], "sample_k1": [80.0]}}
    assert merged["battery"] == {"probe_seeds": 3}  # the record's own; measured_with says how each value was made
    assert merged["history"] == [{"epoch": 1}] and merged["name"] == IDENTITY["name"]


def test_missing_names_what_is_absent_or_measured_with_other_settings():
    cfg = BatteryConfig(metrics=("bpd", "intrinsic_dim"))
    assert RunRecord.from_json({}).missing(cfg) == ["bpd", "intrinsic_dim"]
    other = RunRecord.new(IDENTITY, measured({"bpd": 8.0}, {"bpd": {"bpd": "other settings"}}))
    assert other.missing(cfg) == ["bpd", "intrinsic_dim"]
