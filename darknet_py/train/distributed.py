"""Training on several GPUs or machines: one process per GPU, torch.distributed.

Upstream: train_detector (src/detector.c) with -gpus, train_networks / sync_nets
(src/network_kernels.cu).

    ./darknet.py detector train obj.data x.cfg x.conv -gpus 0,1         # one machine, 2 processes
    torchrun --nnodes 2 --nproc_per_node 4 --node_rank N --master_addr HOST --master_port 29500 \\
        darknet.py detector train obj.data x.cfg x.conv                  # 8 processes on 2 machines
    ./darknet.py classifier train obj.data x.cfg -gpus 0,1              # classifiers alike (train/classifier.py)

`-gpus 0,1` (more than one id, not under torchrun) starts one process per id on this machine
(`launch`: spawned processes, a free local port, backend nccl on CUDA, gloo without it; with
no CUDA the ids only count CPU processes). Under torchrun (RANK / WORLD_SIZE / LOCAL_RANK /
MASTER_ADDR / MASTER_PORT in the environment, WORLD_SIZE > 1) each process joins the group from
those variables and trains on GPU `-gpus`[LOCAL_RANK] (default: GPU LOCAL_RANK).

What upstream does with n GPUs, and what is kept:

- every GPU holds its own network with learning_rate *= n; each call of train_networks gives
  every GPU its own batch*subdivisions images and advances the iteration counter by n
  (seen = iteration * batch * subdivisions), so max_batches is reached after max_batches/n
  calls and the images seen over the run are the same as on one GPU. Kept: the cfg's
  learning_rate is multiplied by the number of processes (float, as upstream; the printed
  "Learning Rate" and per-iteration rate include it), each process loads batch*subdivisions
  images per step from its own stream (its own seed), and the counter advances by the number
  of processes per step. Upstream's per-iteration line prints iteration*batch*subdivisions*n
  as "images"; so do we. The rate of a step is taken at the first iteration of the step
  (upstream's GPU 0).
- every GPU updates its own copy (its own momentum buffer) and every 4th iteration
  (train_networks' `interval`) the weights, biases and scales are averaged over the GPUs
  (momentum buffers and batch-norm rolling statistics are not).

  Here instead the gradient is all-reduced after every step, as a MEAN over the processes, and
  every process applies upstream's update to it, so every process holds the same weights after
  every step. Why the mean: with B = batch*subdivisions, g_k the gradient summed over the B
  images of process k, upstream's update of copy k is
      u_k += -g_k - decay*B*w;   w_k = w + (n*lr/B) * u_k;   u_k *= momentum
  All of it is linear in (u_k, g_k), so the average of the copies is w + (n*lr/B) * U with
  U = mean_k u_k and U += -mean_k g_k - decay*B*w, U *= momentum: one network fed the mean
  gradient with rate n*lr. That is what this module runs, i.e. upstream's multi-GPU training
  with its weight averaging done after every step (interval 1) instead of every 4 iterations;
  with averaging every 4, upstream's copies drift apart in between (each one's gradient is
  taken at its own weights), which ours never do. The same step equals ONE process with batch
  n*B (fed the same n*B images) and learning_rate n*lr:
      w += (n*lr/(n*B)) * (u_1 = n*U)  =  (n*lr/B) * U,
  the linear scaling rule that upstream's learning_rate *= ngpus applies.
  Not linear, so only close to upstream's per-copy update followed by averaging: adam=1 (moments
  of the mean gradient, not the mean of per-copy adam steps), the shortcut weights' clamp of
  the update to [-1, 1], the NaN/inf resets.
- batch-norm rolling statistics: upstream keeps them per GPU and saves GPU 0's; here they are
  averaged over the processes after every step, so every process holds the same state.
- upstream's multi-GPU training exists only in its GPU build, whose backward every process uses
  by default (Network.train_flavor = "cudnn"), even on the CPU; with -train_flavor cpu the CPU
  build's stale route/upsample deltas stay per process: the weights are still the same
  everywhere, but no longer those of one process with batch n*B.
- initial weights are broadcast from rank 0; random resizing (random=1) picks the same sizes
  on every process (a seed shared by all); data augmentation differs per process.

Only rank 0 prints upstream's lines, writes weights, backups, chart.png and runs -map; the
others print nothing but errors. Ctrl-C or SIGTERM (to any process, or SIGTERM to the launcher
of -gpus, which passes it on): the processes agree at the next step boundary to stop (a flag
all-reduced through gloo on the CPU, beside nccl on GPUs, so that no process is left waiting
in a collective), rank 0 saves NAME_last.weights, and all exit with 130 (143 for SIGTERM).
A process that loses the others (one crashed or was killed) stops as if interrupted: rank 0
saves NAME_last.weights; a SIGKILLed launcher takes its processes with it. Environment:
DARKNET_DIST_TIMEOUT (seconds a collective may wait, default 1800: rank 0's -map holds the
others that long at most), DARKNET_DIST_CHECK=1 (compare a checksum of every parameter and
rolling statistic over the processes after every step; a difference stops training).
"""
from __future__ import annotations

import contextlib
import datetime
import multiprocessing.connection
import os
import secrets
import signal
import socket
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as tdist

__all__ = ["Dist", "PeerLost", "Mismatch", "requested", "torchrun_env", "train", "launch", "init_from_env",
           "state_checksums"]

BUCKET = 1 << 24  # elements per all-reduce
GRACE_S = 60  # how long the launcher waits for the others once one process failed


class PeerLost(KeyboardInterrupt):
    """A collective failed: another process is gone. A KeyboardInterrupt, so that the training
    loop stops as on Ctrl-C (rank 0 saves _last.weights)."""


class Mismatch(RuntimeError):
    """DARKNET_DIST_CHECK: the processes do not hold the same weights."""


def torchrun_env() -> bool:
    """True inside a torchrun (or `launch`) worker of a group of more than one process."""
    try:
        return "RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1
    except ValueError:
        return False


def requested(gpus) -> bool:
    """Does `detector train` run distributed: torchrun's environment, or -gpus with several ids."""
    return torchrun_env() or (gpus is not None and len(gpus) > 1)


# ============================================================================ the group


@dataclass
class Dist:
    """This process's place in the group and the collectives the training loop calls
    (train_detector: prepare, seeds, strided; Trainer.train_batch: all_reduce_gradients,
    after_step)."""

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    device: torch.device
    base_seed: int = 0
    check: bool = False
    interrupted: bool = False  # this process was asked to stop (Ctrl-C, SIGTERM)
    terminated: bool = False   # ... by SIGTERM
    ctrl: object = None        # the gloo group the stop flag travels in (None: the default group)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # -- setup --------------------------------------------------------------------
    def prepare(self, net) -> None:
        """After the weights are loaded: rank 0's state everywhere, learning_rate *= processes
        (in the [net] section too, which resized copies are built from)."""
        net.to(self.device)
        tensors = [p.data for p in net.parameters()] + [b for b in net.buffers()]
        seen = torch.tensor([net.seen], dtype=torch.int64, device=self.device)
        self._run(lambda: [tdist.broadcast(t, 0) for t in tensors + [seen]])
        net.seen = int(seen.item())
        lr = float(np.float32(net.options.learning_rate) * np.float32(self.world_size))
        net.options.learning_rate = lr
        _set_option(net.sections[0], "learning_rate", repr(lr))

    def seeds(self, seed):
        """(data seed, sizes seed): each process its own data stream, the same resizing."""
        base = self.base_seed if seed is None else int(seed)
        return [base, self.rank], base

    def strided(self, sizes):
        """A MultiScale that counts world_size iterations per batch (None stays None)."""
        return None if sizes is None else _Strided(sizes, self.world_size)

    # -- every step ---------------------------------------------------------------
    def should_stop(self) -> bool:
        """At a step boundary, did any process get Ctrl-C or SIGTERM? All stop together here,
        between collectives, so none is left waiting in one (under nccl such a wait can last
        the whole timeout). The flag goes through gloo on the CPU, which a lost peer ends."""
        flag = torch.tensor([2 if self.terminated else 1 if self.interrupted else 0], dtype=torch.int32)
        self._run(lambda: tdist.all_reduce(flag, op=tdist.ReduceOp.MAX, group=self.ctrl))
        value = int(flag.item())
        self.interrupted = self.interrupted or value > 0
        self.terminated = self.terminated or value == 2
        return value > 0

    def all_reduce_gradients(self, net) -> None:
        """.grad := the mean over the processes of each process's .grad (None counts as 0;
        stays None where no process has one)."""
        params = [p for p in net.parameters() if p.requires_grad]
        has = torch.tensor([p.grad is not None for p in params], dtype=torch.float32, device=self.device)
        self._run(lambda: tdist.all_reduce(has))
        grads = []
        for p, h in zip(params, has.tolist()):
            if h:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
                grads.append(p.grad)
        self._mean(grads)

    def after_step(self, trainer, loss: float, images: int) -> float:
        """The counter advances by world_size iterations, rolling statistics are averaged,
        returns the mean loss over the processes (upstream's train_networks' return)."""
        net = trainer.net
        net.seen += (self.world_size - 1) * images
        rolling = [b for n, b in net.named_buffers() if n.rsplit(".", 1)[-1].startswith("rolling_")]
        value = torch.tensor([loss], dtype=torch.float32, device=self.device)
        self._mean(rolling + [value])
        if self.check:
            sums = self.gather_checksums(net)
            if any(not torch.equal(sums[0], s) for s in sums[1:]):
                raise Mismatch(f"the processes hold different weights after iteration {trainer.iteration}")
        return float(value.item())

    def gather_checksums(self, net) -> list[torch.Tensor]:
        """state_checksums(net) of every process, in rank order (on the CPU)."""
        mine = state_checksums(net).to(self.device)
        out = [torch.empty_like(mine) for _ in range(self.world_size)]
        self._run(lambda: tdist.all_gather(out, mine))
        return [t.cpu() for t in out]

    # -- collectives ----------------------------------------------------------------
    def _mean(self, tensors) -> None:
        """In place: each tensor := its mean over the processes (one all-reduce per bucket)."""
        bucket, size = [], 0
        for t in tensors:
            bucket.append(t)
            size += t.numel()
            if size >= BUCKET:
                self._mean_bucket(bucket)
                bucket, size = [], 0
        if bucket:
            self._mean_bucket(bucket)

    def _mean_bucket(self, bucket) -> None:
        flat = torch.cat([t.detach().reshape(-1).float() for t in bucket])
        self._run(lambda: tdist.all_reduce(flat))
        flat.div_(self.world_size)
        offset = 0
        with torch.no_grad():
            for t in bucket:
                n = t.numel()
                t.copy_(flat[offset:offset + n].view_as(t))
                offset += n

    def _run(self, fn):
        try:
            return fn()
        except (RuntimeError, tdist.DistError) as e:
            _ignore_sigint()  # stopping now; a save that follows must not be cut short
            if not self.interrupted:
                print(f"darknet.py rank {self.rank}: lost the other training processes ({_first_line(e)}); "
                      "stopping", file=sys.__stderr__, flush=True)
            raise PeerLost(str(e)) from e

    def close(self, completed: bool) -> None:
        if not tdist.is_initialized():
            return
        if completed:
            with contextlib.suppress(Exception):
                tdist.barrier()  # the others wait for rank 0's final save
        with contextlib.suppress(Exception):
            tdist.destroy_process_group()


class _Strided:
    def __init__(self, sizes, step: int):
        self.sizes, self.step = sizes, step

    def __call__(self):
        size = self.sizes()
        self.sizes.iteration += self.step - 1
        return size


def _set_option(section, key: str, value: str) -> None:
    from ..cfg import Option

    opt = next((o for o in section.options if o.key == key), None)
    if opt is None:
        section.options.append(Option(key, value, section.line, used=True))
    else:
        opt.value = value


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def state_checksums(net) -> torch.Tensor:
    """One int64 per parameter and rolling statistic: the float bits times their positions
    (mod 1000003), summed; equal exactly when the arrays are (barring a collision)."""
    sums = []
    tensors = list(net.parameters()) + [b for n, b in net.named_buffers()
                                        if n.rsplit(".", 1)[-1].startswith("rolling_")]
    with torch.no_grad():
        for t in tensors:
            bits = t.detach().float().contiguous().reshape(-1).view(torch.int32).long()
            pos = torch.arange(bits.numel(), device=bits.device, dtype=torch.int64) % 1000003 + 1
            sums.append((bits * pos).sum())
    return torch.stack(sums).cpu() if sums else torch.zeros(0, dtype=torch.int64)


def _ignore_sigint() -> None:
    with contextlib.suppress(ValueError):  # not the main thread
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def init_from_env(gpus: list[int] | None = None) -> Dist:
    """Join the group described by RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR,
    MASTER_PORT (as torchrun sets them): nccl on GPU -gpus[LOCAL_RANK] (default LOCAL_RANK)
    when CUDA is there, else gloo on the CPU."""
    env = os.environ
    rank, world = int(env["RANK"]), int(env["WORLD_SIZE"])
    local_rank = int(env.get("LOCAL_RANK", rank))
    local_world = int(env.get("LOCAL_WORLD_SIZE", world))
    if torch.cuda.is_available():
        gpu = gpus[local_rank] if gpus and local_rank < len(gpus) else local_rank
        torch.cuda.set_device(gpu)
        device, backend = torch.device("cuda", gpu), "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
    timeout = datetime.timedelta(seconds=float(env.get("DARKNET_DIST_TIMEOUT", "1800")))
    tdist.init_process_group(backend, init_method="env://", rank=rank, world_size=world, timeout=timeout)
    d = Dist(rank, world, local_rank, local_world, device, check=env.get("DARKNET_DIST_CHECK", "") not in ("", "0"))
    if backend != "gloo":  # the stop flag must not wait in nccl: a gloo group beside it
        d.ctrl = tdist.new_group(backend="gloo", timeout=timeout)
    seed = torch.tensor([secrets.randbits(62) if rank == 0 else 0], dtype=torch.int64, device=device)
    d._run(lambda: tdist.broadcast(seed, 0))
    d.base_seed = int(seed.item())
    return d


# ============================================================================ detector train


def train(datacfg: str, cfgfile: str, weightfile: str | None, *, gpus: list[int] | None, argv=None,
          entry=None, command: str = "detector", **kw) -> int:
    """cli's `detector train` (command "detector") or `classifier train` ("classifier") with
    several processes: inside torchrun (or a `launch` child), this process's share; else start
    one process per -gpus id, each running `entry` (the command line's main function) on
    `argv` (the command line after `command`)."""
    if torchrun_env():
        return run_rank(datacfg, cfgfile, weightfile, gpus=gpus, command=command, **kw)
    if argv is None or entry is None:
        raise ValueError("distributed.train: the command line (entry, argv) is needed to start the processes")
    return launch(entry, [command, *argv], len(gpus))


def _train_function(command: str):
    """The single-process training loop each process runs, and the keywords that only rank 0
    may act on (evaluation during training, the chart)."""
    if command == "classifier":
        from .classifier import train_classifier
        return train_classifier, dict(calc_topk=False, chart=None)
    from .loop import train_detector
    return train_detector, dict(calc_map=False, chart=None)


def bad_gpu_ids(gpus: list[int]) -> str | None:
    """Why -gpus cannot be used on this machine, or None."""
    if not torch.cuda.is_available():
        return None  # without CUDA the ids only count CPU processes
    count = torch.cuda.device_count()
    if any(not 0 <= g < count for g in gpus) or len(set(gpus)) != len(gpus):
        return (f"-gpus {','.join(map(str, gpus))}: this machine has {count} CUDA device(s) "
                f"(ids 0..{count - 1}), each id may appear once")
    return None


def run_rank(datacfg: str, cfgfile: str, weightfile: str | None, *, gpus=None, command: str = "detector",
             **kw) -> int:
    """This process's part of a distributed `detector train` / `classifier train` (the group
    from the environment)."""
    train_fn, rank0_only = _train_function(command)

    state = {"interrupted": False, "terminated": False}
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def on_signal(signum, frame):
        # noted only: every process stops at the same step boundary (Dist.should_stop), so
        # that none waits in a collective for one that has gone
        state["interrupted"] = True
        state["terminated"] = state["terminated"] or signum == signal.SIGTERM
        if dist is not None:
            dist.interrupted, dist.terminated = True, state["terminated"]
        if dist is None:  # not in the group yet: nothing to wait for
            raise KeyboardInterrupt

    dist = None
    for s in previous:
        signal.signal(s, on_signal)
    completed = False
    try:
        dist = init_from_env(gpus)
        dist.interrupted, dist.terminated = state["interrupted"], state["terminated"]
        if kw.get("workers") is None:  # the cores shared among this machine's processes
            kw["workers"] = max(1, min(8, (os.cpu_count() or 1) // dist.local_world_size))
        device_ids = [dist.device.index] if dist.device.type == "cuda" else None
        if dist.is_main:
            code = train_fn(datacfg, cfgfile, weightfile, gpus=device_ids, device=dist.device, dist=dist, **kw)
        else:
            kw.update(rank0_only)
            with open(os.devnull, "w") as null, contextlib.redirect_stdout(null), contextlib.redirect_stderr(null):
                kw.update(out=null, err=null)
                code = train_fn(datacfg, cfgfile, weightfile, gpus=device_ids, device=dist.device, dist=dist, **kw)
        completed = code == 0
        return code
    except KeyboardInterrupt:
        return 143 if state["terminated"] else 130
    finally:
        if dist is not None:
            dist.close(completed)
        with contextlib.suppress(ValueError):
            for s, h in previous.items():
                signal.signal(s, h)


# ============================================================================ launcher


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _child(entry, argv: list[str], env: dict) -> None:
    from ..data.loader import die_with_parent

    die_with_parent()  # a SIGKILLed launcher leaves no training process behind
    os.environ.update(env)
    sys.exit(entry(argv))


def launch(entry, argv: list[str], nprocs: int) -> int:
    """Run `entry(argv)` (the darknet command line) in `nprocs` processes on this machine, as torchrun
    would (RANK, WORLD_SIZE, LOCAL_RANK, ... and a free port on 127.0.0.1). Ctrl-C reaches the
    processes (one process group) and each one stops itself; this one only waits. Returns 0 when
    all succeed, else the first failure's exit status (130 when they were interrupted)."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    port = str(_free_port())
    procs = []
    for rank in range(nprocs):
        env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "RANK": str(rank), "WORLD_SIZE": str(nprocs),
               "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": str(nprocs)}
        procs.append(ctx.Process(target=_child, args=(entry, list(argv), env), name=f"darknet-rank{rank}"))
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def forward_sigterm(signum, frame):  # a scheduler stops the launcher: the processes stop as on Ctrl-C
        for p in procs:
            if p.is_alive() and p.pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, signal.SIGTERM)

    try:
        for p in procs:
            p.start()
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches them from the terminal
        signal.signal(signal.SIGTERM, forward_sigterm)
        _wait(procs)
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join()
        for s, h in previous.items():
            signal.signal(s, h)
    codes = [128 - p.exitcode if p.exitcode < 0 else p.exitcode for p in procs]
    failed = [c for c in codes if c not in (0, 130)]
    return failed[0] if failed else max(codes)


def _wait(procs) -> None:
    deadline = None
    while any(p.is_alive() for p in procs):
        alive = [p for p in procs if p.is_alive()]
        timeout = 1.0 if deadline is None else max(0.0, min(1.0, deadline - time.monotonic()))
        multiprocessing.connection.wait([p.sentinel for p in alive], timeout)
        if deadline is None and any(p.exitcode not in (None, 0) for p in procs):
            deadline = time.monotonic() + GRACE_S  # one failed: the others should notice and stop
        if deadline is not None and time.monotonic() >= deadline:
            for p in procs:
                if p.is_alive():
                    p.terminate()
            deadline = time.monotonic() + 10
