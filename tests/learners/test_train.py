"""The training loop: reproducible, resumable, guarded against NaN; checkpoints round-trip."""
import pytest
import torch

import repbench
from repbench.errors import RepbenchError
from repbench.learners.train import NonFiniteLoss, load_checkpoint

from repbench.testing import tiny

OPTS = dict(epochs=3, batch_size=50, train_limit=200)


def same_weights(a, b) -> bool:
    sa, sb = a.module.state_dict(), b.module.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_same_seed_same_numbers(synthetic):
    a = tiny("lpvae", h=1, **OPTS).fit(synthetic.train_x[:200], progress=False)
    b = tiny("lpvae", h=1, **OPTS).fit(synthetic.train_x[:200], progress=False)
    c = tiny("lpvae", h=1, seed=1, **OPTS).fit(synthetic.train_x[:200], progress=False)
    assert same_weights(a, b) and a.history == b.history
    assert not same_weights(a, c)


def test_resume_after_interruption_matches_uninterrupted(synthetic, tmp_path):
    x = synthetic.train_x[:200]
    full = tiny("lpvae", h=1, **OPTS).fit(x, checkpoint=tmp_path / "full.pt", progress=False)

    broken = tiny("lpvae", h=1, **OPTS)
    calls = {"n": 0}
    real_loss = broken.loss

    def interrupt_in_epoch_3(module, xb):  # 4 steps an epoch: the 10th call is inside epoch 3
        calls["n"] += 1
        if calls["n"] == 10:
            raise KeyboardInterrupt
        return real_loss(module, xb)
    broken.loss = interrupt_in_epoch_3
    with pytest.raises(KeyboardInterrupt):
        broken.fit(x, checkpoint=tmp_path / "run.pt", progress=False)
    assert load_checkpoint(tmp_path / "run.pt")["epoch"] == 2

    resumed = tiny("lpvae", h=1, **OPTS).fit(x, checkpoint=tmp_path / "run.pt", resume=True, progress=False)
    assert same_weights(full, resumed)
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3]
    assert resumed.history == full.history


def test_a_resume_sends_the_last_restored_epoch_again(synthetic, tmp_path):
    # stopped after epoch 2's checkpoint but before its on_epoch (a tracker's log): the resume sends it, so the
    # tracker has every epoch (a Ctrl-C test on a Ray cluster once found 19 of 20)
    x, sent = synthetic.train_x[:200], []

    def stop_at_2(record):
        if record["epoch"] == 2:
            raise KeyboardInterrupt
        sent.append(record["epoch"])
    with pytest.raises(KeyboardInterrupt):
        tiny("vae", **OPTS).fit(x, checkpoint=tmp_path / "run.pt", progress=False, on_epoch=stop_at_2)
    assert load_checkpoint(tmp_path / "run.pt")["epoch"] == 2 and sent == [1]
    resumed = tiny("vae", **OPTS).fit(x, checkpoint=tmp_path / "run.pt", resume=True, progress=False,
                                      on_epoch=lambda r: sent.append(r["epoch"]))
    assert sent == [1, 2, 3] and [r["epoch"] for r in resumed.history] == [1, 2, 3]


def test_nan_loss_stops_and_keeps_last_good_checkpoint(synthetic, tmp_path):
    learner = tiny("vae", **OPTS)
    real_loss, calls = learner.loss, {"n": 0}

    def nan_in_epoch_2(module, xb):
        calls["n"] += 1
        loss = real_loss(module, xb)
        return loss * float("nan") if calls["n"] == 6 else loss
    learner.loss = nan_in_epoch_2
    with pytest.raises(NonFiniteLoss, match=r"non-finite loss \(nan\) at epoch 2.*last good checkpoint \(epoch 1\)"):
        learner.fit(synthetic.train_x[:200], checkpoint=tmp_path / "c.pt", progress=False)
    state = load_checkpoint(tmp_path / "c.pt")
    assert state["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_save_load_round_trip(synthetic, tmp_path):
    learner = tiny("lpvae", h=2, epochs=1, train_limit=100).fit(synthetic.train_x[:100], progress=False)
    learner.save(tmp_path / "m.pt")
    back = repbench.load_learner(tmp_path / "m.pt")
    assert back.name == "lpvae" and back.options == learner.options and back.preset == "smoke"
    x = synthetic.test_x[:16]
    for kind in ("mean", "embedding"):
        assert torch.equal(learner.represent(x, kind), back.represent(x, kind))
    z = torch.randn(16, learner.config.z_dim)
    with torch.inference_mode():
        assert torch.equal(learner.decoder_params(x, z), back.decoder_params(x, z))


def test_corrupt_and_foreign_checkpoints_are_refused(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(RepbenchError, match="corrupt"):
        repbench.load_learner(bad)
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    with pytest.raises(RepbenchError, match="not a repbench checkpoint"):
        repbench.load_learner(tmp_path / "foreign.pt")
    with pytest.raises(RepbenchError, match="does not exist"):
        repbench.load_learner(tmp_path / "missing.pt")


class _AB(torch.nn.Module):
    def __init__(self, hidden=3):
        super().__init__()
        self.a, self.b = torch.nn.Linear(4, hidden), torch.nn.Linear(hidden, 1)

    def forward(self, x):
        return self.b(torch.relu(self.a(x)))


class _BA(_AB):
    """The same parameters as _AB, registered in the other order, as a refactor might leave them."""
    def __init__(self):
        torch.nn.Module.__init__(self)
        self.b, self.a = torch.nn.Linear(3, 1), torch.nn.Linear(4, 3)


def _regression_loss(module, xb):
    x = xb.float() / 255
    return ((module(x).squeeze(1) - x.mean(1)) ** 2).mean()


def test_resume_matches_optimizer_state_by_name_when_attribute_order_changed(tmp_path):
    from repbench.config import TrainConfig
    from repbench.learners.train import train
    x = torch.randint(0, 256, (40, 4), dtype=torch.uint8)
    cfg = TrainConfig(epochs=2, batch_size=10, lr=0.05)
    start = _AB()
    full, first, reordered = _AB(), _AB(), _BA()
    for m in (full, first, reordered):
        m.load_state_dict(start.state_dict())
    train(full, _regression_loss, x, cfg=cfg, seed=0, progress=False)
    train(first, _regression_loss, x, cfg=TrainConfig(epochs=1, batch_size=10, lr=0.05), seed=0,
          checkpoint=tmp_path / "ck.pt", progress=False)
    train(reordered, _regression_loss, x, cfg=cfg, seed=0, checkpoint=tmp_path / "ck.pt", resume=True,
          progress=False)
    assert [n for n, _ in reordered.named_parameters()][0] == "b.weight"  # the order really differs
    for name, p in full.named_parameters():
        assert torch.equal(p, reordered.get_parameter(name)), name


def test_optimizer_state_of_another_shape_is_a_clear_error(tmp_path):
    from repbench.config import TrainConfig
    from repbench.learners.train import optimizer_state_by_name, train
    x = torch.randint(0, 256, (20, 4), dtype=torch.uint8)
    small = _AB()
    train(small, _regression_loss, x, cfg=TrainConfig(epochs=1, batch_size=10), seed=0,
          checkpoint=tmp_path / "ck.pt", progress=False)
    state = load_checkpoint(tmp_path / "ck.pt")
    with pytest.raises(RepbenchError, match="optimizer state of 'a.weight' does not match its shape"):
        optimizer_state_by_name(_AB(hidden=5), state["model"], state["optimizer"], tmp_path / "ck.pt")
    with pytest.raises(RepbenchError, match="other parameters than this model's"):
        optimizer_state_by_name(torch.nn.Linear(4, 1), state["model"], state["optimizer"], tmp_path / "ck.pt")


@pytest.mark.parametrize("content", ["truncated", "garbage"])
def test_a_corrupt_checkpoint_error_ends_on_a_whole_sentence_or_word(tmp_path, content):
    import re
    from repbench.learners import load_checkpoint
    path = tmp_path / "checkpoint.pt"
    torch.save({"weights": torch.zeros(1000)}, path)
    path.write_bytes(path.read_bytes()[:300] if content == "truncated" else b"\x80\x02garbage" * 20)
    with pytest.raises(RepbenchError, match="is corrupt or not a repbench checkpoint") as err:
        load_checkpoint(path)
    why = re.search(r"\(\w+: (.*)\)$", str(err.value)).group(1)
    assert why.endswith((".", " …")) and "weights_only` set to `False`" not in why, why


def test_no_step_after_a_non_finite_loss_is_applied(synthetic, tmp_path):
    # The loss is checked on the device and read back every few steps; the steps between a non-finite loss
    # and that read are skipped, so the weights are those before it, as when the loop stopped right there.
    x = synthetic.train_x[:200]

    def failing_at_call_6(learner, failure):
        real_loss, calls = learner.loss, {"n": 0}

        def loss(module, xb):
            calls["n"] += 1
            if calls["n"] == 6 and failure == "interrupt":
                raise KeyboardInterrupt
            out = real_loss(module, xb)
            return out * float("inf") if calls["n"] == 6 else out
        learner.loss = loss
        return learner

    stopped = failing_at_call_6(tiny("vae", **OPTS), "interrupt")
    with pytest.raises(KeyboardInterrupt):
        stopped.fit(x, progress=False)
    guarded = failing_at_call_6(tiny("vae", **OPTS), "inf")
    with pytest.raises(NonFiniteLoss, match=r"non-finite loss \(inf\) at epoch 2, step 1;"):
        guarded.fit(x, checkpoint=tmp_path / "c.pt", progress=False)
    theirs = dict(stopped.module.named_parameters())
    assert all(torch.equal(p, theirs[n]) for n, p in guarded.module.named_parameters())
    assert load_checkpoint(tmp_path / "c.pt")["epoch"] == 1


def test_an_epoch_reads_the_loss_back_once_per_logging_interval(monkeypatch):
    from repbench.learners import train
    from repbench.config import TrainConfig
    module, x = torch.nn.Linear(4, 1), torch.randn(400, 4, generator=torch.Generator().manual_seed(0))
    opt = train.make_optimizer(module, 0.0, torch.device("cpu"))  # lr 0: the epoch's mean loss is known
    reads = []
    for name in ("item", "tolist", "__bool__", "__float__"):  # every way a tensor's value reaches the host
        real = getattr(torch.Tensor, name)
        monkeypatch.setattr(torch.Tensor, name, lambda self, *a, _real=real, _name=name:
                            reads.append(_name) or _real(self, *a))
    mean = train.one_epoch(module, opt, lambda m, xb: m(xb).pow(2).mean(), x, TrainConfig(epochs=1, batch_size=10),
                           seed=0, epoch=1, checkpoint=None, progress=False, augment=None)
    monkeypatch.undo()
    assert len(reads) == 40 // train.LOG_EVERY + 1  # 40 steps: not two reads a step
    with torch.no_grad():
        assert mean == pytest.approx(float(module(x).pow(2).mean()), rel=1e-6)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: the GPU training loop is not timed here")
def test_a_gpu_epoch_waits_for_the_device_once_per_logging_interval(synthetic):
    from repbench.learners import train
    from repbench.config import TrainConfig
    learner = tiny("lpvae", h=1, device="cuda")
    x = synthetic.train_x[:400].cuda()
    opt = train.make_optimizer(learner.module, 1e-3, torch.device("cuda"))
    cfg = TrainConfig(epochs=1, batch_size=10)
    train.one_epoch(learner.module, opt, learner.loss, x, cfg, 0, 1, None, False, None)  # warm: kernels, allocator
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with pytest.warns(UserWarning) as synced:
            train.one_epoch(learner.module, opt, learner.loss, x, cfg, 0, 2, None, False, None)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    waits = [w for w in synced if "synchroniz" in str(w.message)]
    assert len(waits) <= 40 // train.LOG_EVERY + 3  # the reads, the batch order's copy: not one a step
