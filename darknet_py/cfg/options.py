"""Upstream: parse_net_options (src/parser.c).

Every `[net]` key upstream reads, typed, with upstream's defaults, including the keys that
only training uses. `batch` here is the cfg's batch (images per iteration) and
`mini_batch` is upstream's net->batch after the division by subdivisions.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .parser import Section

POLICIES = ("constant", "step", "exp", "poly", "steps", "sigmoid", "random", "sgdr")


@dataclass
class NetOptions:
    path: str = "<cfg>"
    line: int = 0
    batch: int = 1
    subdivisions: int = 1
    mini_batch: int = 1  # batch // subdivisions * time_steps (upstream's net->batch)
    width: int = 0
    height: int = 0
    channels: int = 0
    inputs: int = 0
    max_batches: int = 0
    learning_rate: float = 0.001
    learning_rate_min: float = 0.00001
    sgdr_cycle: int = 0
    sgdr_mult: int = 2
    momentum: float = 0.9
    decay: float = 0.0001
    time_steps: int = 1
    track: int = 0
    augment_speed: int = 2
    sequential_subdivisions: int = 1
    try_fix_nan: int = 0
    weights_reject_freq: int = 0
    equidistant_point: int = 0
    badlabels_rejection_percentage: float = 0.0
    num_sigmas_reject_badlabels: float = 0.0
    ema_alpha: float = 0.0
    use_cuda_graph: int = 0
    loss_scale: float = 1.0
    dynamic_minibatch: int = 0
    optimized_memory: int = 0
    workspace_size_limit_MB: float = 1024.0
    adam: int = 0
    B1: float = 0.9
    B2: float = 0.999
    eps: float = 0.000001
    max_crop: int = 0
    min_crop: int = 0
    flip: int = 1
    blur: int = 0
    gaussian_noise: int = 0
    mixup: int = 0  # upstream's encoding: 1 mixup, 2 cutmix, 3 mosaic, 4 mosaic+cutmix
    cutmix: int = 0
    mosaic: int = 0
    letter_box: int = 0
    mosaic_bound: int = 0
    contrastive: int = 0
    contrastive_jit_flip: int = 0
    contrastive_color: int = 0
    unsupervised: int = 0
    label_smooth_eps: float = 0.0
    resize_step: float = 32.0
    attention: int = 0
    adversarial_lr: float = 0.0
    max_chart_loss: float = 20.0
    angle: float = 0.0
    aspect: float = 1.0
    saturation: float = 1.0
    exposure: float = 1.0
    hue: float = 0.0
    power: float = 4.0
    policy: str = "constant"
    burn_in: int = 0
    step: int = 1
    scale: float = 1.0
    steps: list[int] = field(default_factory=list)
    scales: list[float] = field(default_factory=list)
    seq_scales: list[float] = field(default_factory=list)
    gamma: float = 1.0

    @classmethod
    def from_section(cls, s: Section) -> "NetOptions":
        o = cls(path=s.path, line=s.line)
        o.max_batches = s.int("max_batches", 0)
        o.batch = s.int("batch", 1)
        o.learning_rate = s.float("learning_rate", 0.001)
        o.learning_rate_min = s.float("learning_rate_min", 0.00001)
        o.sgdr_cycle = s.int("sgdr_cycle", o.max_batches)
        o.sgdr_mult = s.int("sgdr_mult", 2)
        o.momentum = s.float("momentum", 0.9)
        o.decay = s.float("decay", 0.0001)
        o.subdivisions = s.int("subdivisions", 1)
        if o.subdivisions < 1:
            raise s.error("subdivisions", "must be >= 1")
        if o.batch < 1:
            raise s.error("batch", "must be >= 1")
        o.time_steps = s.int("time_steps", 1)
        o.track = s.int("track", 0)
        o.augment_speed = s.int("augment_speed", 2)
        o.sequential_subdivisions = min(s.int("sequential_subdivisions", o.subdivisions), o.subdivisions)
        o.try_fix_nan = s.int("try_fix_nan", 0)
        o.mini_batch = (o.batch // o.subdivisions) * o.time_steps
        o.weights_reject_freq = s.int("weights_reject_freq", 0)
        o.equidistant_point = s.int("equidistant_point", 0)
        o.badlabels_rejection_percentage = s.float("badlabels_rejection_percentage", 0.0)
        o.num_sigmas_reject_badlabels = s.float("num_sigmas_reject_badlabels", 0.0)
        o.ema_alpha = s.float("ema_alpha", 0.0)
        o.use_cuda_graph = s.int("use_cuda_graph", 0)
        o.loss_scale = s.float("loss_scale", 1.0)
        o.dynamic_minibatch = s.int("dynamic_minibatch", 0)
        o.optimized_memory = s.int("optimized_memory", 0)
        o.workspace_size_limit_MB = s.float("workspace_size_limit_MB", 1024.0)
        o.adam = s.int("adam", 0)
        if o.adam:
            o.B1 = s.float("B1", 0.9)
            o.B2 = s.float("B2", 0.999)
            o.eps = s.float("eps", 0.000001)
        o.height = s.int("height", 0)
        o.width = s.int("width", 0)
        o.channels = s.int("channels", 0)
        o.inputs = s.int("inputs", o.height * o.width * o.channels)
        o.max_crop = s.int("max_crop", o.width * 2)
        o.min_crop = s.int("min_crop", o.width)
        o.flip = s.int("flip", 1)
        o.blur = s.int("blur", 0)
        o.gaussian_noise = s.int("gaussian_noise", 0)
        o.mixup = s.int("mixup", 0)
        o.cutmix = s.int("cutmix", 0)
        o.mosaic = s.int("mosaic", 0)
        if o.mosaic and o.cutmix:
            o.mixup = 4
        elif o.cutmix:
            o.mixup = 2
        elif o.mosaic:
            o.mixup = 3
        o.letter_box = s.int("letter_box", 0)
        o.mosaic_bound = s.int("mosaic_bound", 0)
        o.contrastive = s.int("contrastive", 0)
        o.contrastive_jit_flip = s.int("contrastive_jit_flip", 0)
        o.contrastive_color = s.int("contrastive_color", 0)
        o.unsupervised = s.int("unsupervised", 0)
        if o.contrastive and (o.batch // o.subdivisions) < 2:
            raise s.error("contrastive", "mini_batch size (batch/subdivisions) must be > 1 for contrastive loss")
        o.label_smooth_eps = s.float("label_smooth_eps", 0.0)
        o.resize_step = s.float("resize_step", 32.0)
        o.attention = s.int("attention", 0)
        o.adversarial_lr = s.float("adversarial_lr", 0.0)
        o.max_chart_loss = s.float("max_chart_loss", 20.0)
        o.angle = s.float("angle", 0.0)
        o.aspect = s.float("aspect", 1.0)
        o.saturation = s.float("saturation", 1.0)
        o.exposure = s.float("exposure", 1.0)
        o.hue = s.float("hue", 0.0)
        o.power = s.float("power", 4.0)
        for key in ("width", "height", "channels", "inputs", "batch", "max_batches", "time_steps"):
            if getattr(o, key) < 0:
                raise s.error(key, f"must not be negative, got {getattr(o, key)}")
        if o.time_steps < 1:
            raise s.error("time_steps", "must be >= 1")
        if not o.inputs and not (o.height and o.width and o.channels):
            raise s.error(None, "no input size: set width, height and channels (or inputs)")
        o.policy = s.choice("policy", POLICIES, "constant")
        o.burn_in = s.int("burn_in", 0)
        if o.policy == "step":
            o.step = s.int("step", 1)
            o.scale = s.float("scale", 1.0)
        elif o.policy in ("steps", "sgdr"):
            if o.policy == "steps" and not (s.has("steps") and s.has("scales")):
                raise s.error("steps", "policy=steps needs both steps= and scales=")
            if s.has("steps"):
                o.steps = s.ints("steps")
                n = len(o.steps)
                # upstream reads as many scales / seq_scales as there are steps
                o.scales = _fill(s, "scales", n)
                o.seq_scales = _fill(s, "seq_scales", n)
        elif o.policy == "exp":
            o.gamma = s.float("gamma", 1.0)
        elif o.policy == "sigmoid":
            o.gamma = s.float("gamma", 1.0)
            o.step = s.int("step", 1)
        return o


def _fill(s: Section, key: str, n: int) -> list[float]:
    if not s.has(key):
        return [1.0] * n
    values = s.floats(key)
    if len(values) < n:
        raise s.error(key, f"has {len(values)} values but steps has {n}")
    return values[:n]
