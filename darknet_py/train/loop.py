"""Upstream: train_detector (src/detector.c), train_network / train_network_datum /
backward_network (src/network.c).

The plain training loop, top to bottom: load a batch, run `subdivisions` mini-batches
(forward, each loss layer's Layer.loss, backward: gradients accumulate), apply upstream's
update, print upstream's lines, save weights. The yolo delta reaches the layer before the
yolo layer as upstream passes it: the surrogate loss -sum(delta * yolo_input) has exactly
-delta as its gradient there (the logistic inside the yolo layer is not differentiated).
"""
from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .. import display
from ..outputs.chart import TrainChart
from ..data.augment import BYTE_TO_FLOAT, bytes_to_float
from ..devices import select_device
from ..layers.base import LossContext
from ..network import Network, announce_detection_layers, build_network
from .faults import NanWatch, WeightsSaver, backup_problem, out_of_memory_line, stop_on_out_of_memory
from .lr_policy import current_rate



def basecfg(cfgfile: str) -> str:
    """Upstream's basecfg: the file name up to its first '.'."""
    name = str(cfgfile).replace("\\", "/").rsplit("/", 1)[-1]
    return name.split(".", 1)[0]


@dataclass
class MiniBatchResult:
    cost: float  # upstream's get_network_cost: mean over the layers that have a cost
    stats: dict = field(default_factory=dict)  # layer index -> the detection layer's statistics


def forward_backward(net: Network, x: torch.Tensor, truth: torch.Tensor, err=sys.stderr) -> MiniBatchResult:
    """One mini-batch: upstream's train_network_datum without the update.

    Every layer whose forward reads the truth (produces_loss) gives its cost and delta through
    Layer.loss: the detection layers from box rows (n, max_boxes, truth_size), [softmax] and
    [cost] from one row of class values per image (n, classes). The loss is get_network_cost:
    the mean of their costs."""
    outputs, inputs = net.forward_train(x)
    o = net.options
    ctx = LossContext(netw=o.width, neth=o.height, seen=net.seen, flavor=net.train_flavor, inputs=inputs)
    surrogate = None
    result = MiniBatchResult(0.0)
    losses = []
    for layer in net.layers:
        if not layer.produces_loss:
            continue
        loss = layer.loss(outputs[layer.index], truth, ctx)
        losses.append((layer, loss))
        if loss.surrogate is not None:
            surrogate = loss.surrogate if surrogate is None else surrogate + loss.surrogate
    if surrogate is not None:
        surrogate.backward()
    # the costs, statistics and lines are read after the backward is under way: on a GPU the host
    # reads them while the device works on (LayerLoss.finish)
    costs = []
    for layer, loss in losses:
        costs.append(loss.cost)
        if loss.stats is not None:
            result.stats[layer.index] = loss.stats
        if loss.line is not None:
            print(loss.line, file=err)
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
        self.dist = None  # distributed.Dist when several processes train together
        self.total_bbox = 0
        self.rewritten_bbox = 0
        # NHWC through the whole network on the CPU: oneDNN's max-pool is several times faster
        # on it, and its convolutions, batch norm and routes take it as is (benchmarks/train.py
        # measures both)
        self.channels_last = self.device.type == "cpu"
        self._byte_table = None

    def network_input(self, x) -> torch.Tensor:
        """A mini-batch as the network takes it: on the device, float32 (a byte batch becomes
        BYTE_TO_FLOAT of its bytes, upstream's value / 255.0f bit for bit: by cv2.LUT on the CPU,
        by a lookup on a GPU after the copy), channels-last on the CPU (the loader's layout
        already: no copy), NCHW on a GPU."""
        xs = torch.as_tensor(x)
        if xs.dtype == torch.uint8 and self.device.type == "cpu" and xs.dim() == 4 and \
                xs.is_contiguous(memory_format=torch.channels_last):
            xs = torch.from_numpy(bytes_to_float(xs.permute(0, 2, 3, 1).numpy())).permute(0, 3, 1, 2)
        xs = xs.to(self.device, non_blocking=True)
        if xs.dtype == torch.uint8:
            table = self._byte_table
            if table is None or table.device != xs.device:
                table = self._byte_table = torch.from_numpy(BYTE_TO_FLOAT).to(xs.device)
            xs = table[xs.long()]
        if xs.dim() == 4:
            xs = xs.contiguous(memory_format=torch.channels_last if self.channels_last else torch.contiguous_format)
        return xs

    def resize(self, width: int, height: int) -> None:
        """upstream's resize_network for random=1: same parameters, another input size."""
        self.net = self.net.resized(width, height)
        self.sgd.net = self.net

    @property
    def iteration(self) -> int:
        return self.net.iteration

    def train_batch(self, x: np.ndarray, truth: np.ndarray, err=sys.stderr) -> float:
        """upstream train_network: the iteration's mini-batches, then the update. Returns the loss."""
        net, o = self.net, self.net.options
        net.train()
        mb = o.mini_batch
        n = x.shape[0] // mb
        total = 0.0
        if self.dist is not None and self.dist.should_stop():  # Ctrl-C / SIGTERM in any process
            raise Terminated() if self.dist.terminated else KeyboardInterrupt()
        self.sgd.zero_grad()
        for i in range(n):
            # the loader hands tensors (numpy arrays work too): no copy on the CPU, one
            # non-blocking copy of pinned memory to a GPU; the truth stays on the host, where
            # the detection layers plan their assignments (layers/yolo/delta.py)
            xs = self.network_input(x[i * mb:(i + 1) * mb])
            ts = torch.as_tensor(truth[i * mb:(i + 1) * mb])
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
        if self.dist is not None:  # several processes: the mean gradient (train/distributed.py)
            self.dist.all_reduce_gradients(net)
        rate = current_rate(o, self.iteration) * self.ngpus
        self.sgd.step(rate, self.iteration)
        if self.dist is not None:  # counter += processes, mean rolling statistics and loss
            return self.dist.after_step(self, total / (n * mb), n * mb)
        return total / (n * mb)


def train_detector(datacfg: str, cfgfile: str, weightfile: str | None, *, clear: bool = False,
                   dont_show: bool = True, calc_map: bool = False, thresh: float = 0.25, iou_thresh: float = 0.5,
                   show_imgs: bool = False, chart: str | None = None, map_epochs: int = 4, gpus: list[int] | None = None,
                   workers: int | None = None, seed: int | None = None, out=sys.stdout, err=sys.stderr,
                   dist=None, flavor: str | None = None, device: torch.device | str | None = None,
                   benchmark_layers: bool = False, mjpeg_port: int = -1) -> int:
    """`mjpeg_port`: stream the chart there (chart.py, stream.py). `dist`: a distributed.Dist
    when this is one of several processes (rank 0 alone prints and writes files; see
    darknet_py/train/distributed.py). `device`: default upstream's rule
    (devices.select_device: gpus[0], else GPU 0 when CUDA is present, else the CPU)."""
    from ..data import loader_from_net, read_list, read_obj_data, sizes_from_net

    data = read_obj_data(datacfg)
    paths = read_list(data.train)
    if calc_map and not Path(data.valid).is_file():
        raise ValueError(f"There is no {data.valid} file for mAP calculation: don't use -map, or set "
                         f"valid={data.train} in your {datacfg} file")
    backup = data.backup
    base = basecfg(cfgfile)
    print(base, file=out)
    device = torch.device(device) if device is not None else select_device(gpus=gpus)
    net = start_network(cfgfile, weightfile, seed=seed, flavor=flavor, clear=clear, dist=dist)
    net.benchmark_layers = benchmark_layers
    main_rank, world = (True, 1) if dist is None else (dist.is_main, dist.world_size)
    o = net.options
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
    announce_detection_layers(net, out)
    trainer = Trainer(net, device)
    trainer.dist = dist
    start_iteration = trainer.iteration
    data_seed, sizes_seed = (seed, seed) if dist is None else dist.seeds(seed)
    # batches of bytes, converted a mini-batch at a time by the trainer (on a GPU: there, after a
    # quarter of the copy): the batches prepared ahead hold a quarter of the memory
    loader = loader_from_net(net, paths, data.classes, show_imgs=show_imgs, seed=data_seed, workers=workers,
                             pin_memory=device.type == "cuda", uint8=True)
    if o.track:
        print(f"\n Tracking! batch = {o.mini_batch}, subdiv = {o.subdivisions}, time_steps = {o.time_steps}, "
              f"mini_batch = {o.mini_batch // o.time_steps} ", file=out)
    sizes = sizes_from_net(net, seed=sizes_seed, start_iteration=start_iteration)
    if dist is not None:
        sizes = dist.strided(sizes)
    if main_rank and (why := backup_problem(backup)):  # before the first iteration, not at the first save
        print(f"Error: {why}", file=err)
        return 1
    plot = TrainChart(base, o.max_batches, o.max_chart_loss, chart, dont_show=dont_show, mjpeg_port=mjpeg_port,
                      out=out) if main_rank else _NoChart()
    bar = _progress(o.max_batches, start_iteration, out)
    avg_loss, avg_time = -1.0, -1.0
    iter_save = iter_save_last = iter_map = start_iteration
    mean_ap, best_map = -1.0, -1.0
    stream = None
    last = f"{backup}/{base}_last.weights"
    save = WeightsSaver(trainer, main_rank, err, weightfile)  # a failed save: one line, the run goes on
    nan_watch = NanWatch(last, err)
    multi_scale = sizes_from_net(net)
    largest = multi_scale.largest() if multi_scale is not None else None

    def out_of_memory(kind):  # random=1: the first iteration loads and trains at the largest size
        failed = save.done_seen // imgs + 1
        first = largest is not None and failed == start_iteration + 1
        w, h = largest if first else (trainer.net.options.width, trainer.net.options.height)
        return out_of_memory_line(kind, cfgfile, o, w, h, failed, largest)

    # distributed: run_rank handles SIGTERM
    with saved_on_interrupt(lambda: save(last), last, err, sigterm=dist is None) as stopped, \
            closing(bar, loader, plot), stop_on_out_of_memory(out_of_memory, stopped, err,
                                                              lambda: save.after_failure(last)):
        if trainer.iteration < o.max_batches:
            stream = iter(loader.batches(imgs, sizes))
        while trainer.iteration < o.max_batches:
            t0 = time.time()
            x, truth = next(stream)
            load_time = time.time() - t0
            if o.track:
                seq = max(1, o.subdivisions // o.sequential_subdivisions) if o.sequential_subdivisions else 1
                print(f" sequential_subdivisions = {o.sequential_subdivisions}, sequence = {seq} ", file=out)
            if show_imgs and not dont_show and main_rank:  # upstream's show_imgs == 1
                display.show_batch(x, truth)
            h, w = int(x.shape[-2]), int(x.shape[-1])
            if (w, h) != (trainer.net.options.width, trainer.net.options.height):
                print(f"Resizing, random_coef = {getattr(net.layers[-1], 'random', 1.4) or 1.4:.2f} ", file=out)
                print(f"\n {w} x {h} ", file=out)
                trainer.resize(w, h)
            print(f"Loaded: {load_time:f} seconds" +
                  (" - performance bottleneck on CPU or Disk HDD/SSD" if load_time > 0.1 and avg_loss > 0 else ""),
                  file=out)
            t1 = time.time()
            loss = trainer.train_batch(x, truth, err)
            save.completed()
            if avg_loss < 0 or avg_loss != avg_loss:
                avg_loss = loss
            avg_loss = avg_loss * 0.9 + loss * 0.1
            it = trainer.iteration
            nan_watch.check(loss, it)
            next_map = max(iter_map + max(map_epochs * len(paths) // (imgs * world), 100), o.burn_in)
            if calc_map:
                print(f"\n (next mAP calculation at {next_map} iterations) ", file=out)
                if mean_ap > 0:
                    print(f"\n Last accuracy mAP@{iou_thresh:0.2f} = {mean_ap * 100:2.2f} %, best = "
                          f"{best_map * 100:2.2f} % ", file=out)
            head = f"{it}/{o.max_batches}: loss={loss:0.1f}"
            head += f" map={mean_ap:0.2f} best={best_map:0.2f}" if mean_ap > 0 else ""
            print(f"{head} hours left={avg_time:0.1f}", file=out)
            print(f" {it}: {loss:f}, {avg_loss:f} avg loss, {current_rate(o, it):f} rate, "
                  f"{time.time() - t1:f} seconds, {it * imgs * world} images, {avg_time:f} hours left", file=out,
                  flush=True)
            if bar is not None:
                bar.set_postfix_str(f"loss={loss:0.2f} avg={avg_loss:0.2f}")
                bar.update(1)
            new_map = None
            if calc_map and (it >= next_map or it == o.max_batches):
                iter_map = it
                mean_ap = _map(trainer.net, data, thresh, iou_thresh, out)
                new_map = mean_ap
                print(f"\n mean_average_precision (mAP@{iou_thresh:0.2f}) = {mean_ap:f} ", file=out)
                if mean_ap >= best_map:
                    best_map = mean_ap
                    print("New best mAP!", file=out)
                    save(f"{backup}/{base}_best.weights")
            remaining = ((o.max_batches - it) // world) * (time.time() - t1 + load_time) / 3600
            avg_time = remaining if avg_time < 0 else 0.01 * remaining + 0.99 * avg_time
            plot.update(it, avg_loss, avg_time, new_map)
            if it >= iter_save + save_every or it % save_every == 0:
                iter_save = it
                save(f"{backup}/{base}_{it}.weights")
            if save_every > save_last and (it >= iter_save_last + save_last or (it % save_last == 0 and it > 1)):
                iter_save_last = it
                save(last)
    if stopped.code:
        return stopped.code
    if save_final(save, f"{backup}/{base}_final.weights", plot, err):
        return 1
    print("If you want to train from the beginning, then use flag in the end of training command: -clear ", file=out)
    return 0


def save_final(save: WeightsSaver, final: str, plot, err) -> int:
    """The end of a completed run: NAME_final.weights and the chart, then upstream's line.
    Returns 1 (and says where the last good weights are) when the final weights were not written."""
    saved = save(final, final=True)
    plot.save()
    print(f"Saving weights to {final}", file=err)
    if not saved:
        print(f"Error: the final weights could not be written to {final}; {save.where_good()}", file=err)
        return 1
    return 0


def start_network(cfgfile: str, weightfile: str | None, *, seed: int | None = None, flavor: str | None = None,
                  clear: bool = False, dist=None) -> Network:
    """The start of upstream's train_detector / train_classifier: the cfg built for training,
    upstream's random initialisation, then whatever the weights file holds; -clear restarts
    the iteration count (seen = 0). With several processes: rank 0's state everywhere and
    learning_rate *= processes (train/distributed.py)."""
    net = build_network(cfgfile, train=True)
    net.initialize(seed)
    if flavor:
        net.train_flavor = flavor  # default: upstream's GPU build's arithmetic, on every device
    if weightfile:
        net.load_weights(weightfile)
    if clear:
        net.seen = 0
    if dist is not None:
        dist.prepare(net)
    return net


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler, `docker stop`, `timeout`): handled as Ctrl-C is."""


@dataclass
class Stopped:
    code: int = 0  # 0: ran to the end; 130: Ctrl-C; 143: SIGTERM


@contextlib.contextmanager
def saved_on_interrupt(save_last, last: str, err=sys.stderr, sigterm: bool = True):
    """The training loop's Ctrl-C and SIGTERM: both stop it, `save_last()` writes the
    _last.weights (no second signal can cut that short) and `Stopped.code` tells the exit
    status (130 / 143), as upstream's Ctrl-C handling plus a SIGTERM that behaves the same.
    sigterm=False: SIGTERM is someone else's (a distributed process: run_rank's)."""
    stopped = Stopped()
    restore_sigterm = raise_on_sigterm() if sigterm else (lambda: None)
    try:
        yield stopped
    except KeyboardInterrupt as e:
        with ignoring_interrupts():
            saved = save_last() is not False  # False: the saver said why it could not
        terminated = isinstance(e, Terminated)
        print(f"\n{'Terminated (SIGTERM)' if terminated else 'Interrupted'}: {'saved' if saved else 'could not save'} "
              f"{last}", file=err)
        stopped.code = 143 if terminated else 130
    finally:
        restore_sigterm()


@contextlib.contextmanager
def closing(bar, loader, chart=None):
    """The progress bar (or None), the loader's workers and the chart's window and stream end
    with the loop, however it ends."""
    try:
        yield
    finally:
        if bar is not None:
            bar.close()
        loader.close()
        if chart is not None:
            chart.close()


def raise_on_sigterm():
    """From now on SIGTERM raises Terminated in the main thread (elsewhere: nothing changes).
    Returns the function that puts the previous handler back."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def on_term(signum, frame):
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, on_term)
    return lambda: signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def ignoring_interrupts():
    """SIGINT and SIGTERM ignored for the duration (the main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


class _NoChart:
    """The chart of a process other than rank 0: nothing drawn, nothing written."""

    def update(self, *args, **kwargs) -> None:
        pass

    def save(self, *args, **kwargs) -> None:
        pass

    def close(self) -> None:
        pass


def inference_copy(net: Network) -> Network:
    """A batch-1 inference copy of the training network (upstream evaluates its training
    network with set_batch_network(&net, 1): rolling statistics, no training state)."""
    eval_net = Network(net.sections, net.path, batch=1, width=net.options.width, height=net.options.height,
                       quiet=True)
    eval_net.load_state_dict(net.state_dict())
    eval_net.seen = net.seen
    eval_net.to(net.device).eval().fuse()
    if eval_net.device.type == "cpu":
        eval_net.to(memory_format=torch.channels_last)
    return eval_net


def _map(net: Network, data, thresh: float, iou_thresh: float, out) -> float:
    """upstream's validate_detector_map on a batch-1 inference copy of the training network."""
    from ..eval.map import validate_detector_map

    return validate_detector_map(inference_copy(net), data.path, thresh, iou_thresh, 0, bool(net.options.letter_box),
                                 out=out)


def _progress(total: int, start: int, out):
    """A tqdm line on the terminal (stderr) when stdout is one; upstream's lines are printed anyway."""
    if not (hasattr(out, "isatty") and out.isatty()):
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=start, unit="it", file=sys.stderr, dynamic_ncols=True, leave=False)
