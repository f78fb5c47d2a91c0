"""The tuned malloc keeps freed tensor memory for reuse (few page faults) and changes no number."""
import json
import os
import subprocess
import sys

import pytest

PROBE = r"""
import json, resource, sys
if sys.argv[1] == "torch-first":  # a user's script that imports torch before repbench
    import torch
import repbench, torch
from repbench.malloc import tune
mode = tune()  # what a command (cli.main) and a run (runs.runner.run) do first
torch.manual_seed(0)
x = torch.randn(4, 4)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):  # a 64 MB tensor made, touched and freed, as activations are every step
    t = torch.empty(16 * 1024 * 1024)
    t.fill_(1.0)
    del t
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
learner = repbench.create_learner("lpvae", h=1, preset="smoke", image_shape=(1, 12, 12))
batch = repbench.data.make_synthetic(40, 10).train_x
module = learner.module.train()
loss = learner.loss(module, batch)
loss.backward()
grads = [float(p.grad.double().pow(2).sum()) for p in module.parameters()]
print(json.dumps({"mode": mode, "faults": faults, "loss": float(loss), "grads": grads}))
"""


def probe(mode: str, order: str = "repbench-first") -> dict:
    env = {**os.environ, "REPBENCH_MALLOC": mode, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", PROBE, order], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc is what is tuned")
@pytest.mark.parametrize("order", ["repbench-first", "torch-first"])
def test_tuned_malloc_reuses_memory_and_changes_no_number(order):
    tuned, system = probe("tuned", order), probe("system", order)
    if tuned["mode"] != "glibc-tuned":
        pytest.skip(f"malloc is not glibc's here ({tuned['mode']})")
    pages = 64 * 1024 * 1024 // 4096
    assert system["mode"] == "system" and system["faults"] > 10 * pages  # a fresh mmap every time
    # touched a few times at most (the heap grows in steps), then reused; untuned, all 20 times fresh
    assert tuned["faults"] < 5 * pages < system["faults"] / 4
    assert tuned["loss"] == system["loss"] and tuned["grads"] == system["grads"]


START = r"""
import sys
import repbench
from repbench import malloc
print("after import:", malloc._mode)
if sys.argv[1] == "cli":
    from repbench.cli import main
    sys.argv = ["repbench", "ls"]
    try:
        main()
    except SystemExit:
        pass
else:
    from repbench.runs import RunSpec, run
    try:
        run(RunSpec("vae", dataset="no-such-dataset"))
    except repbench.RepbenchError:
        pass
print("after start:", malloc._mode)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc is what is tuned")
@pytest.mark.parametrize("start", ["cli", "run"])
def test_importing_repbench_leaves_malloc_alone_and_a_command_or_run_tunes_it(start):
    """A library user's process is theirs: `import repbench` tunes nothing; a command and a run tune first."""
    env = {**os.environ, "REPBENCH_MALLOC": "tuned"}
    out = subprocess.run([sys.executable, "-c", START, start], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = [line for line in out.stdout.splitlines() if line.startswith("after")]
    assert lines[0] == "after import: None"
    assert lines[1] != "after start: None" and lines[1].startswith("after start: ")
