"""Upstream: run_char_rnn, train_char_rnn, test_char_rnn, valid_char_rnn, vec_char_rnn,
get_rnn_data, reset_rnn_state (src/rnn.c); sample_array, rand_size_t (src/utils.c).

`darknet.py rnn train|generate|valid|vec CFG [WEIGHTS]` with upstream's flags: -file
(default data/shakespeare.txt), -seed (default "\\n\\n"), -len (1000), -temp (.7), -srand
(the seed of C's rand(); default time(0)), -clear, -tokenized, -tokens FILE; darknet_py's own
-train_flavor cudnn|cpu and -nogpu / -i N.

C's rand() (glibc's generator, reproduced by eval/anchors.GlibcRand) drives what upstream
draws at random: the weights of a fresh network (make_connected_layer: sqrt(2/inputs) *
rand_uniform(-1, 1), layer by layer in creation order, drawn after srand even when a weights
file is loaded over them), the streams' offsets in the text, their jumps, and generate's
sampling. So with the same seed (-srand; upstream's train seeds with time(0) and has no flag
for it) a run draws what upstream's draws.

train: each datum is `batch / time_steps` streams of `time_steps` consecutive characters
(one-hot, step-major: row j*streams + i is step j of stream i), the truth the next
character. Every datum runs forward and backward, and the printed line is
`N: loss, avg avg, rate rate, S seconds, E epochs`. Upstream's train_network_datum
(both builds) never calls update_network, and its recurrent and connected layers are never
updated anyway (layers/recurrent.py): the weights written (backup/NAME.backup every 10
datums, NAME_N.weights every 1000, NAME_final.weights) differ from the start only in the
batch-norm rolling statistics. We do the same. After a datum each stream jumps to a random
offset with probability 1/10, its state cleared on the CUDA path (reset_rnn_state is a no-op
in upstream's CPU build, and so with -train_flavor cpu).

Upstream at commit 59596d7 cannot run any of this: parse_network_cfg_custom divides by the
number of layers with a w > 1 and h > 1 output (avg_outputs / avg_counter), which is 0 for a
network of connected and recurrent layers, and dies of SIGFPE.
"""
from __future__ import annotations

import math
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ..eval.anchors import GlibcRand
from ..layers.connected import Connected
from ..layers.gru import GRU
from ..layers.recurrent import Recurrent
from ..layers.rnn import RNN
from ..network import build_network
from .loop import basecfg, forward_backward
from .lr_policy import current_rate

F32 = np.float32
RAND_MAX = 2**31 - 1
USAGE = "usage: darknet.py rnn [train/generate/valid/vec] [cfg] [weights (optional)]"


class RnnError(ValueError):
    pass


# -- C's rand() ----------------------------------------------------------------------------
class CRand(GlibcRand):
    """glibc's rand() with upstream's helpers on it, and a fast block of draws."""

    def block(self, n: int) -> np.ndarray:
        """n consecutive rand() values (uint32)."""
        r = self._r[-34:]
        buf = r + [0] * n
        for i in range(34, 34 + n):
            buf[i] = (buf[i - 31] + buf[i - 3]) & 0xFFFFFFFF
        self._r = buf[-34:]
        return np.array(buf[34:], dtype=np.uint32) >> 1

    def size_t(self) -> int:
        """rand_size_t: eight draws, their low bytes from the most significant down."""
        v = 0
        for _ in range(8):
            v = (v << 8) | (self.rand() & 0xFF)
        return v

    def uniform(self, lo: float, hi: float) -> np.float32:
        """rand_uniform: (float)rand() / RAND_MAX * (max - min) + min, in float32."""
        if hi < lo:
            lo, hi = hi, lo
        return F32(self.rand()) / F32(RAND_MAX) * F32(hi - lo) + F32(lo)


def initialize_as_upstream(net, g: CRand) -> None:
    """The weights make_connected_layer draws for every connected layer, inner ones in their
    creation order: sqrt(2/inputs) * rand_uniform(-1, 1); biases 0. Other layer types keep the
    network's own initialisation (and upstream's draws for them are not reproduced)."""
    def connected(l: Connected):
        n = l.weights.numel()
        u = g.block(n).astype(F32) / F32(RAND_MAX) * F32(2) + F32(-1)
        scale = np.sqrt(F32(2) / F32(l.inputs))
        with torch.no_grad():
            l.weights.copy_(torch.from_numpy((scale * u).astype(F32)).reshape(l.weights.shape))
            l.biases.zero_()

    for layer in net.layers:
        if isinstance(layer, Recurrent):
            for name in layer.created or layer.inner:
                connected(getattr(layer, name))
        elif isinstance(layer, Connected):
            connected(layer)


def reset_rnn_state(net, stream: int) -> None:
    """reset_rnn_state (CUDA only): clears stream `stream` of the layers that have a state_gpu
    ([rnn], [gru]; [lstm] has none, so its state is never cleared)."""
    for layer in net.layers:
        if isinstance(layer, (RNN, GRU)):
            layer.reset_state(stream)


# -- data --------------------------------------------------------------------------------
def read_text(path: str, tokenized: bool) -> np.ndarray:
    p = Path(path)
    if not p.is_file():
        raise RnnError(f"{path}: no such file (-file)")
    if tokenized:
        toks = []
        for w in p.read_text(errors="replace").split():
            if not re.fullmatch(r"[+-]?\d+", w):
                break  # fscanf("%d") stops at the first non-number
            toks.append(int(w))
        data = np.array(toks, dtype=np.int64)
    else:
        data = np.frombuffer(p.read_bytes(), dtype=np.uint8).astype(np.int64)
    if data.size == 0:
        raise RnnError(f"{path}: empty")
    return data


def get_rnn_data(text: np.ndarray, offsets: list[int], characters: int, streams: int, steps: int,
                 path: str, tokenized: bool) -> tuple[np.ndarray, np.ndarray]:
    """get_rnn_data / get_rnn_token_data: one-hot x and the next character y, (steps*streams,
    characters) step-major; advances the offsets."""
    size = text.size
    x = np.zeros((steps * streams, characters), F32)
    y = np.zeros((steps * streams, characters), F32)
    for i in range(streams):
        idx = (offsets[i] + np.arange(steps + 1)) % size
        seq = text[idx]
        curr, nxt = seq[:-1], seq[1:]
        low = 0 if tokenized else 1
        bad = (curr < low) | (curr >= characters) | (nxt < low) | (nxt >= characters)
        if bad.any():
            k = int(np.argmax(bad))
            raise RnnError(f"{path}: bad character {int(curr[k]) if curr[k] < low or curr[k] >= characters else int(nxt[k])}"
                           f" at offset {int(idx[k])} (the network takes {characters} inputs; 0 is not allowed)")
        rows = np.arange(steps) * streams + i
        x[rows, curr] = 1
        y[rows, nxt] = 1
        offsets[i] = int((offsets[i] + steps) % size)
    return x, y


# -- commands ----------------------------------------------------------------------------
def _device(nogpu: bool, index: int):
    from ..devices import configure, select_device
    device = select_device(nogpu, None, index)
    configure(device, tf32=False)
    return device


def _net_for(cfg: str, weights: str | None, g: CRand, device, train: bool = False):
    net = build_network(cfg, batch=None if train else 1, train=train)
    net.initialize(0)
    initialize_as_upstream(net, g)  # upstream draws them after srand, whatever is loaded next
    if weights:
        net.load_weights(weights, verbose=False)
    net.to(device)
    return net


def train_char_rnn(cfg: str, weights: str | None, filename: str, clear: bool, tokenized: bool, *,
                   seed: int | None = None, flavor: str | None = None, device="cpu", out=None, err=None,
                   backup: str = "backup/") -> int:
    out, err = out or sys.stdout, err or sys.stderr
    g = CRand(int(time.time()) if seed is None else seed)
    text = read_text(filename, tokenized)
    size = int(text.size)
    base = basecfg(cfg)
    print(base, file=err)
    net = _net_for(cfg, weights, g, device, train=True)
    if flavor:
        net.train_flavor = flavor
    o = net.options
    print(f"Learning Rate: {o.learning_rate:g}, Momentum: {o.momentum:g}, Decay: {o.decay:g}", file=err)
    inputs = o.inputs
    batch, steps = o.mini_batch, o.time_steps
    if clear:
        net.seen = 0
    i = net.seen // batch
    streams = batch // steps
    print(f"\n batch = {batch}, steps = {steps}, streams = {streams}, subdivisions = {o.subdivisions}, "
          f"text_size = {size} ", file=out)
    print(f" global_batch = {batch * o.subdivisions} ", file=out, flush=True)
    offsets = [g.size_t() % size for _ in range(streams)]
    Path(backup).mkdir(parents=True, exist_ok=True)
    avg_loss = F32(-1)
    net.train()
    while net.iteration < o.max_batches:
        i += 1
        t0 = time.time()
        x, y = get_rnn_data(text, offsets, inputs, streams, steps, filename, tokenized)
        net.seen += batch
        res = forward_backward(net, torch.from_numpy(x).to(device), torch.from_numpy(y), err)
        for p in net.parameters():  # upstream never applies these gradients (module docstring)
            p.grad = None
        loss = F32(F32(res.cost) / F32(batch))
        if avg_loss < 0:
            avg_loss = loss
        avg_loss = F32(float(avg_loss) * .9 + float(loss) * .1)
        chars = net.iteration * batch
        print(f"{i}: {loss:f}, {avg_loss:f} avg, {current_rate(o, net.iteration):f} rate, "
              f"{time.time() - t0:f} seconds, {F32(chars) / F32(size):f} epochs", file=err, flush=True)
        for j in range(streams):
            if g.rand() % 10 == 0:
                offsets[j] = g.size_t() % size
                if net.train_flavor != "cpu":
                    reset_rnn_state(net, j)
        if i % 1000 == 0:
            net.save_weights(f"{backup}/{base}_{i}.weights")
        if i % 10 == 0:
            net.save_weights(f"{backup}/{base}.backup")
    net.save_weights(f"{backup}/{base}_final.weights")
    return 0


def _predict(net, c: int, inputs: int, device) -> np.ndarray:
    x = torch.zeros(1, inputs, device=device)
    if not 0 <= c < inputs:
        raise RnnError(f"character {c} is outside the network's {inputs} inputs")
    x[0, c] = 1
    with torch.inference_mode():
        outs = net.forward(x)
    return outs[net.output_index].reshape(-1).float().cpu().numpy()


def sample_array(a: np.ndarray, g: CRand) -> int:
    """sample_array: normalized by its float sum, then the first index where a uniform draw
    minus the running values reaches 0 (float32 all along)."""
    a = a.astype(F32)
    total = F32(np.cumsum(a, dtype=F32)[-1]) if a.size else F32(0)
    a = a * F32(1.0 / float(total))
    r = g.uniform(0, 1)
    for i, v in enumerate(a):
        r = F32(r - v)
        if r <= 0:
            return i
    return a.size - 1


def _symbol(n: int, tokens: list[str] | None) -> bytes:
    if tokens:
        return (tokens[n] + " ").encode()
    return bytes([n & 0xFF])


def test_char_rnn(cfg: str, weights: str | None, num: int, seed: bytes, temp: float, rseed: int,
                  token_file: str | None, *, device="cpu", out=None, err=None) -> int:
    """`rnn generate`: the seed's characters through the network, then `num` sampled ones."""
    out, err = out or sys.stdout.buffer, err or sys.stderr
    tokens = Path(token_file).read_text(errors="replace").split("\n") if token_file else None
    if tokens and tokens[-1] == "":
        tokens.pop()
    g = CRand(rseed)
    print(basecfg(cfg), file=err)
    net = _net_for(cfg, weights, g, device)
    net.eval()
    for layer in net.layers:
        if hasattr(layer, "temperature"):
            layer.temperature = temp
    inputs = net.options.inputs
    c = 0
    for ch in seed[:-1]:
        c = ch
        _predict(net, c, inputs, device)
        out.write(_symbol(c, tokens))
    if seed:
        c = seed[-1]
    out.write(_symbol(c, tokens))
    for _ in range(num):
        p = _predict(net, c, inputs, device)
        p[p < F32(.0001)] = 0
        c = sample_array(p, g)
        out.write(_symbol(c, tokens))
    out.write(b"\n")
    out.flush()
    return 0


def _stdin_bytes(stdin) -> bytes:
    return stdin.read() if stdin is not None else sys.stdin.buffer.read()


def valid_char_rnn(cfg: str, weights: str | None, seed: bytes, *, device="cpu", stdin=None, out=None,
                   err=None) -> int:
    """`rnn valid`: the perplexity of the text on stdin, printed after each character."""
    out, err = out or sys.stdout, err or sys.stderr
    print(basecfg(cfg), file=err)
    net = _net_for(cfg, weights, CRand(0), device)
    net.eval()
    inputs = net.options.inputs
    for ch in seed:
        _predict(net, ch, inputs, device)
    data = _stdin_bytes(stdin)
    total, count, words = F32(0), 0, 1
    log2 = F32(math.log(2))
    for k in range(len(data) - 1):
        c, nxt = data[k], data[k + 1]
        if nxt >= 255:
            raise RnnError("Out of range character")
        count += 1
        if nxt in (32, 10, 9):
            words += 1
        p = _predict(net, c, inputs, device)
        lp = math.log(p[nxt]) if p[nxt] > 0 else -math.inf
        total = F32(float(total) + lp / float(log2))
        # pow(2, -sum/count): the exponent is a float division
        print(f"{count} Perplexity: {2 ** float(-total / F32(count)):4.4f}    "
              f"Word Perplexity: {2 ** float(-total / F32(words)):4.4f}", file=out)
    return 0


def vec_char_rnn(cfg: str, weights: str | None, seed: bytes, *, device="cpu", stdin=None, out=None,
                 err=None) -> int:
    """`rnn vec`: for each line of stdin (whitespace removed), the first layer's output after
    the seed, the line and a space."""
    out, err = out or sys.stdout, err or sys.stderr
    print(basecfg(cfg), file=err)
    net = _net_for(cfg, weights, CRand(0), device)
    net.eval()
    inputs = net.options.inputs
    data = _stdin_bytes(stdin)
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    for line in lines:
        reset_rnn_state(net, 0)
        for ch in seed:
            _predict(net, ch, inputs, device)
        line = bytes(b for b in line if b not in b" \t\r\n")
        for ch in line + b" ":
            x = torch.zeros(1, inputs, device=device)
            x[0, ch] = 1
            with torch.inference_mode():
                first = net.layers[0](x, {})
        vals = first.reshape(-1).float().cpu().numpy()
        print(line.decode("latin-1") + "".join(f",{v:g}" for v in vals), file=out)
    return 0


def run_char_rnn(f, *, stdin=None, out=None, err=None) -> int:
    """run_char_rnn. `f`: the command line's flag reader (flags.Flags, or the words of the
    line) over the whole line, `rnn` included."""
    if isinstance(f, (list, tuple)):
        from ..flags import Flags
        f = Flags(f)
    filename = f.str("-file", "data/shakespeare.txt")
    seed = f.str("-seed", "\n\n").encode("latin-1", errors="replace")
    length = f.int("-len", 1000)
    temp = f.float("-temp", .7)
    rseed = f.int("-srand", int(time.time()))
    clear = f.flag("-clear")
    tokenized = f.flag("-tokenized")
    tokens = f.str("-tokens", None)
    flavor = f.str("-train_flavor", None)
    nogpu = f.flag("-nogpu")
    index = getattr(f, "gpu_index", None)
    index = f.int("-i", 0) if index is None else index
    if flavor not in (None, "cudnn", "cpu"):
        raise RnnError(f"-train_flavor must be cudnn or cpu, not {flavor}")
    words = f.positional("rnn")
    words = words[1:] if words[:1] == ["rnn"] else words
    if len(words) < 2:
        raise RnnError(USAGE)
    sub, cfg = words[0], words[1]
    weights = words[2] if len(words) > 2 else None
    device = _device(nogpu, index)
    if sub == "train":
        return train_char_rnn(cfg, weights, filename, clear, tokenized, seed=rseed, flavor=flavor, device=device,
                              out=out, err=err)
    if sub == "generate":
        return test_char_rnn(cfg, weights, length, seed, temp, rseed, tokens, device=device, out=out, err=err)
    if sub == "valid":
        return valid_char_rnn(cfg, weights, seed, device=device, stdin=stdin, out=out, err=err)
    if sub == "vec":
        return vec_char_rnn(cfg, weights, seed, device=device, stdin=stdin, out=out, err=err)
    raise RnnError(f"rnn {sub}: not available (train, generate, valid, vec)\n{USAGE}")


def rnn_command(f) -> int:
    """The `rnn` command of the command line (`f`: the flag reader, or the words of the line
    from `rnn` on): errors as one line, no traceback."""
    try:
        return run_char_rnn(f)
    except RnnError as e:
        print(str(e) if str(e).startswith("usage") else f"Error: {e}", file=sys.stderr)
        return 2 if str(e).startswith("usage") else 1
