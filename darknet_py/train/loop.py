"""Upstream: train_detector (src/detector.c), train_network / train_network_datum /
backward_network (src/network.c).

The plain training loop, top to bottom: load a batch, run `subdivisions` mini-batches
(forward, yolo deltas, backward: gradients accumulate), apply upstream's update, print
upstream's lines, save weights. The yolo delta reaches the layer before the yolo layer as
upstream passes it: the surrogate loss -sum(delta * yolo_input) has exactly -delta as its
gradient there (the logistic inside the yolo layer is not differentiated).
"""
from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..network import Network, build_network
from ..yolo_delta import YoloStats, yolo_delta
from .lr_policy import current_rate

DETECTION_TYPES = ("yolo", "Gaussian_yolo", "region")


def basecfg(cfgfile: str) -> str:
    """Upstream's basecfg: the file name up to its first '.'."""
    name = str(cfgfile).replace("\\", "/").rsplit("/", 1)[-1]
    return name.split(".", 1)[0]


@dataclass
class MiniBatchResult:
    cost: float  # upstream's get_network_cost: mean over the layers that have a cost
    stats: dict = field(default_factory=dict)  # layer index -> YoloStats


def forward_backward(net: Network, x: torch.Tensor, truth: torch.Tensor, err=sys.stderr) -> MiniBatchResult:
    """One mini-batch: upstream's train_network_datum without the update."""
    outputs, inputs = net.forward_train(x)
    netw, neth = net.options.width, net.options.height
    surrogate = None
    result = MiniBatchResult(0.0)
    costs = []
    for layer in net.layers:
        if layer.type_name != "yolo":
            continue
        delta, stats = yolo_delta(layer, outputs[layer.index], truth, netw, neth)
        result.stats[layer.index] = stats
        costs.append(stats.cost)
        print(stats.line(layer, x.shape[0]), file=err)
        inp = inputs[layer.index]
        if inp.requires_grad:
            term = -(delta.to(inp.dtype) * inp.reshape(delta.shape)).sum()
            surrogate = term if surrogate is None else surrogate + term
    if surrogate is not None:
        surrogate.backward()
    result.cost = sum(costs) / len(costs) if costs else 0.0
    return result


class Trainer:
    """Holds the network, the update rule and the counters of one training run."""

    def __init__(self, net: Network, device: torch.device | str = "cpu", ngpus: int = 1):
        from .sgd import UpstreamSGD

        self.net = net.to(device)
        self.device = torch.device(device)
        self.ngpus = ngpus
        self.sgd = UpstreamSGD(net)
        self.total_bbox = 0
        self.rewritten_bbox = 0

    @property
    def iteration(self) -> int:
        o = self.net.options
        return self.net.seen // (o.mini_batch * o.subdivisions)

    def train_batch(self, x: np.ndarray, truth: np.ndarray, err=sys.stderr) -> float:
        """upstream train_network: the iteration's mini-batches, then the update. Returns the loss."""
        net, o = self.net, self.net.options
        net.train()
        mb = o.mini_batch
        n = x.shape[0] // mb
        total = 0.0
        self.sgd.zero_grad()
        for i in range(n):
            xs = torch.from_numpy(np.ascontiguousarray(x[i * mb:(i + 1) * mb])).to(self.device)
            ts = torch.from_numpy(np.ascontiguousarray(truth[i * mb:(i + 1) * mb])).to(self.device)
            net.seen += mb
            net.current_subdivision = i
            res = forward_backward(net, xs, ts, err)
            for st in res.stats.values():
                self.total_bbox += st.total_bbox
                self.rewritten_bbox += st.rewritten_bbox
            if self.total_bbox > 0:
                print(f" total_bbox = {self.total_bbox}, rewritten_bbox = "
                      f"{100 * self.rewritten_bbox / self.total_bbox:f} % ", file=err)
            total += res.cost
        rate = current_rate(o, self.iteration) * self.ngpus
        self.sgd.step(rate, self.iteration)
        return total / (n * mb)


def train_detector(datacfg: str, cfgfile: str, weightfile: str | None, *, clear: bool = False,
                   dont_show: bool = True, calc_map: bool = False, thresh: float = 0.25, iou_thresh: float = 0.5,
                   show_imgs: bool = False, chart: str | None = None, map_epochs: int = 4, gpus: list[int] | None = None,
                   out=sys.stdout, err=sys.stderr) -> int:
    from ..data import loader_from_net, read_list, read_obj_data

    data = read_obj_data(datacfg)
    paths = read_list(data.train)
    backup = data.backup
    base = basecfg(cfgfile)
    print(base, file=out)
    device = _device(gpus)
    net = build_network(cfgfile, train=True)
    if weightfile:
        net.load_weights(weightfile)
    if clear:
        net.seen = 0
    o = net.options
    imgs = o.batch * o.subdivisions // o.subdivisions * 1  # images per iteration: mini_batch*subdivisions
    imgs = o.mini_batch * o.subdivisions
    if imgs == 1:
        raise ValueError(f"{cfgfile}: batch=1 cannot train: set batch=64 subdivisions=64 (or similar)")
    if imgs < 8:
        print(f"\n Warning: You set batch={imgs} lower than 64! It is recommended to set batch=64 subdivision=64 ",
              file=out)
    save_every = data.section.int("saveweights", 1000 if o.max_batches < 10000 else 10000)
    save_last = data.section.int("savelast", 100)
    print(f"Weights are saved after: {save_every} iterations. Last weights (*_last.weight) are stored every "
          f"{save_last} iterations. ", file=out)
    print(f"Learning Rate: {o.learning_rate:g}, Momentum: {o.momentum:g}, Decay: {o.decay:g}", file=out)
    det = net.layers[-1]
    for layer in net.layers:
        if layer.type_name in DETECTION_TYPES:
            det = layer
            print(f" Detection layer: {layer.index} - type = {layer.type_id} ", file=out)
    loader = loader_from_net(net, paths, data.classes, show_imgs=show_imgs)
    trainer = Trainer(net, device)
    Path(backup).mkdir(parents=True, exist_ok=True)
    avg_loss = -1.0
    avg_time = -1.0
    iter_save = iter_save_last = trainer.iteration
    try:
        while trainer.iteration < o.max_batches:
            t0 = time.time()
            x, truth = loader.load(imgs, o.width, o.height)
            load_time = time.time() - t0
            print(f"Loaded: {load_time:f} seconds" +
                  (" - performance bottleneck on CPU or Disk HDD/SSD" if load_time > 0.1 and avg_loss > 0 else ""),
                  file=out)
            t1 = time.time()
            loss = trainer.train_batch(x, truth, err)
            if avg_loss < 0 or avg_loss != avg_loss:
                avg_loss = loss
            avg_loss = avg_loss * 0.9 + loss * 0.1
            it = trainer.iteration
            if not math.isfinite(loss):
                print(f"\n NaN/inf loss at iteration {it}", file=err)
            print(f"{it}/{o.max_batches}: loss={loss:0.1f} hours left={avg_time:0.1f}", file=out)
            print(f" {it}: {loss:f}, {avg_loss:f} avg loss, {current_rate(o, it):f} rate, "
                  f"{time.time() - t1:f} seconds, {it * imgs} images, {avg_time:f} hours left", file=out, flush=True)
            remaining = (o.max_batches - it) * (time.time() - t1 + load_time) / 3600
            avg_time = remaining if avg_time < 0 else 0.01 * remaining + 0.99 * avg_time
            if it >= iter_save + save_every or it % save_every == 0:
                iter_save = it
                net.save_weights(f"{backup}/{base}_{it}.weights")
            if save_every > save_last and (it >= iter_save_last + save_last or (it % save_last == 0 and it > 1)):
                iter_save_last = it
                net.save_weights(f"{backup}/{base}_last.weights")
    except KeyboardInterrupt:
        net.save_weights(f"{backup}/{base}_last.weights")
        print(f"\nInterrupted: saved {backup}/{base}_last.weights", file=err)
        return 130
    finally:
        close = getattr(loader, "close", None)
        if close:
            close()
    final = f"{backup}/{base}_final.weights"
    net.save_weights(final)
    print(f"Saving weights to {final}", file=err)
    print("If you want to train from the beginning, then use flag in the end of training command: -clear ", file=out)
    return 0


def _device(gpus) -> torch.device:
    if gpus and torch.cuda.is_available():
        return torch.device(f"cuda:{gpus[0]}")
    return torch.device("cpu")
