"""Upstream: make_sam_layer / forward_sam_layer (src/sam_layer.c), parse_sam (src/parser.c).

Spatial attention: out = input * from (elementwise; both the same shape), then the
activation through upstream's activate_array (swish / mish give zeros there, see
activation.py).
"""
from __future__ import annotations

from . import register
from .activation import activate_array, read_array_activation
from .base import BuildContext, Layer


@register("sam")
class Sam(Layer):
    type_name = "sam"
    type_id = 16

    def __init__(self, ctx: BuildContext):
        super().__init__(ctx)
        s = ctx.section
        index, line = ctx.required_ref("from")
        self.refs = [index]
        src = ctx.layers[index]
        if (src.out_w, src.out_h, src.out_c) != (ctx.w, ctx.h, ctx.c):
            raise s.error("from", f"layer {index} outputs {src.out_w}x{src.out_h}x{src.out_c} but the input is "
                                  f"{ctx.w}x{ctx.h}x{ctx.c}: [sam] needs the same shape", line)
        self.set_output(src.out_w, src.out_h, src.out_c)
        self.inputs = self.outputs
        read_array_activation(self, s)

    def forward(self, x, outputs):
        src = outputs[self.refs[0]]
        y = self.as_image(x) * src.reshape(src.shape[0], self.out_c, self.out_h, self.out_w)
        return activate_array(y, self.activation)
