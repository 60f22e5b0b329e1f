"""Upstream: train_classifier (src/classifier.c).

The classifier's training loop, top to bottom, on the detector's machinery (train/loop.py):
the same network start, Trainer step (forward, the [softmax] / [cost] deltas, backward,
upstream's update), learning-rate schedule, flavors, distributed processes and Ctrl-C /
SIGTERM handling. What is the classifier's own: its data (data/classifier.py: labels from
the image paths, crop / rotate / HSV / mixup augmentation), its printed line
`N, EPOCH: loss, avg avg, rate rate, S seconds, K images, H hours left`, its saves
(NAME_N.weights every 1000 iterations, NAME_last.weights every 100, NAME_final.weights) and
-topk: the top-K accuracy of the `valid` list every 2 epochs (at least 100 iterations and
burn_in), printed and drawn on the chart.
"""
from __future__ import annotations

import sys
import time

import numpy as np
import torch

from .. import display
from ..outputs.chart import TrainChart
from ..devices import select_device
from .loop import (Trainer, _NoChart, _progress, basecfg, closing, inference_copy, save_final, saved_on_interrupt,
                   start_network)
from .faults import NanWatch, WeightsSaver, backup_problem, out_of_memory_line, stop_on_out_of_memory
from .lr_policy import current_rate

F32 = np.float32


def train_classifier(datacfg: str, cfgfile: str, weightfile: str | None, *, clear: bool = False,
                     dont_show: bool = True, calc_topk: bool = False, show_imgs: bool = False, chart: str | None = None,
                     dontuse_opencv: bool = False, gpus: list[int] | None = None, workers: int | None = None,
                     seed: int | None = None, flavor: str | None = None, out=None, err=None,
                     dist=None, device=None, mjpeg_port: int = -1) -> int:
    """`classifier train DATA CFG [WEIGHTS]`; -mjpeg_port streams the chart (chart.py). `dist`:
    a distributed.Dist when this is one of several processes (rank 0 alone prints and writes
    files). out / err: default the current sys.stdout / sys.stderr. `device`: default upstream's rule (devices.select_device)."""
    from ..cfg import read_data_cfg
    from ..data import read_list
    from ..data.classifier import classifier_loader_from_net, read_label_names
    from ..eval.classifier import Classifier, validate_classifier_single
    from ..eval.common import EvalError, c_nan_str

    out, err = out or sys.stdout, err or sys.stderr
    base = basecfg(cfgfile)
    print(base, file=out)
    world = 1 if dist is None else dist.world_size
    print(world, file=out)
    device = torch.device(device) if device is not None else select_device(gpus=gpus)
    net = start_network(cfgfile, weightfile, seed=seed, flavor=flavor, clear=clear, dist=dist)
    main_rank = dist is None or dist.is_main
    o = net.options
    print(f"Learning Rate: {o.learning_rate:g}, Momentum: {o.momentum:g}, Decay: {o.decay:g}", file=out)
    data = read_data_cfg(datacfg)
    backup = data.str("backup", "/backup/")
    classes = data.int("classes", 2)
    topk_n = data.int("top", 5)
    topk_name = f"top{topk_n}"
    Classifier(data, net=net, err=err).check_classes(out)
    labels_path = data.str("labels", "data/labels.list")
    labels = read_label_names(labels_path)
    if len(labels) < classes:  # upstream reads past the end of its label list
        raise EvalError(f"{labels_path}: {len(labels)} labels but classes={classes} in {data.path}")
    labels = labels[:classes]  # as upstream, further labels are not looked at
    paths = read_list(data.str("train", "data/train.list"))
    print(len(paths), file=out)
    imgs = o.mini_batch * o.subdivisions
    trainer = Trainer(net, device)
    trainer.dist = dist
    data_seed = seed if dist is None else dist.seeds(seed)[0]
    loader = classifier_loader_from_net(net, paths, labels, show_imgs=show_imgs, dontuse_opencv=dontuse_opencv,
                                        seed=data_seed, workers=workers, pin_memory=device.type == "cuda")
    if main_rank and (why := backup_problem(backup)):  # before the first iteration, not at the first save
        print(f"Error: {why}", file=err)
        return 1
    plot = TrainChart(base, o.max_batches, o.max_chart_loss, chart, accuracy_name=topk_name, dont_show=dont_show,
                      mjpeg_port=mjpeg_port, out=out) if main_rank and not dontuse_opencv else _NoChart()
    start_iteration = trainer.iteration
    bar = _progress(o.max_batches, start_iteration, out)
    iter_save = iter_save_last = iter_topk = start_iteration
    avg_loss, avg_time, topk = -1.0, -1.0, 0.0
    last = f"{backup}/{base}_last.weights"
    forever = o.max_batches == 0  # upstream: max_batches=0 trains until stopped

    save = WeightsSaver(trainer, main_rank, err, weightfile)  # a failed save: one line, the run goes on
    nan_watch = NanWatch(last, err)

    def out_of_memory(kind):
        return out_of_memory_line(kind, cfgfile, o, trainer.net.options.width, trainer.net.options.height,
                                  save.done_seen // imgs + 1)

    start = time.time()
    with saved_on_interrupt(lambda: save(last), last, err, sigterm=dist is None) as stopped, \
            closing(bar, loader, plot), stop_on_out_of_memory(out_of_memory, stopped, err,
                                                              lambda: save.after_failure(last)):
        stream = iter(loader.batches(imgs))
        while forever or trainer.iteration < o.max_batches:
            t0 = time.time()
            x, truth = next(stream)
            print(f"Loaded: {time.time() - t0:f} seconds", file=out)
            if show_imgs and not dont_show and main_rank:  # upstream's show_imgs == 1
                display.show_batch(x)
            t1 = time.time()
            loss = trainer.train_batch(x, truth, err)
            save.completed()
            if avg_loss < 0 or not np.isfinite(avg_loss):
                avg_loss = loss
            avg_loss = avg_loss * 0.9 + loss * 0.1
            i = trainer.iteration
            nan_watch.check(loss, i)
            next_topk = max(iter_topk + 2 * len(paths) // imgs, o.burn_in, 100)
            if i % 10 == 0 and calc_topk:
                print(f"\n (next TOP{topk_n} calculation at {next_topk} iterations) ", end="", file=err)
                if topk > 0:
                    print(f" Last accuracy TOP{topk_n} = {topk * 100:2.2f} % ", file=err)
            new_topk = None
            if calc_topk and main_rank and (i >= next_topk or i == o.max_batches):
                iter_topk = i
                topk = validate_classifier_single(data, net=inference_copy(trainer.net), topk_custom=topk_n,
                                                  out=out, err=err)
                new_topk = topk
                print(f"\n accuracy {topk_name} = {topk:f} ", file=out)
            remaining = ((o.max_batches - i) // world) * (time.time() - start) / 3600
            avg_time = remaining if avg_time < 0 else 0.01 * remaining + 0.99 * avg_time
            start = time.time()
            print(f"{i}, {F32(trainer.net.seen) / F32(len(paths)):.3f}: "
                  f"{c_nan_str(loss, '%f')}, {c_nan_str(avg_loss, '%f')} avg, {current_rate(o, i):f} rate, "
                  f"{time.time() - t1:f} seconds, "
                  f"{trainer.net.seen} images, {avg_time:f} hours left", file=out, flush=True)
            if bar is not None:
                bar.set_postfix_str(f"loss={loss:0.2f} avg={avg_loss:0.2f}")
                bar.update(1)
            plot.update(i, avg_loss, avg_time, new_topk)
            if i >= iter_save + 1000:
                iter_save = i
                save(f"{backup}/{base}_{i}.weights")
            if i >= iter_save_last + 100:
                iter_save_last = i
                save(last)
    if stopped.code:
        return stopped.code
    return save_final(save, f"{backup}/{base}_final.weights", plot, err)
