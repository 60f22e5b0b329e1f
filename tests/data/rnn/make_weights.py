"""Writes the reference weights of the recurrent cases (tests/data/rnn/README.md):

    python make_weights.py CASE.cfg SEED OUT.weights

darknet_py's own initialisation (upstream's make_connected_layer: weights sqrt(2/inputs)*U(-1, 1))
seeded with SEED, then every inner connected layer's biases 0.1*u, and with batch norm its
scales 1+0.1*u, rolling means 0.1*u and rolling variances 1+0.5*|u| (u uniform in [-1, 1)),
so that inference exercises every array. Run with the project's .venv from the repository root.
"""
import sys

import torch

import darknet_py

cfg, seed, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
net = darknet_py.build_network(cfg, batch=1)
net.initialize(seed)
gen = torch.Generator().manual_seed(seed + 1)


def u(t):
    return torch.rand(t.shape, generator=gen) * 2 - 1


with torch.no_grad():
    for m in net.modules():
        if type(m).__name__ != "Connected":
            continue
        m.biases.copy_(0.1 * u(m.biases))
        if m.bn:
            m.scales.copy_(1 + 0.1 * u(m.scales))
            m.rolling_mean.copy_(0.1 * u(m.rolling_mean))
            m.rolling_variance.copy_(1 + 0.5 * u(m.rolling_variance).abs())
net.save_weights(out)
