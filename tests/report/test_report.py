"""Reports over runs of several datasets, presets and configurations: every table, figure and the LaTeX keep them
apart (records as the report reads them, with known values; no training)."""
import json
import re
import shutil
import subprocess

import pytest

from repbench.report import build, build_report, load_paper_numbers
from repbench.report.render import render

# lpvae-h2 on two datasets: the probes' means differ by far more than any seed spread, so a mean across the two
# datasets (93.15) is a number no one measured
PROBE = {"mnist5k": (86.0, 86.6), "synthetic": (100.0, 100.0)}
BPD = {"mnist5k": (1.32, 1.33), "synthetic": (9.10, 9.20)}
ID = {"mnist5k": (16, 18), "synthetic": (8, 8)}
DIM = {"mnist5k": 32, "synthetic": 8}


def spectrum(n: int, seed: int) -> list[float]:
    return [1.0 / (k + 1 + seed) for k in range(n)]


def record(learner: str, dataset: str, seed: int, preset: str = "smoke", **extra) -> dict:
    i = seed
    return {"learner": learner, "dataset": dataset, "preset": preset, "seed": seed, "bpd": BPD[dataset][i],
            "mutual_info": 10.0 + i,
            "intrinsic_dim": float(ID[dataset][i]), "linear_probe": PROBE[dataset][i],
            "linear_probe.sample_k1": PROBE[dataset][i] - 5, "linear_probe.sample_k100": PROBE[dataset][i] - 1,
            "linear_probe.embedding": PROBE[dataset][i], "linear_probe.labels_100": PROBE[dataset][i] - 10,
            "_spectrum": spectrum(DIM[dataset], seed), "_history": [{"epoch": e, "test_loss": 9.0 - e}
                                                                     for e in (1, 2)],
            "_record": {"learner": learner.split("-")[0]}, **extra}


@pytest.fixture
def mixed():
    """lpvae-h2 and vae on mnist5k and synthetic, two seeds each."""
    return [record(lr, ds, s) for lr in ("lpvae-h2", "vae") for ds in ("mnist5k", "synthetic") for s in (0, 1)]


def section(report, key):
    return next(s for s in report.sections if s.key == key)


def test_no_table_averages_across_datasets(mixed):
    report = build(mixed)
    texts = [c.text for s in report.sections for row in s.rows for c in row if hasattr(c, "text")]
    assert not [t for t in texts if t.startswith("93.")], "a mean of mnist5k and synthetic"
    table2 = section(report, "table2")
    rows = {(r[0], r[1]): r for r in table2.rows}
    assert rows[("lpvae-h2", "mnist5k")][3] == "2" and rows[("lpvae-h2", "synthetic")][3] == "2"
    probe = table2.columns.index("linear_probe (%, ↑)")
    assert rows[("lpvae-h2", "mnist5k")][probe].text == "86.3 ± 0.4"
    assert rows[("lpvae-h2", "synthetic")][probe].text == "100.0 ± 0.0"
    table1 = {s.key: s for s in report.sections if s.key.startswith("table1.")}
    assert set(table1) == {"table1.linear_probe.mnist5k.smoke", "table1.linear_probe.synthetic.smoke"}
    mnist = table1["table1.linear_probe.mnist5k.smoke"]
    assert mnist.rows[0] == ["seeds", "2", "2"]
    assert next(r for r in mnist.rows if r[0] == "MAP mean")[1].text == "86.3 ± 0.4"
    labels = section(report, "labels")
    assert [(r[0], r[1], r[3]) for r in labels.rows] == [("lpvae-h2", "mnist5k", "2"), ("lpvae-h2", "synthetic", "2"),
                                                         ("vae", "mnist5k", "2"), ("vae", "synthetic", "2")]
    assert next(r for r in labels.rows if r[:2] == ["lpvae-h2", "mnist5k"])[4].text == "76.3 ± 0.4"


def test_the_best_is_bolded_only_among_runs_of_one_dataset_and_preset(mixed):
    """bpd 1.3 on mnist5k is no better than 9.1 on synthetic: each dataset has its own best, and a one-run
    smoke group beside a quick one has none."""
    runs = [r for r in mixed if r["learner"] == "lpvae-h2"] + [
        {**record("vae", "mnist5k", 0), "bpd": 1.40}, {**record("vae", "synthetic", 0), "bpd": 9.0},
        {**record("vae", "mnist5k", 0, preset="quick"), "intrinsic_dim": 2.0}]
    latex = build_report(runs, "latex")
    assert r"$\mathbf{1.325 \pm 0.007}$" in latex           # lpvae-h2 beats vae (1.400) on mnist5k
    assert r"$\mathbf{9.000}$" in latex and r"$\mathbf{9.150" not in latex   # vae beats lpvae-h2 on synthetic
    assert r"\mathbf{2.0}" not in latex                      # the only quick run: no one to be better than


def test_configurations_of_one_learner_are_rows_of_their_own():
    """Runs whose parameters differ beyond the seed (here the epochs) are not averaged, even in one cell name."""
    from repbench.report.tables import configuration
    runs = [{**record("lpvae-h2", "mnist5k", s), "linear_probe": p,
             "_config": configuration({"learner": "lpvae", "seed": s, "model_config": {"h": 2},
                                       "train_config": {"epochs": e, "eval_batch_size": 100 + s}})}
            for s, e, p in [(0, 1, 50.0), (1, 1, 52.0), (0, 20, 90.0), (1, 20, 92.0)]]
    table2 = section(build(runs), "table2")
    rows, probe = {r[0]: r for r in table2.rows}, table2.columns.index("linear_probe (%, ↑)")
    assert set(rows) == {"lpvae-h2 (epochs=1)", "lpvae-h2 (epochs=20)"}
    assert rows["lpvae-h2 (epochs=1)"][3] == "2" and rows["lpvae-h2 (epochs=1)"][probe].text == "51.0 ± 1.4"


def test_configuration_reads_parameters_as_mlflow_and_run_folders_spell_them():
    from repbench.report.tables import configuration
    folder = {"learner": "lpvae", "seed": 3, "image_shape": [1, 28, 28], "model_config": {"h": 2, "width": 16},
              "train_config": {"epochs": 2, "curve_every": 1}, "options": {"h": 2}}
    logged = {"learner": "lpvae", "seed": "0", "image_shape": "(1, 28, 28)", "model_config.h": "2",
              "model_config.width": "16", "train_config.epochs": "2", "train_config.curve_every": "5",
              "options.h": "2", "env.pid": "123", "battery.probe_seeds": "3", "device": "cpu", "dataset": "mnist5k"}
    assert configuration(folder) == configuration(logged)
    assert configuration(folder) != configuration({**folder, "model_config": {"h": 2, "width": 32}})


def test_figures_draw_every_group_and_name_the_tables_intrinsic_dimension(mixed):
    import pandas as pd

    from repbench.report.figures import mean_spectra
    df = build(mixed).records
    spectra, ids, skipped = mean_spectra(pd.DataFrame(df))
    assert set(spectra) == {"lpvae-h2 · mnist5k · smoke", "lpvae-h2 · synthetic · smoke", "vae · mnist5k · smoke",
                            "vae · synthetic · smoke"} and skipped == []
    assert ids["lpvae-h2 · mnist5k · smoke"] == "17.0 ± 1.4" and len(spectra["lpvae-h2 · mnist5k · smoke"]) == 32
    odd = mixed + [{**record("fpvae", "mnist5k", 0), "_spectrum": spectrum(32, 0)},
                   {**record("fpvae", "mnist5k", 1), "_spectrum": spectrum(30, 1)}]
    _, _, skipped = mean_spectra(pd.DataFrame(build(odd).records))
    assert skipped == ["fpvae · mnist5k · smoke (its seeds' spectra differ in length: 32, 30)"]


def test_figure_captions_say_which_runs_they_leave_out(mixed, tmp_path):
    odd = mixed + [{**record("fpvae", "mnist5k", 0), "_spectrum": []}]
    captions = [c for c, _ in build(odd, figures_dir=tmp_path).figures]
    assert any("not drawn: fpvae · mnist5k · smoke (no spectrum in its records)" in c for c in captions), captions
    assert {p.name for p in tmp_path.iterdir()} == {"spectra.png", "probe_vs_mi.png", "curves.png"}


@pytest.mark.parametrize("learner,unit", [("vae", "bits/dim"), ("ae", "bits/dim"), ("dim", "nats per image"),
                                          ("simclr", "nats per image"), ("no-such-learner", "unit unknown")])
def test_training_curves_put_a_loss_on_a_bits_per_dim_axis_only_when_it_is_one(learner, unit):
    import pandas as pd

    from repbench.report.figures import loss_unit, training_curves
    runs = [{**record("vae", "synthetic", s), "_record": {"learner": learner}} for s in (0, 1)]
    curves, skipped = training_curves(pd.DataFrame(runs))
    assert curves["vae · synthetic · smoke"]["unit"].startswith(unit) and loss_unit(learner).startswith(unit)
    assert list(curves["vae · synthetic · smoke"]["test_loss_epochs"]) == [1, 2] and skipped == []


def pdf_text(tables: str, folder) -> tuple[str, str]:
    """Compile `tables` in an article with what they say they need; return pdflatex's log and the PDF's text."""
    (folder / "doc.tex").write_text("\\documentclass{article}\\usepackage{booktabs}\\usepackage{graphicx}\n"
                                    "\\begin{document}\n" + tables + "\\end{document}\n")
    done = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "doc.tex"], cwd=folder,
                          capture_output=True, text=True, errors="replace", timeout=120)
    assert done.returncode == 0, done.stdout[-3000:]
    text = subprocess.run(["pdftotext", "-layout", "doc.pdf", "-"], cwd=folder, capture_output=True, text=True,
                          timeout=60, check=True).stdout
    return done.stdout, text


@pytest.mark.skipif(shutil.which("pdflatex") is None or shutil.which("pdftotext") is None,
                    reason="no pdflatex or pdftotext here (apt-get install texlive-latex-base "
                           "texlive-latex-recommended poppler-utils)")
def test_paper_latex_reads_in_the_pdf_as_the_numbers_it_holds(tmp_path):
    runs = [{"learner": "vae", "dataset": "mnist5k", "preset": "quick", "seed": s, "linear_probe": v,
             "bpd": b} for s, (v, b) in enumerate([(88.25, 1.31), (88.75, 1.33)])]
    tables = build_report(runs, "latex", paper=load_paper_numbers())
    log, text = pdf_text(tables, tmp_path)
    assert "invalid in math mode" not in log
    assert "90.9 ± 0.1" in text and "88.5 ± 0.4" in text and "1.320 ± 0.014" in text
    captions = re.findall(r"Table \d+: .*", text)
    assert captions and not [c for c in captions if re.match(r"Table \d+: Table", c)], captions
    assert "Likelihood, latent information, intrinsic dimension and probes (as the paper’s Table 2)" in \
        " ".join(text.split()).replace("'", "’")


def test_an_out_file_that_cannot_be_written_stops_the_report_before_it_prints(tmp_path):
    """(--out into a new folder is written: tests/core/test_suite.py)"""
    from click.testing import CliRunner

    from repbench.cli import cli
    result = CliRunner().invoke(cli, ["report", "--results-dir", str(tmp_path / "none"), "--out",
                                      "/proc/no/such/folder/report.md"])
    assert result.exit_code == 2 and result.stdout == "", result.output
    assert "cannot create its folder /proc/no/such/folder" in result.stderr
    result = CliRunner().invoke(cli, ["report", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "is a folder" in result.stderr and result.stdout == ""


def test_markdown_and_csv_show_each_dataset_apart(mixed):
    from repbench.report import read_tidy
    from repbench.report.tidy import render_tidy
    report = build(mixed)
    out = render(report, "markdown")
    assert "93.1" not in out and "93.2" not in out and "86.3 ± 0.4" in out
    rows = read_tidy(render_tidy(report.records, "csv"))   # the tidy CSV: a row per learner, dataset and value
    probe = {(r["learner"], r["dataset"]): r for r in rows if r["metric"] == "linear_probe"}
    assert probe[("lpvae-h2", "mnist5k")]["values"] == [86.0, 86.6] and probe[("lpvae-h2", "synthetic")]["values"] \
        == [100.0, 100.0]
    assert probe[("lpvae-h2", "mnist5k")]["mean"] == pytest.approx(86.3) and len(probe) == 4
    assert json.dumps([r["learner"] for r in report.records]).count("lpvae-h2") == 4


def test_the_probe_against_information_figure_names_the_runs_it_cannot_place(mixed, tmp_path):
    odd = mixed + [{**record("ae", "mnist5k", 0), "mutual_info": None}]  # a deterministic code: no information
    caption = next(c for c, p in build(odd, figures_dir=tmp_path).figures if p.name == "probe_vs_mi.png")
    assert caption.endswith("not drawn: ae · mnist5k · smoke (1 of 1 seeds: mutual_info or linear_probe not "
                            "measured, not applicable or not finite)"), caption


def test_every_format_shows_the_tidy_rows_number_or_its_marker(mixed):
    """Seed 1 of lpvae-h2 on mnist5k measured its linear probe with another C: the tidy rows give no mean, and the
    markdown, LaTeX and compare tables must not show one either (they read the same rows)."""
    from repbench.report import read_tidy
    from repbench.report.tidy import render_tidy
    runs = [dict(r) for r in mixed]
    for r in runs:
        c = 9.0 if (r["learner"], r["dataset"], r["seed"]) == ("lpvae-h2", "mnist5k", 1) else 1.0
        r["_record"] = {"measured_with": {"linear_probe": {"linear_c": c}}}
    report = build(runs, compare=[("vae", "lpvae-h2")])
    rows = read_tidy(render_tidy(report.records, "json"))
    probe = {(r["learner"], r["dataset"]): r for r in rows if r["metric"] == "linear_probe"}
    assert probe[("lpvae-h2", "mnist5k")]["status"] == "mixed_settings" and probe[("lpvae-h2", "mnist5k")]["mean"] \
        is None and probe[("lpvae-h2", "synthetic")]["mean"] == pytest.approx(100.0)
    table2 = section(report, "table2")
    column = table2.columns.index("linear_probe (%, ↑)")
    cells = {(r[0], r[1]): r[column] for r in table2.rows}
    assert cells[("lpvae-h2", "mnist5k")].text == "mixed settings" and cells[("lpvae-h2", "mnist5k")].mean is None
    for (learner, dataset), row in probe.items():   # every other cell is the tidy row's mean, to its digits
        if row["mean"] is not None:
            assert cells[(learner, dataset)].mean == row["mean"]
    markdown = [line for line in render(report, "markdown").splitlines() if line.startswith("| lpvae-h2  | mnist5k")]
    latex = [line for line in render(report, "latex").splitlines() if line.startswith("lpvae-h2 & mnist5k")]
    assert markdown and latex and not [line for line in markdown + latex if "86.3" in line], markdown + latex
    compare = [r for r in section(report, "compare").rows if r[1] == "mnist5k" and r[3] == "linear_probe"]
    assert compare and compare[0][6] == "not compared (lpvae-h2: seeds measured with different settings)", compare


def test_label_efficiency_columns_have_one_order_whatever_the_frame_gives():
    # the columns come out of a set: the table must not reorder between two reports of the same runs
    import pandas as pd
    from repbench.report.tables import _label_columns
    names = [f"{p}.labels_{n}" for n in (3000, 100, 600) for p in ("knn_probe", "nonlinear_probe", "linear_probe")]
    orders = [_label_columns(pd.DataFrame(columns=cols)) for cols in (names, names[::-1], sorted(names))]
    assert orders[0] == orders[1] == orders[2]
    assert orders[0][:4] == ["linear_probe.labels_100", "linear_probe.labels_600", "linear_probe.labels_3000",
                             "nonlinear_probe.labels_100"]


def test_rows_measured_with_other_settings_are_named_and_not_compared(mixed):
    """vae measured its linear probe with C 9 on mnist5k, lpvae-h2 with C 1: each row's seeds agree, so each has
    a mean, but the difference between them would be the settings' as much as the learners'."""
    runs = [dict(r) for r in mixed]
    for r in runs:
        c = 9.0 if (r["learner"], r["dataset"]) == ("vae", "mnist5k") else 1.0
        r["_record"] = {"measured_with": {"linear_probe": {"linear_c": c, "version": 2}}}
    report = build(runs, compare=[("vae", "lpvae-h2")])
    compare = {(r[1], r[3]): r[6] for r in section(report, "compare").rows}
    assert compare[("mnist5k", "linear_probe")] == "not compared (vae / lpvae-h2 measured with linear_c 9.0 / 1.0)"
    assert compare[("synthetic", "linear_probe")].startswith("[")   # alike on synthetic: an interval
    assert compare[("mnist5k", "bpd")].startswith("[")
    settings = section(report, "settings")
    assert settings.rows == [["linear_probe", "mnist5k", "smoke", "lpvae-h2: linear_c 1.0; vae: linear_c 9.0"]]
    assert "| linear_probe | mnist5k   | smoke    | lpvae-h2: linear_c 1.0; vae: linear_c 9.0 |" in \
        render(report, "markdown")
    alike = build(mixed, compare=[("vae", "lpvae-h2")])
    assert "settings" not in {s.key for s in alike.sections}


def test_figures_go_into_a_new_folder_when_no_run_has_a_spectrum(mixed, tmp_path):
    # the folder had been made only for the spectra: runs without one (no intrinsic_dim measured) left the
    # training curves a folder that did not exist, and the page's report a traceback
    report = build([{**r, "_spectrum": []} for r in mixed], figures_dir=tmp_path / "new" / "figures")
    assert (tmp_path / "new" / "figures" / "curves.png").exists()
    assert any(path.name == "curves.png" for _, path in report.figures)


def test_the_classifiers_accuracy_is_compared_only_where_learners_have_one(mixed):
    # Table 6's headline gets its Welch interval like the summary metrics; a learner without a classifier
    # (its value does not apply) gets no row
    m2 = [record(lr, "mnist5k", s, classifier_accuracy=acc[s]) for lr, acc in
          (("m2-h0", (70.0, 71.0)), ("m2-h1", (60.0, 62.0))) for s in (0, 1)]
    rows = {r[3]: r for r in section(build(m2, compare=[("m2-h0", "m2-h1")]), "compare").rows}
    assert rows["classifier_accuracy"][5].text == "-9.5" and rows["classifier_accuracy"][4] == "2 / 2"
    from repbench.report.stats import NOT_APPLICABLE
    plain = [{**r, "classifier_accuracy": NOT_APPLICABLE} for r in mixed]   # as table_values reads a None
    rows = section(build(plain, compare=[("vae", "lpvae-h2")]), "compare").rows
    assert rows and not [r for r in rows if r[3] == "classifier_accuracy"]
