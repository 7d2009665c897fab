"""An equivalent, faster ONNX graph of the generator, written from its Keras weights.

The plain tf2onnx graph spends most of its time in ConvTranspose (and in NHWC<->NCHW
transposes around every convolution) and in the final one-channel convolution, which
onnxruntime runs as a matrix-vector product over a 134 MB im2col buffer per image.
This graph computes the same function with dense convolutions only:

1. Dense: its columns are permuted so the product comes out in CHW order; the reshape to
   [N, C, s, s] is then free (no transpose).
2. Each 4x4 stride-2 "same" Conv2DTranspose becomes four 2x2 convolutions, one per output
   phase (even/odd row x even/odd column), with the LeakyReLU fused into each (the
   sub-pixel form). It does exactly the transposed convolution's multiply-adds, as dense
   convolutions. With o = 2i + k - 1 (Keras' padding of 1 on each side), even outputs 2m
   take input rows m-1, m with kernel taps 3, 1 and odd outputs 2m+1 take rows m, m+1 with
   taps 2, 0.
   Between two upsampling layers the phases are interleaved channels-last: concatenated,
   transposed to NHWC, the row/column phase axes swapped (moves of whole C-channel pixels)
   and transposed back. onnxruntime turns the first transpose into its NCHWc reorder with
   a channels-last output, and int8 convolutions run NHWC anyway; a DepthToSpace in NCHW
   moves single floats instead (measured slower, docs/benchmarks.md).
3. The last upsampling layer's phases are never interleaved: the final 4x4 "same"
   convolution (pad 1 before, 2 after) is rewritten on the coarse grid as a 3x3 convolution
   from the 4 x C phase channels to the 4 output phases, and that one as a 4x4 stride-2
   convolution with 16 outputs (4 output phases x 2 x 2 neighbouring positions), one per
   phase tensor, summed. 16 outputs fill the CPU kernels' 16-channel blocks where 4 left
   three quarters of the work padding; tanh and two small DepthToSpace finish
   [N, 1, S, S].
4. With --g-refine, the last layer's phases are interleaved too, its 3x3 convolution (+
   LeakyReLU) runs on the full-size tensor, and SpaceToDepth turns its 2x2 blocks back into
   the phase channels (2a + b) * C + c that step 3's convolution reads, as one tensor.
5. A bilinear resize-convolution (--g-upsample bilinear, models.BilinearConv2x) is already four
   phase convolutions: 3x3 ones over its input padded by one edge-replicated pixel (one Pad), its
   kernel's taps mixed per phase by models.bilinear_conv_phases; the rest as for the others.
6. With --g-supersample, G's last upsampling layer is one more of the same kind and the
   image it draws at twice the size is average-pooled 2x2 (one AveragePool) at the end.

`tests/export/test_optimize.py` checks the graph against Keras on random weights and the
export gate checks it on the trained ones.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from cxr_export.errors import UnsupportedGenerator  # noqa: F401  (re-exported)
from cxr_runtime.contract import CHUNK_INPUT, INPUT_NAME, OPSET, OUTPUT_NAME

# rows (or columns) of the 4-tap transposed kernel used by each output phase, in window order
_PHASE_TAPS = {0: (3, 1), 1: (2, 0)}
# padding (before, after) of each phase's 2x2 window
_PHASE_PADS = {0: (1, 0), 1: (0, 1)}


def _layers(generator):
    """(dense, [conv_transpose...], refine conv or None, final_conv, slope) of a paper-topology
    generator (--g-refine: a 3x3 'same' convolution named g_refine before the final one)."""
    from cxr_training.tfenv import import_tf

    _, keras = import_tf()
    L = keras.layers
    from cxr_training.models import BilinearConv2x, ResizeConv2x

    dense = [layer for layer in generator.layers if isinstance(layer, L.Dense)]
    ups = [layer for layer in generator.layers if isinstance(layer, (L.Conv2DTranspose, ResizeConv2x, BilinearConv2x))]
    convs = [layer for layer in generator.layers if type(layer) is L.Conv2D]
    refine = next((layer for layer in convs if layer.name == "g_refine"), None)
    if refine is not None:
        convs.remove(refine)
        if refine.kernel_size != (3, 3) or refine.strides != (1, 1) or refine.padding != "same":
            raise UnsupportedGenerator(f"{refine.name}: only a 3x3 'same' refinement convolution is rewritten")
    acts = [layer for layer in generator.layers if isinstance(layer, L.LeakyReLU)]
    if len(dense) != 1 or len(convs) != 1 or not ups or len(acts) != len(ups) + 1 + (refine is not None):
        raise UnsupportedGenerator("not the paper's generator topology (Dense, Conv2DTranspose or ResizeConv2x x n, "
                                   "Conv2D)")
    for u in ups:
        if isinstance(u, (ResizeConv2x, BilinearConv2x)):  # always rewritten (a 4x4 transposed conv, 3x3 phases)
            continue
        if u.kernel_size != (4, 4) or u.strides != (2, 2) or u.padding != "same":
            raise UnsupportedGenerator(f"{u.name}: only 4x4 stride-2 'same' transposed convolutions are rewritten")
    final = convs[0]
    if final.kernel_size != (4, 4) or final.strides != (1, 1) or final.padding != "same" or final.filters != 1:
        raise UnsupportedGenerator(f"{final.name}: only a 4x4 'same' one-channel output convolution is rewritten")
    if int(generator.output_shape[1]) % 4:
        raise UnsupportedGenerator("the image size must be a multiple of 4 (the output convolution runs on a 2x2 "
                                   "block grid of the last layer's phases)")
    slopes = {float(a.negative_slope) for a in acts}
    if len(slopes) != 1:
        raise UnsupportedGenerator("LeakyReLU slopes differ between layers")
    return dense[0], ups, refine, final, slopes.pop()


def _supersample_pool(generator) -> bool:
    """Whether G ends with --g-supersample's 2x2 average pooling of its tanh image."""
    from cxr_training.tfenv import import_tf

    _, keras = import_tf()
    pools = [layer for layer in generator.layers if isinstance(layer, keras.layers.AveragePooling2D)]
    if not pools:
        return False
    if len(pools) > 1 or pools[0] is not generator.layers[-1] or tuple(pools[0].pool_size) != (2, 2) \
            or tuple(pools[0].strides) != (2, 2) or pools[0].padding != "valid":
        raise UnsupportedGenerator("only one 2x2 average pooling of the output image is rewritten")
    return True


def _noise_layers(generator, ups) -> list:
    """The PixelNoise layer after each upsampling layer (--g-noise), in order, or []."""
    from cxr_training.models import PixelNoise

    noises = [layer for layer in generator.layers if isinstance(layer, PixelNoise)]
    if noises and [n.index for n in noises] != list(range(1, len(ups) + 1)):
        raise UnsupportedGenerator("noise layers must follow every upsampling layer, one each")
    return noises


def _transposed_weights(layer) -> tuple[np.ndarray, np.ndarray]:
    """(kernel (4, 4, Cout, Cin), bias) of a 4x4 stride-2 transposed convolution; a resize
    convolution (models.ResizeConv2x) gives the transposed kernel it is computed as."""
    from cxr_training.models import ResizeConv2x, resize_conv_as_transposed

    kernel, bias = (np.asarray(v.numpy(), np.float32) for v in layer.weights)
    if isinstance(layer, ResizeConv2x):
        kernel = np.asarray(resize_conv_as_transposed(kernel), np.float32)
    return kernel, bias


def _phase_weight(kernel: np.ndarray, a: int, b: int) -> np.ndarray:
    """ONNX Conv weight [Cout, Cin, 2, 2] of output phase (a, b) of a Keras ConvT kernel (4, 4, Cout, Cin)."""
    rows, cols = _PHASE_TAPS[a], _PHASE_TAPS[b]
    w = kernel[np.ix_(rows, cols)]  # (2, 2, Cout, Cin)
    return np.ascontiguousarray(w.transpose(2, 3, 0, 1))


def _final_weight(kernel: np.ndarray, channels: int) -> np.ndarray:
    """Coarse-grid weight [4, 4 * C, 3, 3] of the final 4x4 conv (Keras kernel (4, 4, C, 1)).

    Output phase p = 2a + b; input channel (2a' + b') * C + c; fine tap d with
    a + d - 1 = 2q + a' sits at coarse offset q + 1.
    """
    w = np.zeros((4, 4 * channels, 3, 3), np.float32)
    for a in (0, 1):
        for b in (0, 1):
            for dy in range(4):
                qy, ay = divmod(a + dy - 1, 2)
                for dx in range(4):
                    qx, ax = divmod(b + dx - 1, 2)
                    block = (2 * ay + ax) * channels
                    w[2 * a + b, block : block + channels, qy + 1, qx + 1] += kernel[dy, dx, :, 0]
    return w


def _stride2_weight(w: np.ndarray) -> np.ndarray:
    """[4Q, C, 4, 4] weight of a 4x4 stride-2 convolution (pads 1) equivalent to a 3x3 one
    (pads 1) with weight [Q, C, 3, 3]: output channel (2e + f) * Q + q at (s, t) is output q
    of the 3x3 convolution at (2s + e, 2t + f), whose window starts at row 2s + e - 1."""
    q_out, c = w.shape[:2]
    out = np.zeros((4 * q_out, c, 4, 4), np.float32)
    for e in (0, 1):
        for f in (0, 1):
            out[(2 * e + f) * q_out : (2 * e + f + 1) * q_out, :, e : e + 3, f : f + 3] = w
    return out


def _interleave_nhwc(phases: str, out: str, channels: int, size: int, const) -> list:
    """Nodes that turn [N, 4C, H, W] phases (channel (2a + b) * C + c) into [N, C, 2H, 2W] with
    out[n, c, 2i + a, 2j + b] = phases[n, (2a + b) * C + c, i, j], moving whole pixels (C floats)."""
    shape6 = const(f"{out}_shape6", np.array([-1, size, size, 2, 2, channels], np.int64))
    shape4 = const(f"{out}_shape4", np.array([-1, 2 * size, 2 * size, channels], np.int64))
    return [
        helper.make_node("Transpose", [phases], [f"{out}_nhwc"], perm=[0, 2, 3, 1], name=f"{out}_to_nhwc"),
        helper.make_node("Reshape", [f"{out}_nhwc", shape6], [f"{out}_split"], name=f"{out}_split"),
        # [N, H, W, a, b, C] -> [N, H, a, W, b, C]
        helper.make_node("Transpose", [f"{out}_split"], [f"{out}_rows"], perm=[0, 1, 3, 2, 4, 5],
                         name=f"{out}_interleave"),
        helper.make_node("Reshape", [f"{out}_rows", shape4], [f"{out}_nhwc2"], name=f"{out}_merge"),
        helper.make_node("Transpose", [f"{out}_nhwc2"], [out], perm=[0, 3, 1, 2], name=f"{out}_to_nchw"),
    ]


CHUNK = 4  # images per pass of the convolution layers in the chunked graph (fastest on CPU, docs/benchmarks.md)


def build_optimized(generator, opset: int = OPSET, chunk: int = CHUNK) -> onnx.ModelProto:
    """The sub-pixel NCHW graph of a paper-topology Keras generator.

    chunk > 0: the Dense layer runs on the whole batch and the convolution layers in a Loop,
    `chunk` images per pass (the batch padded to a multiple of it, the padding dropped at the
    end). The Dense layer's 105 MB weight matrix is then read once per call instead of once
    per `chunk` images, while the convolutions keep small, cache-resident activations.
    `chunk` is also an optional graph input (an initializer listed as input): a runtime may
    pass another value, e.g. the whole batch on a GPU. chunk = 0: no loop.
    """
    from cxr_training.models import BilinearConv2x, bilinear_conv_phases, noise_projection

    dense, ups, refine, final, slope = _layers(generator)
    latent_dim = int(generator.input_shape[-1])
    out_size = int(generator.output_shape[1])
    pooled = _supersample_pool(generator)
    size = 2 * out_size if pooled else out_size  # the size G draws at
    base = size // 2 ** len(ups)
    c0 = int(dense.units) // (base * base)
    if chunk < 0:
        raise ValueError("chunk must be >= 0")

    head_inits, body_inits, head, body = [], [], [], []

    def constant(inits: list):
        def add(name, array):
            inits.append(numpy_helper.from_array(np.ascontiguousarray(array, np.float32)
                                                 if array.dtype != np.int64 else array, name))
            return name
        return add

    # the Dense layer (and the loop's bookkeeping) are the head, the convolution layers the body
    head_const, body_const = constant(head_inits), constant(body_inits)

    # 1. Dense, columns permuted from HWC to CHW order, + LeakyReLU, reshape to NCHW
    z = "z_padded" if chunk else INPUT_NAME
    w, bias = (v.numpy() for v in dense.weights)
    perm = np.arange(base * base * c0).reshape(base, base, c0).transpose(2, 0, 1).ravel()
    head.append(helper.make_node("Gemm", [z, head_const("dense_w", w[:, perm]), head_const("dense_b", bias[perm])],
                                 ["dense"], name="dense"))
    head.append(helper.make_node("LeakyRelu", ["dense"], ["dense_act"], alpha=slope, name="dense_lrelu"))
    head.append(helper.make_node("Reshape", ["dense_act", head_const("shape0", np.array([-1, c0, base, base], np.int64))],
                                 ["x0"], name="to_nchw"))
    x = "x0"
    if chunk:  # the loop body starts with its slice of x0
        body_const("chunk_axis", np.array([0], np.int64))
        body += [
            helper.make_node("Unsqueeze", ["pass", "chunk_axis"], ["pass_1d"], name="pass_1d"),
            helper.make_node("Mul", ["pass_1d", "chunk_pos"], ["chunk_start"], name="chunk_start"),
            helper.make_node("Add", ["chunk_start", "chunk_pos"], ["chunk_stop"], name="chunk_stop"),
            helper.make_node("Slice", ["x0", "chunk_start", "chunk_stop", "chunk_axis"], ["x0_chunk"], name="chunk"),
            helper.make_node("Identity", ["cond"], ["cond_out"], name="cond_out"),
        ]
        x = "x0_chunk"

    # 1b. --g-noise: each upsampling layer's noise, from z, one tensor per output phase (the
    #     projection's columns of that phase's pixels), computed on the whole batch
    noises = _noise_layers(generator, ups)
    if noises:
        head_const("sqrt2", np.array(np.sqrt(2.0), np.float32))
    for li, layer in enumerate(noises, start=1):
        side = base * 2**li
        projection, phase = noise_projection(layer.index, latent_dim, side * side)
        for a in (0, 1):
            for bb in (0, 1):
                cols = ((2 * np.arange(side // 2)[:, None] + a) * side + 2 * np.arange(side // 2)[None, :] + bb).ravel()
                name = f"noise{li}_p{a}{bb}"
                head.append(helper.make_node("Gemm", [z, head_const(f"{name}_w", projection[:, cols]),
                                                      head_const(f"{name}_b", phase[cols])], [f"{name}_arg"],
                                             name=f"{name}_proj"))
                head.append(helper.make_node("Sin", [f"{name}_arg"], [f"{name}_sin"], name=f"{name}_sin"))
                head.append(helper.make_node("Mul", [f"{name}_sin", "sqrt2"], [name], name=f"{name}_scale"))

    # 2. each transposed convolution as four phase convolutions (+ fused LeakyReLU, + noise)
    for li, up in enumerate(ups, start=1):
        bilinear = isinstance(up, BilinearConv2x)
        if bilinear:  # 3x3 phase kernels over the input padded by its edge pixels
            k3, b = (np.asarray(v.numpy(), np.float32) for v in up.weights)
            per_phase = np.asarray(bilinear_conv_phases(k3), np.float32)  # (a, b, i, j, in, out)
            body.append(helper.make_node("Pad", [x, body_const(f"up{li}_pads", np.array([0, 0, 1, 1, 0, 0, 1, 1],
                                                                                         np.int64))],
                                         [f"up{li}_edge"], mode="edge", name=f"up{li}_edge"))
        else:
            kernel, b = _transposed_weights(up)
        phases = []
        for a in (0, 1):
            for bb in (0, 1):
                name = f"up{li}_p{a}{bb}"
                if bilinear:
                    w = np.ascontiguousarray(per_phase[a, bb].transpose(3, 2, 0, 1))
                    body.append(helper.make_node(
                        "Conv", [f"up{li}_edge", body_const(f"{name}_w", w), body_const(f"{name}_b", b)],
                        [f"{name}_conv"], kernel_shape=[3, 3], pads=[0, 0, 0, 0], name=f"{name}_conv"))
                else:
                    (pt, pb), (pl, pr) = _PHASE_PADS[a], _PHASE_PADS[bb]
                    body.append(helper.make_node(
                        "Conv", [x, body_const(f"{name}_w", _phase_weight(kernel, a, bb)), body_const(f"{name}_b", b)],
                        [f"{name}_conv"], kernel_shape=[2, 2], pads=[pt, pl, pb, pr], name=f"{name}_conv"))
                act = f"{name}_act" if noises else name
                body.append(helper.make_node("LeakyRelu", [f"{name}_conv"], [act], alpha=slope, name=f"{name}_lrelu"))
                if noises:
                    half = base * 2 ** (li - 1)
                    noise = f"noise{li}_p{a}{bb}"
                    if chunk:
                        body.append(helper.make_node("Slice", [noise, "chunk_start", "chunk_stop", "chunk_axis"],
                                                     [f"{noise}_chunk"], name=f"{noise}_chunk"))
                        noise = f"{noise}_chunk"
                    strength = np.asarray(noises[li - 1].strength.numpy(), np.float32).reshape(1, -1, 1, 1)
                    body += [
                        helper.make_node("Reshape", [noise, body_const(f"{name}_nshape",
                                                                       np.array([-1, 1, half, half], np.int64))],
                                         [f"{name}_noise"], name=f"{name}_noise"),
                        helper.make_node("Mul", [f"{name}_noise", body_const(f"{name}_strength", strength)],
                                         [f"{name}_scaled"], name=f"{name}_scaled"),
                        helper.make_node("Add", [act, f"{name}_scaled"], [name], name=f"{name}_add_noise"),
                    ]
                phases.append(name)
        if li < len(ups) or refine is not None:
            body.append(helper.make_node("Concat", phases, [f"up{li}_phases"], axis=1, name=f"up{li}_concat"))
            body += _interleave_nhwc(f"up{li}_phases", f"up{li}", int(up.filters), base * 2 ** (li - 1), body_const)
            x = f"up{li}"

    # 2b. --g-refine: the 3x3 convolution (+ LeakyReLU) on the interleaved full-size tensor, whose
    #     2x2 blocks are then the final convolution's phases again (SpaceToDepth: channel
    #     (2a + b) * C + c, the phases' order), as one tensor
    kernel, b = (v.numpy() for v in final.weights)
    channels = int(ups[-1].filters)
    if refine is not None:
        w_r, b_r = (np.asarray(v.numpy(), np.float32) for v in refine.weights)
        body += [
            helper.make_node("Conv", [x, body_const("refine_w", w_r.transpose(3, 2, 0, 1)),
                                      body_const("refine_b", b_r)], ["refine_conv"], kernel_shape=[3, 3],
                             pads=[1, 1, 1, 1], name="refine_conv"),
            helper.make_node("LeakyRelu", ["refine_conv"], ["refine_act"], alpha=slope, name="refine_lrelu"),
            helper.make_node("SpaceToDepth", ["refine_act"], ["refine_phases"], blocksize=2, name="refine_blocks"),
        ]
        channels = int(refine.filters)
        phases = ["refine_phases"]

    # 3. the final convolution on the last layer's phases: one stride-2 conv per phase tensor,
    #    summed (no concatenation of the largest tensors), then tanh and two small interleaves
    w_final = _final_weight(kernel, channels)
    per_phase = w_final.shape[1] // len(phases)  # C, or 4C for the one tensor of --g-refine
    partial = []
    for p, phase in enumerate(phases):
        w2 = _stride2_weight(w_final[:, p * per_phase : (p + 1) * per_phase])
        inputs = [phase, body_const(f"out_w{p}", w2)]
        if p == 0:
            inputs.append(body_const("out_b", np.repeat(b, 16)))
        body.append(helper.make_node("Conv", inputs, [f"out_part{p}"], kernel_shape=[4, 4], strides=[2, 2],
                                      pads=[1, 1, 1, 1], name=f"out_conv{p}"))
        partial.append(f"out_part{p}")
    body.append(helper.make_node("Sum", partial, ["out_blocks"], name="out_sum"))
    body.append(helper.make_node("Tanh", ["out_blocks"], ["out_tanh"], name="out_tanh"))
    body.append(helper.make_node("DepthToSpace", ["out_tanh"], ["out_phases"], blocksize=2, mode="DCR",
                                  name="out_unblock"))
    image = f"{OUTPUT_NAME}_chunk" if chunk else OUTPUT_NAME
    drawn = "image_drawn" if pooled else image
    body.append(helper.make_node("DepthToSpace", ["out_phases"], [drawn], blocksize=2, mode="DCR",
                                  name="out_interleave"))
    if pooled:  # 4. --g-supersample: each pixel the mean of its 2x2 block of the drawn image
        body.append(helper.make_node("AveragePool", [drawn], [image], kernel_shape=[2, 2], strides=[2, 2],
                                      name="supersample_pool"))
    size = out_size

    z_info = helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", latent_dim])
    image_info = helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", 1, size, size])
    if not chunk:
        graph = helper.make_graph(head + body, "cxr_generator_subpixel", [z_info], [image_info],
                                  initializer=head_inits + body_inits)
    else:
        loop_body = helper.make_graph(
            body, "conv_layers",
            [helper.make_tensor_value_info("pass", TensorProto.INT64, []),
             helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
            [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
             helper.make_tensor_value_info(image, TensorProto.FLOAT, None)],
            initializer=body_inits)
        chunk_default = numpy_helper.from_array(np.array([chunk], np.int64), CHUNK_INPUT)
        head_const("zero1", np.array([0], np.int64))
        head_const("one1", np.array([1], np.int64))
        head_const("zero2", np.array([0, 0], np.int64))
        head_const("image_shape", np.array([-1, 1, size, size], np.int64))
        # n = batch; passes = ceil(n / chunk); z padded with zero rows to passes * chunk
        outer = [
            helper.make_node("Shape", [INPUT_NAME], ["z_shape"], name="z_shape"),
            helper.make_node("Slice", ["z_shape", "zero1", "one1"], ["n"], name="n"),
            # a chunk fed as 0 or less counts as 1
            helper.make_node("Max", [CHUNK_INPUT, "one1"], ["chunk_pos"], name="chunk_pos"),
            helper.make_node("Sub", ["chunk_pos", "one1"], ["chunk_m1"], name="chunk_m1"),
            helper.make_node("Add", ["n", "chunk_m1"], ["n_up"], name="n_up"),
            helper.make_node("Div", ["n_up", "chunk_pos"], ["passes_1d"], name="passes_1d"),
            helper.make_node("Mul", ["passes_1d", "chunk_pos"], ["n_padded"], name="n_padded"),
            helper.make_node("Sub", ["n_padded", "n"], ["n_extra"], name="n_extra"),
            helper.make_node("Concat", ["zero2", "n_extra", "zero1"], ["z_pads"], axis=0, name="z_pads"),
            helper.make_node("Pad", [INPUT_NAME, "z_pads"], [z], name="z_pad"),
            *head,
            helper.make_node("Squeeze", ["passes_1d", "zero1"], ["passes"], name="passes"),
            helper.make_node("Loop", ["passes", ""], ["image_passes"], body=loop_body, name="conv_layers"),
            helper.make_node("Reshape", ["image_passes", "image_shape"], ["image_padded"], name="join_passes"),
            helper.make_node("Slice", ["image_padded", "zero1", "n", "zero1"], [OUTPUT_NAME], name="drop_padding"),
        ]
        graph = helper.make_graph(
            outer, "cxr_generator_subpixel_chunked",
            [z_info, helper.make_tensor_value_info(CHUNK_INPUT, TensorProto.INT64, [1])], [image_info],
            initializer=head_inits + [chunk_default])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="cxr-export")
    model.ir_version = 8
    return model


def drawn_resolution_nodes(model: onnx.ModelProto) -> list[str]:
    """The nodes of a flat optimised graph (chunk 0) that compute at the resolution G draws at:
    its last upsampling layer's (the phases, their interleave, their noise and its projection from z), the
    refinement convolution's and the output's. These draw the finest detail, where int8's
    rounding shows most (quantize.py)."""
    ups = [int(n.name[2:].split("_", 1)[0]) for n in model.graph.node
           if n.name.startswith("up") and n.name[2:].split("_", 1)[0].isdigit()]
    if not ups:
        raise ValueError("not an optimised generator graph (no up<i>_ nodes); is it the flat graph (chunk 0)?")
    last = max(ups)
    prefixes = (f"up{last}_", f"noise{last}_", "refine_", "out_", "supersample_")
    return [n.name for n in model.graph.node if n.name.startswith(prefixes)]
