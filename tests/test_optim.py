"""The standalone EntropySGD optimizer's contract: closure API, param_groups, state_dict, validation."""
import copy
import math

import pytest
import torch

from worker.optim import EntropySGD


def _problem(seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Linear(4, 1)
    data = [(torch.randn(16, 4), torch.randn(16, 1)) for _ in range(50)]
    return model, data


def _closure(model, opt, batches, calls):
    def closure():
        calls.append(1)
        x, y = next(batches)
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        return loss
    return closure


def test_closure_is_called_exactly_l_times_and_t_advances():
    model, data = _problem()
    opt = EntropySGD(model.parameters(), inner_steps=7, noise=0.0)
    calls, batches = [], iter(data)
    loss = opt.step(_closure(model, opt, batches, calls))
    assert len(calls) == 7 and torch.isfinite(loss)
    assert opt.outer_steps == 1
    assert opt.gamma(opt.param_groups[0]) == pytest.approx(1e-4 * 1.001)


def test_it_trains():
    model, data = _problem()
    target = torch.nn.Linear(4, 1)
    batches = [(x, target(x).detach()) for x, _ in data * 4]
    it = iter(batches)
    opt = EntropySGD(model.parameters(), lr=1.0, inner_lr=0.1, inner_steps=5, noise=0.0)
    first = torch.nn.functional.mse_loss(model(batches[0][0]), batches[0][1]).item()
    for _ in range(30):
        opt.step(_closure(model, opt, it, []))
    last = torch.nn.functional.mse_loss(model(batches[0][0]), batches[0][1]).item()
    assert last < 0.1 * first


def test_param_groups_are_honoured():
    model, data = _problem()
    frozen_bias = model.bias.detach().clone()
    opt = EntropySGD([{"params": [model.weight]}, {"params": [model.bias], "lr": 1e-12, "inner_lr": 1e-12}],
                     inner_steps=3, noise=0.0)
    w0 = model.weight.detach().clone()
    opt.step(_closure(model, opt, iter(data), []))
    assert not torch.allclose(model.weight, w0)
    torch.testing.assert_close(model.bias.detach(), frozen_bias, atol=1e-9, rtol=0)


def test_state_dict_round_trip_continues_identically():
    model_a, data = _problem()
    opt_a = EntropySGD(model_a.parameters(), momentum=0.9, inner_momentum=0.5, inner_steps=3, noise=0.0,
                       gamma1=0.5)
    it = iter(data)
    for _ in range(2):
        opt_a.step(_closure(model_a, opt_a, it, []))
    model_b, _ = _problem(seed=1)
    model_b.load_state_dict(model_a.state_dict())
    opt_b = EntropySGD(model_b.parameters(), momentum=0.9, inner_momentum=0.5, inner_steps=3, noise=0.0,
                       gamma1=0.5)
    opt_b.load_state_dict(copy.deepcopy(opt_a.state_dict()))  # as if saved and loaded
    assert opt_b.outer_steps == 2
    rest = list(it)
    opt_a.step(_closure(model_a, opt_a, iter(rest), []))
    opt_b.step(_closure(model_b, opt_b, iter(rest), []))
    torch.testing.assert_close(model_a.weight, model_b.weight)


@pytest.mark.parametrize("kwargs,field", [
    ({"lr": -1.0}, "lr"), ({"lr": float("nan")}, "lr"), ({"inner_steps": 0}, "inner_steps"),
    ({"alpha": 0.0}, "alpha"), ({"alpha": 1.5}, "alpha"), ({"noise": -1e-4}, "noise"),
    ({"momentum": 1.0}, "momentum"), ({"nesterov": True}, "nesterov"), ({"lr_form": "paper"}, "lr_form"),
    ({"gamma0": float("inf")}, "gamma0"), ({"inner_steps": 2.5}, "inner_steps")])
def test_bad_hyperparameters_are_rejected_in_init(kwargs, field):
    model, _ = _problem()
    with pytest.raises(ValueError, match=field):
        EntropySGD(model.parameters(), **kwargs)


def test_step_without_closure_is_an_error():
    model, _ = _problem()
    with pytest.raises(ValueError, match="closure"):
        EntropySGD(model.parameters()).step(None)


# --------------------------------------------------------------------------- how people feed it
def test_batch_cycle_never_runs_dry_reshuffles_and_counts_passes():
    from torch.utils.data import DataLoader

    from worker.optim import BatchCycle

    torch.manual_seed(0)
    loader = DataLoader(list(range(10)), batch_size=5, shuffle=True)
    cycle = BatchCycle(loader)
    passes = [sorted(torch.cat([next(cycle) for _ in range(2)]).tolist()) for _ in range(3)]
    assert passes == [list(range(10))] * 3 and cycle.epochs == 3.0
    orders = {tuple(torch.cat([next(cycle) for _ in range(2)]).tolist()) for _ in range(6)}
    assert len(orders) > 1  # a shuffling loader reshuffles every pass
    with pytest.raises(ValueError, match="no batches"):
        BatchCycle([])


def test_the_readme_snippet_runs_as_written():
    """The README's "Using just the optimizer" block, executed as is: 10 effective epochs on a
    loader of 8 batches are 4 steps of L = 20, and a plain iter(loader) would have run dry."""
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split("## Using just the optimizer", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    assert scope["opt"].outer_steps == 4 and scope["batches"].epochs == 10.0
    assert math.isfinite(float(scope["loss"]))


@pytest.mark.slow
def test_the_training_loop_example_learns_fashion_mnist():
    import subprocess
    import sys
    from pathlib import Path

    from tests.installed import need_path
    from worker.data.idx import FASHION_MNIST_DIR

    need_path(FASHION_MNIST_DIR, "data")
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, str(root / "examples" / "entropy_sgd_loop.py"), "--epochs", "2",
                          "--train-subset", "2560", "--test-subset", "1000"],
                         capture_output=True, text=True, timeout=600, cwd=root)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = [line for line in out.stdout.splitlines() if line.startswith("epoch")]
    # 2,560 images of batch 128 are 20 batches a pass, and a step draws L = 20: one step a pass
    steps = [int(line.split("step")[1].split()[0]) for line in lines]
    errors = [float(line.split("test error")[1].split("%")[0]) for line in lines]
    assert steps == [1, 2] and errors[-1] < 60.0 < 90.0  # chance is 90%
