"""Upstream: make_scale_channels_layer / forward_scale_channels_layer
(src/scale_channels_layer.c), parse_scale_channels (src/parser.c).

Squeeze-and-excitation scaling: the input is 1x1xC and multiplies every channel of the
`from` layer's output (scale_wh=1: the input is WxHx1 and multiplies every position of
all channels), then the activation through upstream's activate_array.
"""
from __future__ import annotations

from . import register
from .activation import activate_array, read_array_activation
from .base import BuildContext, Layer


@register("scale_channels")
class ScaleChannels(Layer):
    type_name = "scale_channels"
    type_id = 15

    def __init__(self, ctx: BuildContext):
        super().__init__(ctx)
        s = ctx.section
        index, line = ctx.required_ref("from")
        self.refs = [index]
        self.scale_wh = s.int("scale_wh", 0)
        src = ctx.layers[index]
        if self.scale_wh:
            if ctx.c != 1 or (src.out_w, src.out_h) != (ctx.w, ctx.h):
                raise s.error("from", f"with scale_wh=1 the input must be {src.out_w}x{src.out_h}x1 (layer {index}'s "
                                      f"size), not {ctx.w}x{ctx.h}x{ctx.c}", line)
        elif ctx.w != 1 or ctx.h != 1 or src.out_c != ctx.c:
            raise s.error("from", f"the input must be 1x1x{src.out_c} (layer {index}'s channels), "
                                  f"not {ctx.w}x{ctx.h}x{ctx.c}", line)
        self.set_output(src.out_w, src.out_h, src.out_c)
        self.inputs = self.outputs
        read_array_activation(self, s)

    def forward(self, x, outputs):
        src = outputs[self.refs[0]]
        src = src.reshape(src.shape[0], self.out_c, self.out_h, self.out_w)
        y = src * self.as_image(x)  # (N, C, 1, 1) or (N, 1, H, W) broadcast
        return activate_array(y, self.activation)
