"""Learning-rate schedules. Upstream: get_current_rate / get_current_batch (src/network.c).

`current_rate(opts, batch_num)` is a pure function of the parsed `[net]` options and the
batch number, reproducing upstream's arithmetic including where it rounds to C `float`
(float32) and where it works in `double`, so that the value formatted with "%f" matches the
rate upstream prints.

Which batch number upstream uses
--------------------------------
Upstream's ``get_current_batch(net)`` is ``seen / (net->batch * net->subdivisions)`` in
integer arithmetic, where ``net->batch`` is the mini-batch (cfg ``batch / subdivisions``,
times ``time_steps``) and ``seen`` counts images.  In one training iteration
(``train_network``) every one of the ``subdivisions`` forward/backward passes first adds
``net->batch`` to ``seen``, and only then is ``update_network`` called.  So during
iteration ``i`` (1-based, as ``train_detector`` prints it: ``cur_iteration`` is incremented
before the update) both

* the rate used for the weight update of iteration ``i``, and
* the rate printed in the per-iteration line
  ``" %d: %f, %f avg loss, %f rate, ..."`` of ``train_detector`` (src/detector.c),
  which calls ``get_current_rate(net)`` right after ``train_network`` returns,

are computed from ``batch_num == i``, not ``i - 1``.  The very first update therefore
already uses ``batch_num = 1`` (for a burn-in that is ``lr * (1/burn_in)**power``, never 0).
`printed_rate(opts, iteration)` returns exactly that value.

Caveats of that equivalence (single-device training; none of them change `current_rate`):

* ``train_detector`` multiplies ``learning_rate`` by the number of GPUs before training, and
  the multi-GPU path (``train_networks``/``sync_nets``) advances ``cur_iteration`` by the GPU
  count per call and rewrites ``seen``; `printed_rate` models one device only.
* With ``dynamic_minibatch=1`` upstream changes ``net->batch`` on random resizes, so
  ``seen / (batch * subdivisions)`` can differ from the iteration count while resized.
* After loading weights, ``cur_iteration`` is set from the stored ``seen``, so a resumed run
  keeps counting from the stored batch number (``-clear`` resets both to 0).

Burn-in
-------
Upstream tests ``batch_num < net->burn_in`` *before* the policy switch, so burn-in applies to
every policy (constant, step, steps, exp, poly, random, sigmoid, sgdr):
``rate = learning_rate * pow((float)batch_num / burn_in, power)``.  ``power`` (default 4) is
the same key that ``poly`` and ``random`` use as their exponent.  At ``batch_num == burn_in``
the policy itself takes over (the comparison is strict).

Random policy
-------------
Upstream draws ``rand_uniform(0, 1)`` i.e. ``(float)rand() / RAND_MAX`` from the C library's
global ``rand()`` state (a value in [0, 1], both ends included).  Here the draw comes from the
numpy ``Generator`` passed as ``rng`` (``rng.random()``, in [0, 1)), so the sequence of random
rates cannot match upstream's draw for draw; only the distribution of the draw (uniform) and
the formula ``learning_rate * u**power`` are the same.  Without ``rng`` a fresh unseeded
generator is used.  As upstream, no draw happens during burn-in.
"""
from __future__ import annotations

import numpy as np

from darknet_py.cfg.options import NetOptions

__all__ = ["current_batch", "current_rate", "printed_rate", "format_rate"]

_f32 = np.float32
# upstream's sgdr uses this truncated literal, not M_PI
_SGDR_PI = 3.14159265


def _pow(x: float, y: float) -> float:
    """C ``pow(double, double)``: NaN/inf instead of Python exceptions."""
    with np.errstate(all="ignore"):
        return float(np.power(np.float64(x), np.float64(y)))


def _exp(x: float) -> float:
    """C ``exp(double)``: overflows to inf instead of raising."""
    with np.errstate(all="ignore"):
        return float(np.exp(np.float64(x)))


def _c_int_div(a: int, b: int) -> int:
    """C integer division (truncates toward zero)."""
    if b == 0:
        raise ZeroDivisionError("integer division by zero (upstream would crash with SIGFPE)")
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def _to_float(x: float) -> float:
    """Round a double to C float, the type get_current_rate returns."""
    with np.errstate(all="ignore"):
        return float(_f32(x))


def current_batch(opts: NetOptions, seen: int) -> int:
    """Upstream get_current_batch: images seen divided by images per iteration."""
    per_iteration = opts.mini_batch * opts.subdivisions
    if per_iteration <= 0:
        raise ValueError(
            f"batch ({opts.batch}) must be >= subdivisions ({opts.subdivisions}): "
            "the mini-batch is 0 and upstream would divide by zero"
        )
    return seen // per_iteration


def current_rate(opts: NetOptions, batch_num: int, rng: np.random.Generator | None = None) -> float:
    """The learning rate upstream's get_current_rate returns at batch number `batch_num`.

    `opts.policy` is one of constant, step, steps, exp, poly, sigmoid, random, sgdr.
    The result is the C `float` value, returned as a Python float.  See the module docstring
    for burn-in, for which `batch_num` upstream uses, and for the random policy's `rng`.
    """
    b = int(batch_num)
    if b < 0:
        raise ValueError(f"batch_num must be >= 0, got {batch_num}")
    lr32 = _f32(opts.learning_rate)
    lr = float(lr32)
    with np.errstate(all="ignore"):
        if b < opts.burn_in:
            # (float)batch_num / burn_in is a float division; pow and the product are double
            ratio = _f32(b) / _f32(opts.burn_in)
            return _to_float(lr * _pow(float(ratio), float(_f32(opts.power))))

        policy = opts.policy
        if policy == "constant":
            return lr
        if policy == "step":
            # integer division batch_num / step, then pow in double
            exponent = _c_int_div(b, opts.step)
            return _to_float(lr * _pow(float(_f32(opts.scale)), float(exponent)))
        if policy == "steps":
            # float running product; steps may be negative or unsorted: the scan stops at the
            # first step strictly greater than batch_num.  seq_scales only affect the
            # sequential-subdivision count, never the rate.
            rate = lr32
            for step, scale in zip(opts.steps, opts.scales):
                if step > b:
                    return float(rate)
                rate = _f32(rate * _f32(scale))
            return float(rate)
        if policy == "exp":
            return _to_float(lr * _pow(float(_f32(opts.gamma)), float(b)))
        if policy == "poly":
            # 1 - (float)batch_num / max_batches is float arithmetic; a batch past
            # max_batches gives a negative base (NaN for non-integer power, as in C)
            base = _f32(1.0) - _f32(b) / _f32(opts.max_batches)
            return _to_float(lr * _pow(float(base), float(_f32(opts.power))))
        if policy == "random":
            if rng is None:
                rng = np.random.default_rng()
            u = _f32(rng.random())
            return _to_float(lr * _pow(float(u), float(_f32(opts.power))))
        if policy == "sigmoid":
            # gamma * (batch_num - step) is a float product; exp and the rest are double
            z = _f32(opts.gamma) * _f32(b - opts.step)
            return _to_float(lr * (1.0 / (1.0 + _exp(float(z)))))
        if policy == "sgdr":
            return _sgdr(opts, b, lr32)
    raise ValueError(f"unknown learning-rate policy {opts.policy!r}")


def _sgdr(opts: NetOptions, b: int, lr32: np.float32) -> float:
    # cycles of sgdr_cycle, sgdr_cycle*mult, sgdr_cycle*mult^2, ... batches (int arithmetic);
    # a batch exactly at the end of a cycle still belongs to it (strict '<' in the loop),
    # so the rate reaches learning_rate_min there and restarts at the next batch.
    start = 0
    cycle = int(opts.sgdr_cycle)
    mult = int(opts.sgdr_mult)
    while start + cycle < b:
        if cycle <= 0:
            raise ValueError(
                f"sgdr cycle length became {cycle} (sgdr_cycle={opts.sgdr_cycle}, "
                f"sgdr_mult={mult}); upstream would loop forever"
            )
        start += cycle
        cycle *= mult
    lr_min32 = _f32(opts.learning_rate_min)
    span = float(lr32 - lr_min32)  # float subtraction, promoted to double afterwards
    with np.errstate(all="ignore"):
        # (float)(batch_num - start) * 3.14159265 / cycle, in double (NaN if cycle is 0)
        angle = np.float64(float(_f32(b - start))) * _SGDR_PI / np.float64(cycle)
        rate = float(lr_min32) + 0.5 * span * (1.0 + float(np.cos(angle)))
    return _to_float(rate)


def printed_rate(opts: NetOptions, iteration: int, rng: np.random.Generator | None = None) -> float:
    """The rate upstream's train_detector prints on the line of iteration `iteration`.

    `iteration` is 1-based as printed.  The print happens after that iteration's
    train_network, when seen == iteration * batch * subdivisions, so the rate is
    current_rate(opts, iteration) (single device, no dynamic_minibatch; see module docstring).
    Upstream formats it with "%f" (see `format_rate`).
    """
    if iteration < 1:
        raise ValueError(f"iteration is 1-based, got {iteration}")
    seen = iteration * opts.mini_batch * opts.subdivisions
    return current_rate(opts, current_batch(opts, seen), rng=rng)


def format_rate(rate: float) -> str:
    """Format a rate as upstream's printf("%f") does (6 decimals, float promoted to double)."""
    return f"{rate:f}"
