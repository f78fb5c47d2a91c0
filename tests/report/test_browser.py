"""What a person sees, checked in a real headless Chromium: `repbench ui` opens on the runs list, and the
leaderboard page loads without console errors and sorts its columns."""
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from repbench.cli import cli

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium here (apt-get install chromium)")
# As root in a container, without the background services a desktop has: no sandbox, no GPU, no network chatter.
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
SUITE = """name: browser
learners: [vae, {name: lpvae, options: {h: 1}}]
datasets: [synthetic]
presets: [smoke]
seeds: [0, 1]
metrics: [bpd, mutual_info, intrinsic_dim, linear_probe]
battery: {iw_samples: 2}
compare: [[vae, lpvae-h1]]
"""


@pytest.fixture(scope="module")
def suite_results(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("browser")
    (tmp / "suite.yaml").write_text(SUITE)
    out = CliRunner().invoke(cli, ["suite", str(tmp / "suite.yaml"), "-q", "--results-dir", str(tmp / "results")])
    assert out.exit_code == 0, out.output
    return tmp / "suite.yaml", tmp / "results"


@pytest.fixture(scope="module")
def browser():
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield b
        b.close()


def group_of(port: int) -> int | None:
    """The process group of the `mlflow ui` serving `port`."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"ui" in cmd and str(port).encode() in cmd:
            return os.getpgid(int(pid))
    return None


def test_ui_opens_on_the_runs_list(suite_results, browser, tmp_path):
    from mlflow_server import free_port
    _, results = suite_results
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "repbench.cli", "ui", "--port", str(port), "--results-dir",
                             str(results)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            start_new_session=True)
    try:
        assert "starting" in proc.stdout.readline()
        line = proc.stdout.readline()  # printed only once the server answers
        url = re.search(r"MLflow UI at (\S+)", line).group(1)
        assert re.fullmatch(rf"http://127\.0\.0\.1:{port}/#/experiments/\d+/runs\?workflowType=machine_learning", url)
        hint = proc.stdout.readline()  # MLflow keeps columns in the browser: the UI line says how to add them
        assert "Columns" in hint and "bpd, mutual_info, intrinsic_dim" in hint, hint
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        start = time.perf_counter()
        page.goto(url)
        page.wait_for_selector("text=vae-synthetic-smoke-s0", timeout=30_000)
        seconds = time.perf_counter() - start
        for name in ("vae-synthetic-smoke-s1", "lpvae-h1-synthetic-smoke"):
            assert page.locator(f"text={name}").count() >= 1
        # the Dataset and Source columns name what each run used and where it came from
        cells = {col: page.eval_on_selector_all(f"[role=gridcell][col-id='attributes.`{col}`']",
                                                "e => e.map(x => x.textContent.trim())")
                 for col in ("Dataset", "Source")}
        assert len(cells["Dataset"]) == 4 and all(re.fullmatch(r"synthetic \([0-9a-f]{16}\)\s*training", c)
                                                  for c in cells["Dataset"]), cells
        assert cells["Source"] == ["repbench"] * 4, cells
        shot = Path(os.environ.get("REPBENCH_SCREENSHOTS", tmp_path)) / "ui-runs.png"
        page.screenshot(path=str(shot))
        assert shot.stat().st_size > 20_000 and "/runs" in page.url and seconds < 30
        group = group_of(port)
        assert group is not None
    finally:
        proc.send_signal(signal.SIGTERM)  # `repbench ui` takes its server and the server's helpers along
        proc.wait(timeout=60)
    deadline = time.time() + 30
    while time.time() < deadline and any(os.getpgid(int(p)) == group for p in filter(str.isdigit, os.listdir("/proc"))
                                         if Path(f"/proc/{p}").exists()):
        time.sleep(0.5)
    with pytest.raises(ProcessLookupError):
        os.killpg(group, 0)


def test_leaderboard_page_loads_cleanly_and_sorts(suite_results, browser, tmp_path):
    suite, results = suite_results
    out = CliRunner().invoke(cli, ["report", "--suite", str(suite), "--results-dir", str(results), "--format", "html",
                                   "--out", str(tmp_path / "site"), "--paper"])
    assert out.exit_code == 0, out.output
    page_file = tmp_path / "site" / "index.html"
    text = page_file.read_text()
    assert "http://" not in text.replace("http://www.w3.org", "") and "<link" not in text  # nothing fetched
    page = browser.new_page()
    messages = []
    page.on("console", lambda m: messages.append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda e: messages.append(f"pageerror: {e}"))
    page.goto(page_file.as_uri())
    page.wait_for_function("document.body.dataset.loadMs !== undefined")
    assert messages == []
    assert float(page.evaluate("document.body.dataset.loadMs")) < 2000
    page.screenshot(path=str(Path(os.environ.get("REPBENCH_SCREENSHOTS", tmp_path)) / "leaderboard.png"), full_page=True)
    for title in ("Table 2", "Differences across training seeds", "PCA spectra", "Runs"):
        assert page.locator(f"text={title}").count() >= 1, title
    assert page.locator("details").count() == 4 and page.locator("img").count() >= 3
    column = [c.strip() for c in page.eval_on_selector_all("#table2 thead th", "e => e.map(x => x.textContent)")]
    j = next(i for i, c in enumerate(column) if c.startswith("bpd"))
    header = page.locator("#table2 thead th").nth(j)

    def column_values():
        return page.eval_on_selector_all(f"#table2 tbody tr td:nth-child({j + 1})",
                                         "e => e.map(x => parseFloat(x.dataset.value))")
    header.click()
    first = column_values()
    assert first == sorted(first, reverse=True) and header.get_attribute("aria-sort") == "descending"
    header.click()
    assert column_values() == sorted(first) and "#sort=table2:" in page.url
    linked = browser.new_page()
    linked.goto(page.url)  # a sorted view is a link
    linked.wait_for_function("document.body.dataset.loadMs !== undefined")
    assert linked.eval_on_selector_all(f"#table2 tbody tr td:nth-child({j + 1})",
                                       "e => e.map(x => parseFloat(x.dataset.value))") == sorted(first)


@pytest.fixture(scope="module")
def mixed_results(suite_results):
    """The suite's runs (synthetic) and, in the same results folder, lpvae-h1 on mnist5k with two seeds."""
    _, results = suite_results
    for seed in ("0", "1"):
        out = CliRunner().invoke(cli, ["run", "--model", "lpvae", "--h", "1", "--preset", "smoke", "--dataset",
                                       "mnist5k", "--seed", seed, "-q", "--grid", "4", "--metrics",
                                       "bpd,mutual_info,intrinsic_dim,linear_probe", "--iw-samples", "2",
                                       "--results-dir", str(results)])
        assert out.exit_code == 0, out.output
    return results


def test_leaderboard_page_of_a_mixed_results_folder_keeps_each_dataset_apart(mixed_results, browser, tmp_path):
    from mlflow.tracking import MlflowClient
    out = CliRunner().invoke(cli, ["report", "--results-dir", str(mixed_results), "--format", "html", "--out",
                                   str(tmp_path / "site"), "--tag", "preset=smoke"])
    assert out.exit_code == 0, out.output
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    messages = []
    page.on("console", lambda m: messages.append(f"{m.type}: {m.text}"))
    page.goto((tmp_path / "site" / "index.html").as_uri())
    page.wait_for_function("document.body.dataset.loadMs !== undefined")
    assert messages == []
    page.screenshot(path=str(Path(os.environ.get("REPBENCH_SCREENSHOTS", tmp_path)) / "leaderboard-mixed.png"),
                    full_page=True)
    assert page.title() == "repbench leaderboard: repbench (preset=smoke)" == page.locator("h1").inner_text()
    rows = page.eval_on_selector_all("#table2 tbody tr", "e => e.map(r => Array.from(r.cells).map(c => "
                                     "({text: c.textContent, value: c.dataset.value, best: c.classList.contains("
                                     "'best')})))")
    by_group = {(r[0]["text"], r[1]["text"]): r for r in rows}
    assert set(by_group) == {("vae", "synthetic"), ("lpvae-h1", "synthetic"), ("lpvae-h1", "mnist5k")}
    assert all(r[3]["text"] == "2" for r in rows)  # two seeds in each group, never four across datasets
    heads = [c.strip() for c in page.eval_on_selector_all("#table2 thead th", "e => e.map(x => x.textContent)")]
    bpd = next(i for i, c in enumerate(heads) if c.startswith("bpd"))
    client = MlflowClient(f"sqlite:///{mixed_results / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("repbench").experiment_id])
    for (learner, dataset), row in by_group.items():
        mine = [r.data.metrics["bpd"] for r in runs if r.data.tags["display_name"] == learner
                and r.data.tags["dataset"] == dataset]
        assert len(mine) == 2 and float(row[bpd]["value"]) == pytest.approx(sum(mine) / 2)
    assert not any(c["best"] for c in by_group[("lpvae-h1", "mnist5k")])  # alone on its dataset: best of nothing
    assert sum(r[bpd]["best"] for key, r in by_group.items() if key[1] == "synthetic") >= 1
    captions = page.eval_on_selector_all(".samples figcaption", "e => e.map(x => x.textContent)")
    assert sorted(c.split(",")[0] for c in captions) == [
        "lpvae-h1 · mnist5k · smoke", "lpvae-h1 · synthetic · smoke", "vae · synthetic · smoke"], captions
    assert page.locator("details").count() == 6 and page.locator("text=PCA spectra").count() == 1
