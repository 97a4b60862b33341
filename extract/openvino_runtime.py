"""The hooked backbone as an OpenVINO network: converted once, cached, and run on the CPU.

What is extracted is still defined by the forward hooks: the converted graph is the torch
model traced with :class:`~extract.hooks.FeatureHooks` installed, and its outputs are
exactly the pooled tensors the hooks return (the poolings live inside the graph, and
everything after the last hooked layer is dead code OpenVINO drops). The input is a uint8
NHWC batch: the cast, mean and scale are OpenVINO preprocessing steps folded into the first
convolution, so the host only decodes.

Precisions are OpenVINO's inference hints (f32, bf16, f16) on one float32 network, and int8
is a separate network quantized by NNCF (``extract.quantize``). On this repository's 2-core
VM, efficientnet_lite0's forward ran at 150-175 img/s in f32 (torch, BatchNorms folded: 52)
and 300-375 in bf16 (torch: 91), with f32 features within 4e-6 (relative) of torch's.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from extract.modelcache import compiled_dir
from extract.transforms import TransformSpec
from featcache.common.errors import BadInput

log = logging.getLogger(__name__)
HINTS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16", "int8": "f32"}  # int8: the unquantized ops in f32
CAPABILITY = {"bf16": "BF16", "fp16": "FP16", "int8": "INT8"}


class ConversionError(RuntimeError):
    """The traced backbone could not be converted to OpenVINO (an op it does not support)."""


def _core():
    import openvino as ov

    core = ov.Core()
    try:
        compiled_dir().mkdir(parents=True, exist_ok=True)
        core.set_property({"CACHE_DIR": str(compiled_dir())})
    except OSError:
        pass  # no compiled-blob cache: compiling costs a little more each time
    return core


def check_precision(precision: str) -> None:
    """bf16/fp16/int8 only where this CPU computes them natively; OpenVINO would quietly use f32."""
    need = CAPABILITY.get(precision)
    if need is None:
        return
    have = _core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    if need not in have:
        raise BadInput(f"--precision {precision}: this CPU has no native {need} for OpenVINO "
                         f"(it offers {', '.join(have)}); use fp32, or --runtime torch to emulate it")


def convert(model, taps: Sequence, pools: Sequence[str], transform: TransformSpec, keys: Sequence[str]):
    """The torch ``model`` with hooks on ``taps`` as an ``openvino.Model`` with outputs ``keys``, uint8 NHWC in."""
    import openvino as ov
    import torch
    from openvino.preprocess import PrePostProcessor

    from extract.hooks import FeatureHooks

    class Tapped(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, x):  # noqa: ANN001, ANN202
            with FeatureHooks(self.model, taps, pools, stop_early=False) as hooks:
                out = hooks(x)
            return tuple(out[k] for k in keys)

    crop = transform.crop
    try:
        with torch.no_grad(), _quiet_tracer():
            net = ov.convert_model(Tapped().eval(), example_input=torch.zeros(1, 3, crop, crop),
                                   input=[(-1, 3, crop, crop)])
    except Exception as e:  # noqa: BLE001 - the converter raises many types
        raise ConversionError(f"OpenVINO could not convert the hooked model ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''})") from None
    for out, key in zip(net.outputs, keys):
        out.get_tensor().set_names({key})
    ppp = PrePostProcessor(net)
    ppp.input().tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC"))
    ppp.input().model().set_layout(ov.Layout("NCHW"))
    ppp.input().preprocess().convert_element_type(ov.Type.f32) \
        .mean([m * 255 for m in transform.mean]).scale([s * 255 for s in transform.std])
    return ppp.build()


class _quiet_tracer:
    """torch.jit.trace warns about deprecation and data-dependent shapes on every conversion."""

    def __enter__(self) -> None:
        import warnings

        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("ignore")

    def __exit__(self, *exc: object) -> None:
        self._w.__exit__(*exc)


def save(net, folder: Path) -> None:
    """model.xml + model.bin with float32 weights (``save_model`` compresses to fp16 unless told not to)."""
    import openvino as ov

    ov.save_model(net, str(folder / "model.xml"), compress_to_fp16=False)


def read(folder: Path):
    return _core().read_model(str(folder / "model.xml"))


def from_bytes(xml: bytes, weights: bytes):
    import openvino as ov

    return _core().read_model(xml.decode("utf-8"), ov.Tensor(np.frombuffer(weights, dtype=np.uint8).copy()))


def to_bytes(folder: Path) -> tuple[bytes, bytes]:
    return (folder / "model.xml").read_bytes(), (folder / "model.bin").read_bytes()


def compile_network(net, precision: str, threads: int | None = None):
    """Compiled for throughput: OpenVINO's streams (2 of one core each here) each take a share of a
    batch; that ran 7-10% faster than one stream on all cores (lite0 fp32/bf16, resnet50, this VM)."""
    config = {"INFERENCE_PRECISION_HINT": HINTS[precision], "PERFORMANCE_HINT": "THROUGHPUT"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    return _core().compile_model(net, "CPU", config)


class OpenVINORuntime:
    """uint8 (B, H, W, 3) crops -> {feature key: (B, D) float32}: each ``batch_size`` chunk is split over
    the compiled network's streams, run at once, and reassembled in order.

    One infer request per stream, started and waited on here, with no Python callback: an
    ``AsyncInferQueue``'s callbacks run on OpenVINO's threads and take the GIL, and freeing the
    queue (which waits for them) while holding the GIL deadlocked the process now and then."""

    name = "openvino"

    def __init__(self, compiled, keys: Sequence[str], batch_size: int):
        self.compiled, self.keys, self.batch_size = compiled, list(keys), batch_size
        names = [next(iter(o.get_names()), "") for o in compiled.outputs]
        if names != self.keys:
            raise ConversionError(f"the OpenVINO network's outputs {names} are not the features {self.keys}")
        self.streams = max(1, int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
        self.requests = [compiled.create_infer_request() for _ in range(self.streams)]

    def __call__(self, u: np.ndarray) -> dict[str, np.ndarray]:
        u = np.ascontiguousarray(np.asarray(u, dtype=np.uint8))
        parts = []
        for start in range(0, len(u), self.batch_size):
            chunk = u[start:start + self.batch_size]
            parts += [p for p in np.array_split(chunk, min(self.streams, len(chunk))) if len(p)]
        outputs: list[list[np.ndarray]] = []
        for wave in range(0, len(parts), self.streams):  # start_async and wait release the GIL
            running = list(zip(self.requests, parts[wave:wave + self.streams]))
            for request, part in running:
                request.start_async([np.ascontiguousarray(part)])
            for request, _ in running:
                request.wait()
                outputs.append([np.array(request.get_output_tensor(i).data, dtype=np.float32)
                                for i in range(len(self.keys))])
        return {k: np.concatenate([out[j] for out in outputs]) for j, k in enumerate(self.keys)}

    def close(self) -> None:
        """Drop the (idle) infer requests, then the compiled network, here and now rather than
        whenever the cyclic GC frees an interrupted job's frames."""
        self.requests = []
        self.compiled = None

    def __enter__(self) -> OpenVINORuntime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
