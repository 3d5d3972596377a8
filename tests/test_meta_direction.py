"""rfbench direction: which way P's meta-gradient (and the leak) moves the mean loss weights."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

torch = pytest.importorskip("torch")

from refusion.benchmarks.cli import main as rfbench  # noqa: E402
from refusion.benchmarks.meta_direction import LEAK, directions, probe_means, source_a_means  # noqa: E402
from refusion.train.validation import selection_means  # noqa: E402
from refusion.train.losses import fusion_loss  # noqa: E402
from refusion.train.meta import MetaConfig, meta_gradient  # noqa: E402

from .test_train_loop import make_dataset  # noqa: E402
from .test_train_meta import batch, tiny_nets  # noqa: E402

pytestmark = pytest.mark.usefixtures("torch_one_thread")
BUNDLED = Path(__file__).resolve().parents[1] / "train" / "models" / "ivif.pt"


def _batches(n: int = 2, dtype=torch.float64):
    out = []
    for k in range(n):
        (tx, tt), (sx, st) = batch(10 + 2 * k, dtype=dtype), batch(11 + 2 * k, dtype=dtype)
        out.append((tx, tt, sx, st))
    return out


def test_source_a_means_follow_the_source_into_the_swapped_rows():
    """The second half of a batch holds (b, a): source a's weight is then channel 1's, not channel 0's."""
    a, b = torch.ones(2, 1, 4, 4), torch.zeros(2, 1, 4, 4)
    x = torch.cat([torch.cat([a, b], 1), torch.cat([b, a], 1)])  # 2 pairs + the same pairs swapped

    def brighter_wins(x):  # weights the brighter channel 0.9, the other 0.1
        w = torch.where(x > 0.5, 0.9, 0.1)
        return w, 1 - w

    w_a, v_a = source_a_means(brighter_wins, x)
    assert float(w_a) == pytest.approx(0.9)  # channel 0 throughout would give 0.5
    assert float(v_a) == pytest.approx(0.1)


class _Softmax(torch.nn.Module):
    """A P whose weights favour the brighter source: w = softmax(k x) over the two channels."""

    def __init__(self):
        super().__init__()
        self.k = torch.nn.Parameter(torch.tensor([3.0, -2.0], dtype=torch.float64))

    def forward(self, x):
        return torch.softmax(self.k[0] * x, dim=1), torch.softmax(self.k[1] * x, dim=1)


def test_the_mean_weights_follow_source_a_in_every_batch_of_several():
    """Each batch's second half is swapped; concatenating batches must not move that boundary."""
    f, _, r = tiny_nets(dtype=torch.float64)
    pairs = []
    for k in range(3):
        g = torch.Generator().manual_seed(k)
        a = 0.7 + 0.3 * torch.rand(2, 1, 16, 16, generator=g, dtype=torch.float64)
        b = 0.2 * torch.rand(2, 1, 16, 16, generator=g, dtype=torch.float64)
        ab = torch.cat([a, b], 1)
        x, target = torch.cat([ab, ab.flip(1)]), torch.cat([ab, ab])
        pairs.append((x, target, x, target))
    p = _Softmax()
    _, _, (w_a, v_a, w_max, v_max) = directions(f, p, r, pairs, [0.1], with_leak=False)
    a = torch.cat([q[1][:, 0] for q in pairs])
    b = torch.cat([q[1][:, 1] for q in pairs])
    assert w_a == pytest.approx(float(torch.sigmoid(3.0 * (a - b)).mean()), rel=1e-9)  # > 0.5: a is brighter
    assert v_a == pytest.approx(float(torch.sigmoid(-2.0 * (a - b)).mean()), rel=1e-9)
    assert w_max == pytest.approx(w_a, rel=1e-9)  # a is the brighter source at every pixel


def test_selection_means_weigh_the_brighter_and_the_sharper_source_per_pixel():
    """w_max: the w of whichever source is brighter at that pixel; v_max: the v of the one with the larger gradient."""
    g = torch.Generator().manual_seed(3)
    x = torch.rand(4, 2, 12, 12, generator=g, dtype=torch.float64)
    x[:, 1, :, 6:] = 0.5  # source b flat on the right half: there a has the larger gradient
    w = torch.rand(4, 2, 12, 12, generator=g, dtype=torch.float64).softmax(1)
    v = torch.rand(4, 2, 12, 12, generator=g, dtype=torch.float64).softmax(1)
    w_max, v_max = selection_means(x, w, v)
    expected_w = [max(range(2), key=lambda c: x[n, c, i, j]) for n in range(4) for i in range(12) for j in range(12)]
    flat_w = [float(w[n, c, i, j]) for (n, i, j), c in
              zip([(n, i, j) for n in range(4) for i in range(12) for j in range(12)], expected_w)]
    assert float(w_max) == pytest.approx(sum(flat_w) / len(flat_w), rel=1e-12)
    from refusion.train.networks import sobel_magnitude
    grad = sobel_magnitude(x)
    assert bool((grad[:, 0, 1:-1, 7:-1] > grad[:, 1, 1:-1, 7:-1]).all())  # the flat half is b's
    sharper = torch.where(grad[:, 0] >= grad[:, 1], v[:, 0], v[:, 1])
    assert float(v_max) == pytest.approx(float(sharper.mean()), rel=1e-12)
    assert float(v_max) != pytest.approx(float(torch.where(grad[:, 0] < grad[:, 1], v[:, 0], v[:, 1]).mean()))
    # swapping the channels of x, w and v together changes nothing: the comparison is per pixel, not per channel
    w_sw, v_sw = selection_means(x.flip(1), w.flip(1), v.flip(1))
    assert float(w_sw) == pytest.approx(float(w_max), rel=1e-12)


def test_rows_give_the_first_order_change_of_mean_w_and_v_along_each_step_rule():
    f, p, r = tiny_nets(dtype=torch.float64)
    pairs = _batches()
    rows, cosines, _ = directions(f, p, r, pairs, [0.05, 0.5])
    assert [row.label for row in rows] == ["0.05", "0.5", LEAK]
    params = list(p.parameters())
    for row, lr in zip(rows[:2], (0.05, 0.5)):
        g = [torch.zeros_like(q) for q in params]
        for tx, tt, sx, st in pairs:  # g is summed over the batch pairs
            for acc, q in zip(g, meta_gradient(f, p, r, (tx, tt), (sx, st), lr, MetaConfig()).proposal_grads):
                acc += q
        norm = torch.sqrt(sum((q * q).sum() for q in g))
        assert row.grad_norm == pytest.approx(float(norm), rel=1e-9)
        eps = 1e-8
        for step, expected in (([-q / norm for q in g], (row.dw_sgd, row.dv_sgd, row.dwmax_sgd, row.dvmax_sgd)),
                               ([-torch.sign(q) for q in g],
                                (row.dw_sign, row.dv_sign, row.dwmax_sign, row.dvmax_sign))):
            means = []
            for sign in (1, -2, 1):  # to +eps, to -eps, back (central differences)
                with torch.no_grad():
                    for q, d in zip(params, step):
                        q += sign * eps * d
                per_batch = [probe_means(p, q[0]) for q in pairs]
                means.append([sum(float(m[i].detach()) for m in per_batch) / len(pairs) for i in range(4)])
            up, down = means[0], means[1]
            for i, d in enumerate(expected):  # w_a, v_a, w_max, v_max
                assert (up[i] - down[i]) / (2 * eps) == pytest.approx(d, rel=1e-4, abs=1e-9)
    assert set(cosines) == {("0.05", "0.5"), ("0.05", LEAK), ("0.5", LEAK)}


def test_the_leak_row_is_dlf_dp_on_the_meta_train_batches_alone():
    f, p, r = tiny_nets(dtype=torch.float64)
    pairs = _batches()
    rows, _, _ = directions(f, p, r, pairs, [0.05])
    params = list(p.parameters())
    leak = [torch.zeros_like(q) for q in params]
    for tx, _, _, _ in pairs:
        w, v = p(tx)
        gs = torch.autograd.grad(fusion_loss(f(tx).detach(), tx, w, v).total, params, allow_unused=True)
        for acc, g in zip(leak, gs):
            if g is not None:
                acc += g
    norm = float(torch.sqrt(sum((q * q).sum() for q in leak)))
    assert rows[-1].label == LEAK
    assert rows[-1].grad_norm == pytest.approx(norm, rel=1e-6)
    assert rows[-1].grad_norm > 100 * rows[0].grad_norm  # the leak dwarfs the meta term (METHOD.md)


def test_cli_writes_a_table_for_a_checkpoint_and_for_fresh_networks(tmp_path: Path):
    data = make_dataset(tmp_path / "data", n_train=6)  # the long preset holds 4 training pairs out
    out = tmp_path / "res"
    for source in ([str(BUNDLED)], ["--init"]):
        res = CliRunner().invoke(rfbench, ["direction", *source, "--data", str(data), "--inner-lr", "1e-3,1e-1",
                                           "--crop", "16", "--batches", "1", "--out", str(out)])
        assert res.exit_code == 0, res.output
    reports = sorted(out.glob("direction_ivif_*.json"))
    assert [p.name for p in reports] == ["direction_ivif_init.json", "direction_ivif_ivif.json"]
    for path in reports:
        report = json.loads(path.read_text())
        assert [row["label"] for row in report["rows"]] == ["0.001", "0.1", LEAK]
        assert all(row["grad_norm"] > 0 for row in report["rows"])
        assert "| inner lr |" in path.with_suffix(".md").read_text()


@pytest.mark.parametrize("args, message", [
    ([], "give a CHECKPOINT or --init"),
    (["--init", "--inner-lr", "fast"], "comma-separated"),
    (["--init", "--inner-lr", "0"], "positive"),
])
def test_cli_refuses_bad_arguments_with_one_line(tmp_path: Path, args, message):
    data = make_dataset(tmp_path / "data")
    res = CliRunner().invoke(rfbench, ["direction", *args, "--data", str(data), "--out", str(tmp_path / "o")])
    assert res.exit_code != 0
    assert message in res.output
    assert "Traceback" not in res.output


def test_a_checkpoint_without_p_is_refused_clearly(tmp_path: Path):
    data = make_dataset(tmp_path / "data")
    ckpt = tmp_path / "f_only.pt"
    torch.save({"fusion": {}}, ckpt)
    res = CliRunner().invoke(rfbench, ["direction", str(ckpt), "--data", str(data), "--out", str(tmp_path / "o")])
    assert res.exit_code != 0
    assert "Traceback" not in res.output
    assert f"{ckpt} is not a refusion checkpoint" in res.output
