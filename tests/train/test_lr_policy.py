"""Learning-rate policies against the rates upstream printed (tests/data/lr_policies.json)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from darknet_py.cfg import parse_cfg_text
from darknet_py.cfg.options import NetOptions
from darknet_py.train.lr_policy import current_batch, current_rate, format_rate, printed_rate

CASES = json.loads((Path(__file__).resolve().parents[1] / "data" / "lr_policies.json").read_text())


def make_opts(net_lines, learning_rate=0.01, batch=2, subdivisions=1, max_batches=40) -> NetOptions:
    text = "\n".join(
        [
            "[net]",
            f"learning_rate={learning_rate}",
            f"batch={batch}",
            f"subdivisions={subdivisions}",
            f"max_batches={max_batches}",
            "width=32",
            "height=32",
            "channels=3",
            *net_lines,
        ]
    )
    return NetOptions.from_section(parse_cfg_text(text)[0])


def case_opts(case) -> NetOptions:
    return make_opts(
        case["net_lines"],
        learning_rate=case["learning_rate"],
        batch=case["batch"],
        subdivisions=case["subdivisions"],
        max_batches=case["max_batches"],
    )


@pytest.mark.parametrize("name", sorted(CASES))
def test_printed_rates_match_upstream(name):
    case = CASES[name]
    opts = case_opts(case)
    expected = case["rate_printed_at_iterations_1_to_N"]
    assert expected, name
    for iteration, want in enumerate(expected, 1):
        got = printed_rate(opts, iteration)
        assert got == pytest.approx(want, abs=2e-6), (name, iteration, got, want)
        # upstream prints "%f": the fixture holds that text parsed as a number
        assert float(format_rate(got)) == pytest.approx(want, abs=1e-12), (name, iteration, got, want)


@pytest.mark.parametrize("name", sorted(CASES))
def test_printed_rate_uses_batch_num_equal_to_iteration(name):
    opts = case_opts(CASES[name])
    for iteration in range(1, 41):
        assert printed_rate(opts, iteration) == current_rate(opts, iteration)


def test_current_batch_is_seen_over_images_per_iteration():
    opts = make_opts(["policy=constant"], batch=64, subdivisions=16)
    assert opts.mini_batch == 4
    assert current_batch(opts, 0) == 0
    assert current_batch(opts, 63) == 0
    assert current_batch(opts, 64) == 1
    assert current_batch(opts, 64 * 7 + 5) == 7


def test_constant():
    opts = make_opts(["policy=constant"])
    for b in (0, 1, 17, 10_000):
        assert current_rate(opts, b) == pytest.approx(0.01, rel=1e-7)


def test_step_hand_worked():
    # lr=0.1, step=3, scale=0.1: rate = 0.1 * 0.1**(b // 3)
    #   b=0..2 -> 0.1, b=3..5 -> 0.01, b=6 -> 0.001, b=10 -> 0.1 * 0.1**3 = 1e-4
    opts = make_opts(["policy=step", "step=3", "scale=0.1"], learning_rate=0.1)
    for b, want in [(0, 0.1), (2, 0.1), (3, 0.01), (5, 0.01), (6, 0.001), (10, 1e-4)]:
        assert current_rate(opts, b) == pytest.approx(want, rel=1e-6), b


def test_exp_hand_worked():
    # lr=0.01, gamma=0.9: rate = 0.01 * 0.9**b
    #   b=0 -> 0.01, b=1 -> 0.009, b=2 -> 0.0081, b=10 -> 0.01 * 0.3486784401 = 0.003486784
    opts = make_opts(["policy=exp", "gamma=0.9"])
    for b, want in [(0, 0.01), (1, 0.009), (2, 0.0081), (10, 0.003486784401)]:
        assert current_rate(opts, b) == pytest.approx(want, rel=1e-6), b


def test_sigmoid_hand_worked():
    # lr=0.01, gamma=0.5, step=10: rate = 0.01 / (1 + exp(0.5 * (b - 10)))
    #   b=10 -> 0.01 / 2 = 0.005
    #   b=12 -> 0.01 / (1 + e) = 0.01 / 3.718281828 = 0.0026894142
    #   b=8  -> 0.01 / (1 + 1/e) = 0.01 / 1.367879441 = 0.0073105858
    #   b=0  -> 0.01 / (1 + e^-5) = 0.01 / 1.006737947 = 0.0099330715
    opts = make_opts(["policy=sigmoid", "gamma=0.5", "step=10"])
    for b, want in [(10, 0.005), (12, 0.0026894142), (8, 0.0073105858), (0, 0.0099330715)]:
        assert current_rate(opts, b) == pytest.approx(want, rel=1e-6), b
    # far past the step exp overflows in C to inf and the rate is 0, not an exception
    assert current_rate(opts, 10_000) == 0.0


def test_poly_hand_worked():
    # lr=0.01, power=2, max_batches=40, no burn-in: rate = 0.01 * (1 - b/40)**2
    #   b=0 -> 0.01, b=20 -> 0.01 * 0.25 = 0.0025, b=40 -> 0
    opts = make_opts(["policy=poly", "power=2"])
    for b, want in [(0, 0.01), (20, 0.0025), (40, 0.0)]:
        assert current_rate(opts, b) == pytest.approx(want, abs=1e-9), b
    # past max_batches the base is negative: with a non-integer power C's pow gives NaN
    opts = make_opts(["policy=poly", "power=1.5"])
    assert math.isnan(current_rate(opts, 50))


def test_random_range_and_rng():
    # lr=0.01, power=4: rate = 0.01 * u**4 with u uniform, so rate in [0, 0.01]
    opts = make_opts(["policy=random", "power=4"])
    rng = np.random.default_rng(123)
    rates = [current_rate(opts, 100, rng=rng) for _ in range(2000)]
    assert all(0.0 <= r <= 0.01 * (1 + 1e-7) for r in rates)
    # E[u**4] = 1/5, so the mean is about 0.002
    assert np.mean(rates) == pytest.approx(0.002, rel=0.1)
    # the same seed gives the same draws
    a = [current_rate(opts, 5, rng=np.random.default_rng(7)) for _ in range(3)]
    assert a[0] == a[1] == a[2]
    # matches the formula for the draw the generator makes
    u = np.float32(np.random.default_rng(7).random())
    assert a[0] == pytest.approx(0.01 * float(u) ** 4, rel=1e-6)
    # during burn-in no draw is made: the rate is deterministic
    opts = make_opts(["policy=random", "power=2", "burn_in=10"])
    assert current_rate(opts, 5, rng=np.random.default_rng(1)) == pytest.approx(0.01 * 0.25, rel=1e-6)


def test_burn_in_applies_to_every_policy():
    # lr=0.01, burn_in=4, power=2: b=2 -> 0.01 * (2/4)**2 = 0.0025 whatever the policy
    per_policy = {
        "constant": [],
        "step": ["step=1", "scale=0.1"],
        "steps": ["steps=1,2", "scales=.1,.1"],
        "exp": ["gamma=0.5"],
        "poly": [],
        "random": [],
        "sigmoid": ["gamma=1", "step=0"],
        "sgdr": ["sgdr_cycle=1"],
    }
    for policy, extra in per_policy.items():
        opts = make_opts([f"policy={policy}", "burn_in=4", "power=2", *extra])
        assert current_rate(opts, 2, rng=np.random.default_rng(0)) == pytest.approx(0.0025, rel=1e-6), policy
        assert current_rate(opts, 0, rng=np.random.default_rng(0)) == 0.0, policy


def test_burn_in_boundary_is_strict():
    # at b == burn_in the policy takes over: steps at 4 scales by 0.5 -> 0.005, not 0.01
    opts = make_opts(["policy=steps", "steps=4", "scales=.5", "burn_in=4", "power=2"])
    assert current_rate(opts, 3) == pytest.approx(0.01 * (3 / 4) ** 2, rel=1e-6)
    assert current_rate(opts, 4) == pytest.approx(0.005, rel=1e-6)


def test_steps_negative_and_seq_scales_do_not_affect_rate():
    # steps=-1,8 scales=.1,.5: step -1 is always passed -> 0.001 from batch 0; 0.0005 from 8
    base = ["policy=steps", "steps=-1,8", "scales=.1,.5"]
    a = make_opts(base)
    b = make_opts(base + ["seq_scales=2,4"])
    assert b.seq_scales == [2.0, 4.0]
    for n in range(0, 20):
        assert current_rate(a, n) == current_rate(b, n)
    assert current_rate(a, 0) == pytest.approx(0.001, rel=1e-6)
    assert current_rate(a, 7) == pytest.approx(0.001, rel=1e-6)
    assert current_rate(a, 8) == pytest.approx(0.0005, rel=1e-6)


def test_sgdr_cycles_hand_worked():
    # lr=0.01, lr_min=0.001, sgdr_cycle=4, sgdr_mult=2: cycles (0,4], (4,12], (12,28]
    #   rate = lr_min + 0.5*(lr - lr_min)*(1 + cos(pi * (b - start) / len))
    #   b=2  -> 0.001 + 0.0045 * (1 + cos(pi/2)) = 0.0055
    #   b=4  -> end of first cycle: cos(pi) = -1 -> 0.001
    #   b=5  -> start=4, len=8: 0.001 + 0.0045 * (1 + cos(pi/8)) = 0.001 + 0.0045*1.9238795 = 0.0096575
    #   b=12 -> 0.001; b=13 -> start=12, len=16: 0.001 + 0.0045 * (1 + cos(pi/16)) = 0.0099135
    opts = make_opts(["policy=sgdr", "sgdr_cycle=4", "sgdr_mult=2", "learning_rate_min=0.001"])
    for b, want in [(0, 0.01), (2, 0.0055), (4, 0.001), (5, 0.0096575), (12, 0.001), (13, 0.0099135)]:
        assert current_rate(opts, b) == pytest.approx(want, abs=1e-7), b
    # sgdr_cycle defaults to max_batches
    opts = make_opts(["policy=sgdr"])
    assert opts.sgdr_cycle == 40
    assert current_rate(opts, 20) == pytest.approx(0.00001 + 0.5 * (0.01 - 0.00001), rel=1e-5)


def test_sgdr_zero_cycle_raises_instead_of_hanging():
    opts = make_opts(["policy=sgdr", "sgdr_cycle=0"])
    with pytest.raises(ValueError):
        current_rate(opts, 1)


def test_format_rate_is_printf_f():
    assert format_rate(0.0001234) == "0.000123"
    assert format_rate(0.01) == "0.010000"


def test_bad_arguments():
    opts = make_opts(["policy=constant"])
    with pytest.raises(ValueError):
        current_rate(opts, -1)
    with pytest.raises(ValueError):
        printed_rate(opts, 0)


POLICY_LINES = st.sampled_from(
    [
        ["policy=constant"],
        ["policy=step", "step=5", "scale=0.5"],
        ["policy=steps", "steps=3,9,20", "scales=.1,2,.5"],
        ["policy=exp", "gamma=0.95"],
        ["policy=poly"],
        ["policy=sigmoid", "gamma=0.3", "step=15"],
        ["policy=sgdr", "sgdr_cycle=7", "sgdr_mult=3"],
        ["policy=random"],
    ]
)


@settings(max_examples=60, deadline=None)
@given(
    lines=POLICY_LINES,
    burn_in=st.integers(min_value=0, max_value=50),
    power=st.sampled_from(["0.5", "1", "2", "4"]),
    lr=st.sampled_from(["0.001", "0.01", "0.1", "1"]),
)
def test_burn_in_monotone_and_rates_non_negative(lines, burn_in, power, lr):
    opts = make_opts([*lines, f"burn_in={burn_in}", f"power={power}"], learning_rate=lr)
    rng = np.random.default_rng(0)
    burn = [current_rate(opts, b, rng=rng) for b in range(burn_in)]
    assert all(x <= y for x, y in zip(burn, burn[1:]))
    if burn:
        assert burn[-1] <= float(np.float32(lr))
    for b in range(0, 60):  # max_batches is 40
        r = current_rate(opts, b, rng=rng)
        if opts.policy == "poly" and b > 40:
            continue  # negative base past max_batches: NaN or negative, as upstream
        assert r >= 0.0 and math.isfinite(r), (b, r)
