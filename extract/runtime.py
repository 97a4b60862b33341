"""Opening a planned job's network on its runtime: torch, or OpenVINO (converted once, then cached).

Both runtimes are callables from uint8 (B, H, W, 3) crops to {feature key: (B, D) float32},
so the loop, views, mirrors, shards and engines never ask which one they have.

For OpenVINO the float32 network comes from the model cache, else it is converted from the
(folded) torch model and cached. An int8 network comes, in this order, from the store being
resumed, the store named by ``quantized_from`` (predict), the model cache, or NNCF's
quantization on the job's calibration images; it is embedded in the new store, so the store
carries the exact network that made its features. With ``--runtime auto`` a backbone that
OpenVINO cannot convert runs on torch instead, with a warning.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from extract import costs
from extract import openvino_runtime as ovr
from extract import quantize as q
from extract.modelcache import digest, find_network, read_meta, save_network, versions
from extract.plan import ExtractPlan, image_rows, with_runtime
from extract.rows import collate
from extract.version import __version__
from featcache.common.errors import BadInput
from featcache.store import Manifest, StoreError, partial_path, read_blob, read_info

log = logging.getLogger(__name__)
INT8_BLOBS = ("openvino_int8.xml", "openvino_int8.bin")


@dataclass
class Opened:
    plan: ExtractPlan  # the plan the runtime runs (another one after a fallback to torch)
    runtime: object  # TorchRuntime | OpenVINORuntime
    provenance: dict = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)


@contextlib.contextmanager
def open_runtime(p: ExtractPlan, out: Path | None = None, status: str = "new") -> Iterator[Opened]:
    """The plan's runtime, ready to call; closed (hooks removed) on exit."""
    if p.runtime == "openvino":
        try:
            opened = _open_openvino(p, out, status)
        except _Fallback as e:
            log.warning("%s; extracting with --runtime torch instead", e)
            p = with_runtime(p, "torch")
            opened = _open_torch(p)
    else:
        opened = _open_torch(p)
    try:
        yield opened
    finally:
        opened.runtime.close()


class _Fallback(Exception):
    pass


def _open_torch(p: ExtractPlan) -> Opened:
    from extract.build import taps_of
    from extract.torch_runtime import TorchRuntime

    bb = p.model()
    return Opened(p, TorchRuntime(bb.model, taps_of(p.facts), p.cfg.pools, p.facts.transform, p.device, p.precision,
                                  p.cfg.batch_size, p.cfg.channels_last))


def network_key(p: ExtractPlan) -> str:
    f = p.facts
    v = versions()
    return digest({"backbone": f.backbone, "weights": f.weights, "weights_sha256": f.weights_sha256,
                   "taps": list(f.taps), "pools": list(p.cfg.pools), "features": [x.key for x in f.features],
                   "fold_bn": p.cfg.fold_bn, "transform": f.transform.to_dict(), "input": "u8 NHWC",
                   "torch": v.get("torch"), "openvino": v.get("openvino"), "tool": __version__})


def _cacheable(p: ExtractPlan) -> bool:
    """Random weights are another network each build, and a caller's own Backbone object is not known by name."""
    return p.facts.weights_sha256 is not None and not p.custom


def float_network(p: ExtractPlan):  # noqa: ANN201 - (openvino.Model, cache folder | None)
    """The float32 OpenVINO network of the plan's hooked backbone."""
    key, name = network_key(p), p.facts.backbone
    if _cacheable(p):
        folder = find_network(name, key)
        if folder is not None:
            with costs.timed("network load"):
                return ovr.read(folder), folder
    from extract.build import taps_of

    bb = p.model()
    with costs.timed("conversion"):
        try:
            net = ovr.convert(bb.model, taps_of(p.facts), p.cfg.pools, p.facts.transform,
                              [f.key for f in p.facts.features])
        except ovr.ConversionError as e:
            if p.cfg.runtime == "auto":
                raise _Fallback(f"{name}: {e}") from None
            raise BadInput(f"--runtime openvino: {name}: {e}; use --runtime torch") from None
    folder = None
    if _cacheable(p):
        folder = save_network(name, key, lambda d: ovr.save(net, d),
                              {"backbone": name, "features": [f.key for f in p.facts.features], "kind": "float32"})
    return net, folder


def _open_openvino(p: ExtractPlan, out: Path | None, status: str) -> Opened:
    ovr.check_precision(p.precision)
    keys = [f.key for f in p.facts.features]
    provenance = {"openvino_network": network_key(p)[:20]}
    blobs: dict[str, bytes] = {}
    if p.precision == "int8":
        net, blobs, check = int8_network(p, out, status)
        provenance["quantization"] = {"calibration": p.spec["calibration"], "check": check}
    else:
        net, _ = float_network(p)
    with costs.timed("compile"):
        compiled = ovr.compile_network(net, p.precision)
    return Opened(p, ovr.OpenVINORuntime(compiled, keys, p.cfg.batch_size), provenance, blobs)


def network_bytes(p: ExtractPlan, out: Path | None = None, status: str = "new"):  # noqa: ANN201
    """((model.xml, model.bin) bytes, provenance, blobs to embed) of the plan's OpenVINO network, for
    engines that ship it to their workers (Ray)."""
    ovr.check_precision(p.precision)
    provenance = {"openvino_network": network_key(p)[:20]}
    if p.precision == "int8":
        _, blobs, check = int8_network(p, out, status)
        provenance["quantization"] = {"calibration": p.spec["calibration"], "check": check}
        return (blobs[INT8_BLOBS[0]], blobs[INT8_BLOBS[1]]), provenance, blobs
    net, folder = float_network(p)
    if folder is None:
        with tempfile.TemporaryDirectory(prefix="featcache-ov-") as tmp:
            ovr.save(net, Path(tmp))
            return ovr.to_bytes(Path(tmp)), provenance, {}
    return ovr.to_bytes(folder), provenance, {}


# --------------------------------------------------------------------------- int8


def int8_key(p: ExtractPlan) -> str:
    return digest({"float": network_key(p), "calibration": p.spec["calibration"], "nncf": versions().get("nncf")})


def _embedded(store: Path, calibration: dict) -> tuple[bytes, bytes] | None:
    """The int8 network a store (or its partial twin) carries, if it was calibrated the same way."""
    try:
        info = read_info(store, allow_partial=True)
    except StoreError:
        return None
    if info.spec.get("calibration") != calibration:
        return None
    xml, weights = (read_blob(info.path, name) for name in INT8_BLOBS)
    return (xml, weights) if xml is not None and weights is not None else None


def int8_network(p: ExtractPlan, out: Path | None, status: str):  # noqa: ANN201
    """(openvino.Model, blobs to embed, quality check) of the plan's int8 network."""
    calibration, key, name = p.spec["calibration"], int8_key(p), p.facts.backbone + "-int8"
    sources = [partial_path(out)] if out is not None and status == "resume" else []
    sources += [Path(p.cfg.quantized_from)] if p.cfg.quantized_from else []
    for src in sources:
        found = _embedded(src, calibration)
        if found is not None:
            log.info("int8 network from %s", src)
            check = read_info(src, allow_partial=True).provenance.get("quantization", {}).get("check", {})
            return ovr.from_bytes(*found), dict(zip(INT8_BLOBS, found)), check
    folder = find_network(name, key) if _cacheable(p) else None
    if folder is not None:
        with costs.timed("network load"):
            xml, weights = ovr.to_bytes(folder)
            check = read_meta(folder).get("check", {})
            return ovr.from_bytes(xml, weights), dict(zip(INT8_BLOBS, (xml, weights))), check
    if p.cfg.quantized_from or p.cfg.calibration is not None:
        raise BadInput(f"the int8 network of {p.cfg.quantized_from or 'this model'} is neither in that store nor in "
                         "the model cache; extract its features again with --precision int8, or use --features")
    net, check = _quantize(p)
    with tempfile.TemporaryDirectory(prefix="featcache-int8-") as tmp:
        ovr.save(net, Path(tmp))
        xml, weights = ovr.to_bytes(Path(tmp))
    if _cacheable(p):
        def write(folder: Path) -> None:
            (folder / "model.xml").write_bytes(xml)
            (folder / "model.bin").write_bytes(weights)

        save_network(name, key, write, {"backbone": p.facts.backbone, "features": [f.key for f in p.facts.features],
                                        "kind": "int8", "calibration": calibration, "check": check})
    return ovr.from_bytes(xml, weights), dict(zip(INT8_BLOBS, (xml, weights))), check


def _quantize(p: ExtractPlan):  # noqa: ANN202 - (openvino.Model, check)
    """NNCF on the job's calibration images; then both networks on them, compared."""
    manifest = p.full_manifest or p.manifest
    rows = q.calibration_rows(manifest)
    with costs.timed("calibration decode"):
        plain = _without_views(p, manifest)
        _, images, errors = collate([image_rows(plain, rows)[i] for i in range(len(rows))])
    if images is None:
        raise BadInput(f"--precision int8: none of the {len(rows)} calibration images could be read")
    good = np.array([r for r in rows if int(r) not in errors], dtype=np.int64)
    net, _ = float_network(p)
    log.info("quantizing %s to int8 on %d calibration images (once; the network is cached)", p.facts.backbone,
             len(images))
    with costs.timed("int8 quantization"):
        qnet = q.quantize(net, images, p.facts.transformer)
    with costs.timed("int8 check"):
        keys = [f.key for f in p.facts.features]
        ref = ovr.OpenVINORuntime(ovr.compile_network(net, "fp32"), keys, p.cfg.batch_size)(images)
        got = ovr.OpenVINORuntime(ovr.compile_network(qnet, "int8"), keys, p.cfg.batch_size)(images)
        check = q.compare(ref, got, np.asarray(manifest.labels)[good])
    q.warn_if_degraded(check, p.facts.backbone)
    return qnet, json.loads(json.dumps(check))


def _without_views(p: ExtractPlan, manifest: Manifest) -> ExtractPlan:
    """The plan reading ``manifest``'s plain center crops (calibration needs no views)."""
    return dataclasses.replace(p, manifest=manifest, cfg=dataclasses.replace(p.cfg, views=0, flip=False))
