"""Upstream: average, speed, operations, oneoff, partial, rescale_net, rgbgr_net,
reset_normalize_net, normalize_net, statistics_net, denormalize_net, visualize (src/darknet.c) and
test_resize (src/image.c).

darknet's top-level tools: commands that read a cfg and .weights file, change the weights and write
a new file, or print something about the network. Each takes upstream's positional arguments.
The weight arithmetic is upstream's in float32 (its sums run in order, as np.cumsum does; its
scale factors are computed in double and narrowed, as C's promotions do), so that the file
written is upstream's byte for byte where upstream's own code is well defined; where it is not
(denormalize's loop over n x nweights weights of an nweights array), the intended arithmetic,
per filter, is done and the difference is said in the README.
"""
from __future__ import annotations

import os
import sys
import time

import numpy as np
import torch

from .flags import Flags, UsageError, c_atoi

F32 = np.float32


def _usage(text: str) -> UsageError:
    return UsageError(f"usage: darknet.py {text}")


def _net(cfg: str, weights: str | None, batch: int | None = 1):
    from .network import build_network
    net = build_network(cfg, batch=batch, quiet=True)
    if weights:
        net.load_weights(weights)
    return net


def _arr(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy().astype(F32).reshape(-1)


def _put(t: torch.Tensor, a: np.ndarray) -> None:
    with torch.no_grad():
        t.copy_(torch.from_numpy(np.ascontiguousarray(a, dtype=F32).reshape(t.shape)))


def _kind(layer) -> str:
    return type(layer).__name__.lower()


def _is_conv(layer) -> bool:
    return _kind(layer) == "convolutional"


def _is_connected(layer) -> bool:
    return _kind(layer) == "connected"


# ----------------------------------------------------------------------------- the weight tools

def _averaged_arrays(layer) -> list[torch.Tensor]:
    """What upstream's average() sums: biases, weights, and for batch norm scales and rolling
    statistics, of [convolutional] and [connected] layers (others keep the first file's)."""
    if _is_conv(layer) and layer.share_layer is None:
        return [layer.biases, layer.weights] + ([layer.scales, layer.rolling_mean, layer.rolling_variance]
                                                if layer.bn else [])
    if _is_connected(layer):
        return [layer.biases, layer.weights]  # upstream leaves a connected layer's batch norm alone
    return []


def average(f: Flags) -> int:
    pos = f.positional("average")[1:]
    if len(pos) < 3:
        raise _usage("average CFG OUT WEIGHTS1 [WEIGHTS2 ...]")
    cfg, out, first, others = pos[0], pos[1], pos[2], pos[3:]
    total = _net(cfg, first, batch=None)
    sums = [[_arr(t) for t in _averaged_arrays(l)] for l in total.layers]
    net = _net(cfg, None, batch=None)
    for path in others:
        net.load_weights(path)
        for acc, layer in zip(sums, net.layers):
            for a, t in zip(acc, _averaged_arrays(layer)):
                a += _arr(t)  # axpy_cpu: one float32 add per element, file after file
    scale = F32(1.0 / (len(others) + 1))  # scal_cpu's float ALPHA = (float)(1./n)
    for acc, layer in zip(sums, total.layers):
        for a, t in zip(acc, _averaged_arrays(layer)):
            _put(t, a * scale)
    total.save_weights(out)
    return 0


def _first_conv(net):
    return next((l for l in net.layers if _is_conv(l)), None)


def _filters(layer) -> np.ndarray:
    """The weights as upstream's get_convolutional_weight images: (n, c/groups, size, size)."""
    return _arr(layer.weights).reshape(layer.weights.shape)


def rescale(f: Flags) -> int:
    """rescale_weights(first conv, 2, -.5): input [0, 1] -> [-1, 1]; for 3-channel filters the
    weights double and the bias moves by -.5 x their (doubled) sum."""
    cfg, weights, out = _three(f, "rescale")
    net = _net(cfg, weights, batch=None)
    l = _first_conv(net)
    if l is not None and l.share_layer is None:
        w, b = _filters(l), _arr(l.biases)
        for i in range(l.n):
            if w.shape[1] == 3:
                w[i] *= F32(2)
                s = np.cumsum(w[i].reshape(-1), dtype=F32)[-1]  # sum_array, in order
                b[i] += s * F32(-0.5)
        _put(l.weights, w)
        _put(l.biases, b)
    net.save_weights(out)
    return 0


def rgbgr(f: Flags) -> int:
    """rgbgr_weights(first conv): the red and blue input channels of 3-channel filters swapped."""
    cfg, weights, out = _three(f, "rgbgr")
    net = _net(cfg, weights, batch=None)
    l = _first_conv(net)
    if l is not None and l.share_layer is None:
        w = _filters(l)
        if w.shape[1] == 3:
            w = w[:, [2, 1, 0]]
        _put(l.weights, w)
    net.save_weights(out)
    return 0


def _fold_batchnorm(l, eps) -> None:
    """denormalize_convolutional_layer / denormalize_connected_layer: batch norm folded into the
    weights and biases; scales 1, mean 0, variance 1 left behind."""
    scales, mean, var = _arr(l.scales), _arr(l.rolling_mean), _arr(l.rolling_variance)
    if eps == "conv":  # float / sqrt(float + .00001): in double, narrowed to the float `scale`
        k = (scales.astype(np.float64) / np.sqrt(var.astype(np.float64) + 0.00001)).astype(F32)
    else:  # connected: var + .000001f in float, then the division in double
        k = (scales.astype(np.float64) / np.sqrt((var + F32(0.000001)).astype(np.float64))).astype(F32)
    w = _arr(l.weights).reshape(len(k), -1) * k[:, None]
    _put(l.weights, w)
    _put(l.biases, _arr(l.biases) - mean * k)
    _put(l.scales, np.ones_like(scales))
    _put(l.rolling_mean, np.zeros_like(mean))
    _put(l.rolling_variance, np.ones_like(var))


def _batchnorm_layers(net, recurrent=("gru", "lstm")):
    """The batch-normalized [convolutional] / [connected] layers, and the inner connected layers of
    batch-normalized recurrent layers of the kinds named (reset: gru and lstm; denormalize: gru only,
    as upstream, whose LSTM branch tests for GRU a second time and so never runs)."""
    for i, l in enumerate(net.layers):
        if (_is_conv(l) and l.share_layer is None or _is_connected(l)) and l.bn:
            yield i, l
        elif _kind(l) in recurrent and l.bn:
            for inner in l._layers():
                yield i, inner


def reset(f: Flags) -> int:
    """reset_normalize_net: batch norm folded in, the layers keep (identity) batch norm."""
    cfg, weights, out = _three(f, "reset")
    net = _net(cfg, weights, batch=None)
    for _, l in _batchnorm_layers(net):
        _fold_batchnorm(l, "conv" if _is_conv(l) else "connected")
    net.save_weights(out)
    return 0


def denormalize(f: Flags) -> int:
    """denormalize_net: batch norm folded in and dropped (the file has no batch-norm arrays)."""
    cfg, weights, out = _three(f, "denormalize")
    net = _net(cfg, weights, batch=None)
    for i, l in list(_batchnorm_layers(net, recurrent=("gru",))):
        _fold_batchnorm(l, "conv" if _is_conv(l) else "connected")
        l.bn = False
        net.layers[i].bn = False
    net.save_weights(out)
    return 0


def normalize(f: Flags) -> int:
    """normalize_net: every [convolutional] / [connected] layer without batch norm gains it, with
    upstream's normalize_layer values: scales 1, rolling mean 0 and rolling variance 0 (calloc)."""
    cfg, weights, out = _three(f, "normalize")
    net = _net(cfg, weights, batch=None)
    for l in net.layers:
        if (_is_conv(l) and l.share_layer is None or _is_connected(l)) and not l.bn:
            _add_batchnorm(l)
        elif _kind(l) in ("gru", "lstm") and l.bn:  # upstream: fresh batch norm on every inner layer
            for inner in l._layers():
                _add_batchnorm(inner)
    net.save_weights(out)


def _add_batchnorm(l) -> None:
    n = l.biases.numel()
    l.scales = torch.nn.Parameter(torch.ones(n))
    l.register_buffer("rolling_mean", torch.zeros(n))
    l.register_buffer("rolling_variance", torch.zeros(n))
    l.bn = True
    return 0


def oneoff(f: Flags) -> int:
    """upstream's oneoff (a conversion made once for a 9418-class model): the weights file's layer
    n-2 holds 9372 filters, read into this cfg's layer n-2 from filter 5 on (its biases and
    weights; batch-norm arrays from 0), then the first third of its filters copied over the second
    and third thirds; seen and iteration reset."""
    cfg, weights, out = _three(f, "oneoff")
    from .outputs.weights import read_header
    net = _net(cfg, None, batch=None).initialize()  # what the file does not hold keeps a fresh init, as upstream's
    l = net.layers[-2]
    stored, shift = 9372, 5
    if not _is_conv(l) or l.n < stored + shift:
        from .cfg import CfgError
        raise CfgError(l.path, l.line, "filters", f"oneoff needs layer {l.index} (the one before last) to be a "
                       f"[convolutional] with at least {stored + shift} filters (it reads {stored} from filter "
                       f"{shift} on)")
    if weights:
        _load_oneoff(net, l, weights, stored, shift, read_header)
    n3, c = l.n // 3, l.c
    b, w = _arr(l.biases), _arr(l.weights)
    b[n3:2 * n3] = b[:n3]
    b[2 * n3:3 * n3] = b[:n3]
    w[n3 * c:2 * n3 * c] = w[:n3 * c]
    w[2 * n3 * c:3 * n3 * c] = w[:n3 * c]
    _put(l.biases, b)
    _put(l.weights, w)
    print(l.n)
    net.seen = 0
    net.save_weights(out)
    return 0


def _load_oneoff(net, target, path, stored, shift, read_header) -> None:
    from .outputs.weights import WeightsError
    try:
        with open(path, "rb") as fh:
            header = read_header(fh, path)
            data = np.frombuffer(fh.read(), dtype="<f4")
    except OSError as e:
        raise WeightsError(f"{path}: cannot read weights file: {e.strerror or e}") from None
    pos = 0

    def take(n):
        nonlocal pos
        a = data[pos:pos + n]
        pos += n
        return a.copy() if len(a) == n else None

    for l in net.layers:
        if l is not target:
            arrays = l.load_arrays() if not l.dontload else []
            vals = [take(t.numel()) for t in arrays]
            if any(v is None for v in vals):
                break
            for t, v in zip(arrays, vals):
                _put(t, v)
            continue
        c_in = l.weights[0].numel()
        b, w = _arr(l.biases), _arr(l.weights)
        bb = take(stored)
        if bb is None:
            break
        b[shift:shift + stored] = bb
        if l.bn and not l.dontloadscales:
            for t in (l.scales, l.rolling_mean, l.rolling_variance):
                a, v = _arr(t), take(stored)
                if v is None:
                    break
                a[:stored] = v
                _put(t, a)
        ww = take(stored * c_in)
        if ww is not None:
            w[shift * c_in:(shift + stored) * c_in] = ww
        _put(l.biases, b)
        _put(l.weights, w)
    net.seen = header.seen


def partial(f: Flags) -> int:
    """partial CFG WEIGHTS OUT N: the first N layers' weights, seen reset (a pretrained backbone)."""
    pos = f.positional("partial")[1:]
    if len(pos) < 4:
        raise _usage("partial CFG WEIGHTS OUTPUT N")
    cfgfile, weightfile, outfile = pos[:3]
    cutoff = c_atoi(pos[3])
    from .network import build_network
    net = build_network(cfgfile, batch=1)
    if weightfile:
        net.load_weights(weightfile, cutoff=cutoff)
    net.seen = 0
    net.save_weights(outfile, cutoff=cutoff)
    print(f"Saved {min(cutoff, len(net.layers))} layers to {outfile}")
    return 0


def _three(f: Flags, name: str) -> tuple[str, str | None, str]:
    pos = f.positional(name)[1:]
    if len(pos) < 3:
        raise _usage(f"{name} CFG WEIGHTS OUT")
    return pos[0], pos[1] or None, pos[2]


# ------------------------------------------------------------------------------ what it prints

def _statistics_line(name: str, a: np.ndarray) -> str:
    """print_statistics: MSE (the root of the mean square), mean and variance, float sums in order."""
    a = np.asarray(a, dtype=F32)
    n = F32(len(a))
    mean = np.cumsum(a, dtype=F32)[-1] / n
    var = np.cumsum((a - mean) * (a - mean), dtype=F32)[-1] / n
    mse = np.sqrt(np.float64(np.cumsum(a * a, dtype=F32)[-1] / n))
    return f"{name}MSE: {float(F32(mse)):.6f}, Mean: {float(mean):.6f}, Variance: {float(var):.6f}"


def statistics(f: Flags) -> int:
    pos = f.positional("statistics")[1:]
    if len(pos) < 2:
        raise _usage("statistics CFG WEIGHTS")
    net = _net(pos[0], pos[1] or None, batch=None)
    for i, l in enumerate(net.layers):
        if _is_connected(l) and l.bn:
            print(f"Connected Layer {i}")
            _print_connected_statistics(l)
        if _kind(l) in _STAT_NAMES and l.bn:
            print(f"{_kind(l).upper()} Layer {i}")
            for label, inner in zip(_STAT_NAMES[_kind(l)], l._layers()):
                print(label)
                _print_connected_statistics(inner)
        print()
    return 0


# statistics_net's labels of the inner layers, in the recurrent layers' own order
_STAT_NAMES = {"gru": ("Input Z", "Input R", "Input H", "State Z", "State R", "State H"),
               "lstm": ("wf", "wi", "wg", "wo", "uf", "ui", "ug", "uo")}


def _print_connected_statistics(l) -> None:
    """statistics_connected_layer."""
    outputs = l.biases.numel()
    if l.bn:
        print(_statistics_line("Scales ", _arr(l.scales)))
    print(_statistics_line("Biases ", _arr(l.biases)))
    # upstream passes l.outputs as the count: the first `outputs` weights only
    print(_statistics_line("Weights ", _arr(l.weights)[:outputs]))


def layer_ops(l) -> int:
    """upstream's operations(): 2 x multiply-adds of convolutional (c not divided by groups, as
    upstream counts) and connected layers; a recurrent layer answers for its inner layers."""
    if _is_conv(l):
        return 2 * l.n * l.size * l.size * l.c * l.out_h * l.out_w
    if _is_connected(l):
        return 2 * l.inputs * l.outputs
    if _kind(l) in ("rnn", "gru", "lstm"):  # their inner connected layers
        return sum(2 * i.inputs * i.outputs for i in l._layers())
    return 0


def ops(f: Flags) -> int:
    pos = f.positional("ops")[1:]
    if not pos:
        raise _usage("ops CFG")
    net = _net(pos[0], None, batch=None)
    total = sum(layer_ops(l) for l in net.layers)
    print(f"Floating Point Operations: {total}")
    print(f"Floating Point Operations: {float(F32(total) / F32(1e9)):.2f} Bn")
    return 0


def speed(f: Flags) -> int:
    """N forward passes (default 1000) of a blank image at batch 1."""
    from .devices import select_device
    pos = f.positional("speed")[1:]
    if not pos:
        raise _usage("speed CFG [N]")
    tics = c_atoi(pos[1]) if len(pos) > 1 else 0
    tics = tics or 1000
    from .network import load_network
    net = load_network(pos[0], None, device=select_device(False, None, f.gpu_index))
    o = net.options
    x = torch.zeros(1, o.channels, o.height, o.width, device=net.device)
    if net.device.type == "cpu":
        x = x.contiguous(memory_format=torch.channels_last)
    start = time.perf_counter()
    with torch.inference_mode():
        for _ in range(tics):
            net(x)
        if net.device.type == "cuda":
            torch.cuda.synchronize()
    t = time.perf_counter() - start
    print(f"\n{tics} evals, {t:f} Seconds")
    print(f"Speed: {t / tics:f} sec/eval")
    print(f"Speed: {tics / t if t else float('inf'):f} Hz")
    return 0


# ----------------------------------------------------------------------------- images of things

def _normalized(a: np.ndarray) -> np.ndarray:
    """normalize_image: to [0, 1] by min and max (0..1 kept where max - min < 1e-9)."""
    a = np.asarray(a, dtype=F32)
    lo, hi = a.min(), a.max()
    if hi - lo < 1e-9:
        lo, hi = F32(0), F32(1)
    return (a - lo) / (hi - lo)


def filters_image(l) -> np.ndarray:
    """upstream's show_images(get_weights(l)): each filter normalized on its own, stacked down
    the image 1 pixel apart (3-channel filters in colour; otherwise each channel side by side),
    then the whole normalized again. (C, H, W)."""
    w = _filters(l)
    n, c, s, _ = w.shape
    ims = [_normalized(w[i]) for i in range(n)]
    colour = c == 3
    width = s if colour else (s + 1) * c - 1
    out = np.zeros((3 if colour else 1, (s + 1) * n - 1, width), F32)
    for i, im in enumerate(ims):
        y = i * (s + 1)
        if colour:
            out[:, y:y + s, :s] = im
        else:
            for j in range(c):
                out[0, y:y + s, j * (s + 1):j * (s + 1) + s] = im[j]
    return _normalized(out)


def output_image(l) -> np.ndarray:
    """collapse_image_layers(l.output, 1): the channels of the layer's output stacked down the
    image, 1 pixel apart (zeros before any forward pass, as upstream's calloc'ed l.output)."""
    h = (l.out_h + 1) * l.out_c - 1
    return np.zeros((1, h, l.out_w), F32)


def _show_or_save(im: np.ndarray, name: str, shown: list) -> None:
    """upstream's show_image: a window where there is a display; else the picture saved as
    NAME.jpg (what upstream's build without OpenCV does, saying so)."""
    from . import image as imagelib
    from .display import show_image
    if not show_image(name, im):
        print(f"No display, saving to {name}.jpg instead", file=sys.stderr)
        imagelib.save_image(im, name)
    else:
        shown.append(name)


def visualize(f: Flags) -> int:
    from . import image as imagelib
    from .display import wait_key
    pos = f.positional("visualize")[1:]
    if not pos:
        raise _usage("visualize CFG [WEIGHTS]")
    net = _net(pos[0], pos[1] if len(pos) > 1 and pos[1] else None, batch=None)
    shown: list = []
    for i, l in enumerate(net.layers):
        if _is_conv(l) and l.share_layer is None:
            name = f"Layer {i}"
            imagelib.save_image(filters_image(l), name)  # show_images always saves the filters
            _show_or_save(filters_image(l), name, shown)
            _show_or_save(output_image(l), f"{name}: Output", shown)
    if shown:
        wait_key(0)
    return 0


def imtest(f: Flags) -> int:
    """test_resize: the image's L2 norm, and it shown (or saved) as Original, Gray and four colour
    distortions C1-C4."""
    from . import image as imagelib
    from .display import wait_key
    pos = f.positional("imtest")[1:]
    if not pos:
        raise _usage("imtest IMAGE")
    im = imagelib.load_image_color(pos[0])
    mag = np.sqrt(np.float64(np.cumsum(im.reshape(-1) * im.reshape(-1), dtype=F32)[-1]))
    print(f"L2 Norm: {float(F32(mag)):f}")
    gray = grayscale(im)
    shown: list = []
    for name, pic in (("Original", im), ("Gray", gray),
                      ("C1", imagelib.distort_image(im, .1, 1.5, 1.5)),
                      ("C2", imagelib.distort_image(im, -.1, .66666, .66666)),
                      ("C3", imagelib.distort_image(im, .1, 1.5, .66666)),
                      ("C4", imagelib.distort_image(im, .1, .66666, 1.5))):
        _show_or_save(pic, name, shown)
    if shown:
        wait_key(0)
    return 0


def grayscale(im: np.ndarray) -> np.ndarray:
    """grayscale_image: .299 R + .587 G + .114 B, float sums in upstream's order, one channel."""
    im = np.asarray(im, dtype=F32)
    out = np.zeros(im.shape[1:], F32)
    for k, s in enumerate((F32(.299), F32(.587), F32(.114))):
        out += s * im[k]
    return out[None]


COMMANDS = {"average": average, "partial": partial, "rescale": rescale, "rgbgr": rgbgr, "reset": reset,
            "normalize": normalize, "denormalize": denormalize, "oneoff": oneoff, "statistics": statistics,
            "ops": ops, "speed": speed, "visualize": visualize, "imtest": imtest, "test": imtest}
