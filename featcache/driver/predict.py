"""``pipeline.py predict``: new images -> the exact features a model was trained on -> classes.

The model file records the store spec it was trained on; the backbone, weights (by
sha256), layer, pooling, transform, precision and decoding options are rebuilt from it
and checked, so a model is never fed features made another way. A soft-vote file
(:class:`classify.persist.SavedVote`) holds several such models: each backbone's images go
through one forward pass for all its members, and their probabilities are averaged.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import tempfile
from pathlib import Path

import numpy as np

from classify.evaluate import predict_tta
from classify.persist import SavedModel, SavedVote, load_saved
from extract.images import DEFAULT_MAX_PIXELS
from extract.rows import ImageRows, collate
from extract.runner import ExtractConfig, execute, plan
from extract.sources import from_files
from extract.transforms import TransformSpec
from featcache.common.errors import BadInput
from featcache.common.files import atomic_write
from featcache.finetune.results import softmax
from featcache.store import read_flip, read_info, read_rows, resolve_feature

log = logging.getLogger(__name__)
SPEC_KEYS = ("backbone", "weights", "weights_sha256", "transform", "precision", "draft", "fold_bn", "runtime",
             "calibration")


class MismatchError(BadInput):
    """Features made another way than the model's training features."""


def check_store_matches(saved: SavedModel, store: str) -> str:
    """The feature key to use from ``store``; MismatchError if it was made differently."""
    info = read_info(store, allow_partial=False)
    diff = [k for k in SPEC_KEYS if info.spec.get(k) != saved.spec.get(k)]
    if diff:
        k = diff[0]
        raise MismatchError(f"{store}: made with {k}={info.spec.get(k)!r} but the model needs "
                            f"{k}={saved.spec.get(k)!r} (differs in: {', '.join(diff)})")
    if saved.feature not in info.features:
        raise MismatchError(f"{store}: has no feature {saved.feature!r} (has {sorted(info.features)})")
    if info.class_names and info.class_names != saved.class_names:
        raise MismatchError(f"{store}: classes {info.class_names} differ from the model's {saved.class_names}")
    return resolve_feature(info, saved.feature)


def _extract_for(group: list[SavedModel], files: list[str], out: Path, weights_file: str | None, progress: bool,
                 flip: bool) -> Path:
    """One forward pass over ``files`` for every model of ``group`` (models of one store spec):
    all their layers and poolings, written to ``out``."""
    from extract.hooks import Tap  # torch: only when images are extracted (not for --features F.h5)

    saved = group[0]
    layers, pools = {}, {}
    for m in group:
        layer, pool = m.feature.rsplit("/", 1)
        layers[Tap.parse(layer).name] = None
        pools["avg" if pool == "none" else pool] = None
    spec = saved.spec
    wid = spec.get("weights", "DEFAULT")
    if wid.startswith("file:") and not weights_file:
        raise MismatchError(f"the model was trained on features from weights file {wid[5:]!r}; pass it with --weights")
    precision = spec.get("precision", "fp32")
    cfg = ExtractConfig(
        data="-", backbone=spec["backbone"], out=str(out), layers=tuple(layers), pools=tuple(pools),
        weights="DEFAULT" if wid.startswith("file:") else wid,
        weights_file=weights_file, precision=precision, dtype=spec.get("dtype", "float32"),
        # fp32 rows agree across runtimes (so the spec leaves the runtime out): the fastest one here will do;
        # other precisions run on the runtime the store recorded (absent: torch, as before runtimes existed).
        runtime=spec.get("runtime", "auto" if precision == "fp32" else "torch"),
        calibration=spec.get("calibration"), quantized_from=saved.store if precision == "int8" else None,
        draft=bool(spec.get("draft")), max_pixels=spec.get("max_pixels"), flip=flip, progress=progress,
        fold_bn=bool(spec.get("fold_bn", False)),  # stores made before folding existed did not fold
    )
    p = plan(cfg, manifest=from_files(files))
    if p.facts.weights_sha256 != spec.get("weights_sha256"):
        raise MismatchError(f"backbone weights sha256 {str(p.facts.weights_sha256)[:12]} differ from the model's "
                            f"{str(spec.get('weights_sha256'))[:12]}")
    if p.facts.transform.to_dict() != spec.get("transform"):
        raise MismatchError(f"{spec['backbone']}: preprocessing {p.facts.transform.to_dict()} differs from the "
                            f"model's {spec.get('transform')}")
    execute(p)
    return Path(cfg.out)


def feature_store(saved: SavedModel, inputs: list[str], features: str | None, work: Path, *,
                  weights_file: str | None, progress: bool, flip: bool) -> tuple[str, str, list]:
    """(store, feature key, unreadable images): the given store, checked against the model, or
    the new images extracted into ``work`` exactly as the training features were."""
    if features:
        key = check_store_matches(saved, features)
        if flip and not read_info(features).flip:
            raise MismatchError(f"{features}: holds no mirrored crops, which this flip-TTA model averages; "
                                "extract with --views K, or pass --tta none")
        return features, key, []
    if not inputs:
        raise BadInput("predict: give IMAGES or a DIR, or --features F.h5")
    store = str(_extract_for([saved], inputs, work / "predict.h5", weights_file, progress, flip))
    return store, saved.feature, read_info(store).errors


def classify_rows(saved: SavedModel, store: str, key: str, flip: bool) -> tuple[dict, np.ndarray, np.ndarray | None]:
    """(rows read, predictions, probabilities or None) of the model on every row of ``store``."""
    data = read_rows(store, feature=key)
    expected = getattr(saved.model, "n_features_in_", None)
    if expected is not None and data["X"].shape[1] != expected:
        raise MismatchError(f"features have {data['X'].shape[1]} dims, the model expects {expected}")
    if not len(data["X"]):
        return data, np.empty(0, int), None
    X_flip = read_flip(store, key, data["rows"]) if flip else None
    pred, proba, _ = predict_tta(saved.model, data["X"], X_flip)
    return data, pred, proba


def predictions_csv(saved: SavedModel | _Classes, paths: list[str], pred: np.ndarray, proba: np.ndarray | None,
                    errors: list) -> str:
    """``path, predicted, p_<class>..., error``: one row per image, then one per unreadable file."""
    classes, names = list(np.asarray(saved.model.classes_)), saved.class_names
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["path", "predicted", *[f"p_{n}" for n in names], "error"])
    for i, path in enumerate(paths):
        probs = [""] * len(names)
        if proba is not None:
            for j, c in enumerate(classes):
                probs[int(c)] = f"{proba[i, j]:.6f}"
        w.writerow([path, names[int(pred[i])], *probs, ""])
    for path, msg in errors:
        w.writerow([path, "", *[""] * len(names), msg])
    return buf.getvalue()


def predict(model_path: str, inputs: list[str], out_csv: str, *, features: str | None = None,
            weights_file: str | None = None, progress: bool = False, tta: bool = True) -> dict:
    """Write ``path, predicted, p(<class>)...`` rows (plus error rows) to ``out_csv``.

    A model saved with flip TTA averages each image's center and mirrored crops, as it was
    scored in classify, unless ``tta`` is False."""
    if str(model_path).endswith(".pt"):
        return predict_finetuned(model_path, inputs, out_csv, features=features)
    saved = load_saved(model_path)
    out = Path(out_csv)
    if not out.parent.is_dir():
        raise BadInput(f"--out {out}: directory {out.parent} does not exist")
    if isinstance(saved, SavedVote):
        return predict_vote(saved, inputs, out, features=features, weights_file=weights_file, progress=progress,
                            tta=tta)
    flip = tta and getattr(saved, "tta", "none") == "flip"
    with tempfile.TemporaryDirectory(prefix="predict-") as tmp:
        store, key, errors = feature_store(saved, inputs, features, Path(tmp), weights_file=weights_file,
                                           progress=progress, flip=flip)
        data, pred, proba = classify_rows(saved, store, key, flip)
        atomic_write(out, predictions_csv(saved, list(data["paths"]), pred, proba, errors))
    names = saved.class_names
    return {"rows": len(data["paths"]), "errors": len(errors), "out": str(out),
            "predicted": [names[int(c)] for c in pred], "paths": list(data["paths"])}


def _extraction_key(saved: SavedModel) -> str:
    """Models with equal keys read features of one forward pass: the same store spec (backbone,
    weights, transform, precision...; an int8 model also its calibration store)."""
    return json.dumps([saved.spec, saved.store if saved.spec.get("precision") == "int8" else ""], sort_keys=True,
                      default=str)


def _member_rows(vote: SavedVote, i: int, store: str, key: str, flip: bool) -> tuple[list[str], np.ndarray]:
    """(paths, probabilities) of member ``i`` on every row of ``store``."""
    try:
        data, _, proba = classify_rows(vote.members[i], store, key, flip)
    except MismatchError as e:
        raise MismatchError(f"soft-vote member {vote.labels[i]}: {e}") from None
    if proba is None and len(data["paths"]):
        raise BadInput(f"soft-vote member {vote.labels[i]}: gives no probabilities to average")
    return [str(p) for p in data["paths"]], proba if proba is not None else np.empty((0, len(vote.class_names)))


def _group_store(vote: SavedVote, members: list[int], flips: dict[int, bool], inputs: list[str],
                 features: str | None, out: Path, weights_file: str | None, progress: bool
                 ) -> tuple[str, dict[int, str], list]:
    """(store, feature key of each member, unreadable images) for members of one store spec: the
    given store checked against each of them, or ``inputs`` extracted once for them all."""
    if features:
        keys = {}
        for i in members:
            try:
                store, keys[i], _ = feature_store(vote.members[i], inputs, features, out.parent,
                                                  weights_file=weights_file, progress=progress, flip=flips[i])
            except MismatchError as e:
                raise MismatchError(f"soft-vote member {vote.labels[i]}: {e}") from None
        return store, keys, []
    if not inputs:
        raise BadInput("predict: give IMAGES or a DIR, or --features F.h5")
    group = [vote.members[i] for i in members]
    try:
        store = str(_extract_for(group, inputs, out, weights_file, progress, any(flips.values())))
    except MismatchError as e:
        raise MismatchError(f"soft-vote members on {group[0].spec.get('backbone')}: {e}") from None
    return store, {i: vote.members[i].feature for i in members}, read_info(store).errors


def predict_vote(vote: SavedVote, inputs: list[str], out: Path, *, features: str | None = None,
                 weights_file: str | None = None, progress: bool = False, tta: bool = True) -> dict:
    """The soft vote's CSV: members grouped by store spec, each group's features extracted once
    (one forward pass per backbone, all its members' layers), each member applied with its own TTA,
    the probabilities averaged as the vote's row averaged them when it was scored."""
    groups: dict[str, list[int]] = {}
    for i, m in enumerate(vote.members):
        groups.setdefault(_extraction_key(m), []).append(i)
    got: dict[int, tuple[list[str], np.ndarray]] = {}
    errors: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="predict-") as tmp:
        for g, members in enumerate(groups.values()):
            flips = {i: tta and vote.members[i].tta == "flip" for i in members}
            store, keys, bad = _group_store(vote, members, flips, inputs, features, Path(tmp) / f"predict-{g}.h5",
                                            weights_file, progress)
            errors.update((str(p), msg) for p, msg in bad)
            for i in members:
                got[i] = _member_rows(vote, i, store, keys[i], flips[i])
    # An image one backbone could not read (decoding options differ) is an error row, not a partial vote.
    ref = got[0][0]
    shared = set(ref).intersection(*(set(p) for p, _ in got.values()))
    paths = [p for p in ref if p in shared]
    classes = np.asarray(vote.members[0].model.classes_)  # every member's (checked when the vote was saved)
    total = np.zeros((len(paths), len(classes)), dtype=np.float64)
    for member_paths, proba in got.values():
        if paths:
            at = {p: j for j, p in enumerate(member_paths)}
            total += proba[[at[p] for p in paths]]
    avg = total / len(got)
    pred = classes[avg.argmax(axis=1)] if paths else np.empty(0, int)
    for p in {p for member_paths, _ in got.values() for p in member_paths} - shared:
        errors.setdefault(p, "not readable by every member's backbone")
    listed = sorted(errors.items())
    atomic_write(out, predictions_csv(_Classes(vote.class_names, classes), paths, pred, avg if len(paths) else None,
                                      listed))
    names = vote.class_names
    return {"rows": len(paths), "errors": len(listed), "out": str(out), "predicted": [names[int(c)] for c in pred],
            "paths": paths, "members": len(vote.members), "extractions": 0 if features else len(groups)}


class _Classes:
    """What :func:`predictions_csv` reads of a model: its class indices and names."""

    def __init__(self, class_names: list[str], classes: np.ndarray | None = None):
        self.class_names = list(class_names)
        self.model = type("Classes", (), {"classes_": np.arange(len(class_names)) if classes is None else classes})()


def predict_finetuned(model_path: str, inputs: list[str], out_csv: str, *, features: str | None = None,
                      batch_size: int = 32) -> dict:
    """A fine-tuned network (``best.pt`` of ``finetune`` or ``run --finetune``) on new images,
    through the eval transform it was scored with; the same CSV as a cached-feature model."""
    import torch
    from torch.utils.data import DataLoader

    from extract.preprocess import build_transform
    from featcache.finetune.checkpoint import load_finetuned

    if features:
        raise BadInput(f"--features {features}: a fine-tuned network {model_path} reads images, not a feature store")
    if not inputs:
        raise BadInput("predict: give IMAGES or a DIR")
    out = Path(out_csv)
    if not out.parent.is_dir():
        raise BadInput(f"--out {out}: directory {out.parent} does not exist")
    model, meta = load_finetuned(model_path)
    manifest = from_files(inputs)
    rows = ImageRows(manifest.root, manifest.paths, range(len(manifest.paths)),
                     build_transform(TransformSpec.from_dict(meta["transform"])), DEFAULT_MAX_PIXELS)
    done, logits, errors = [], [], []
    with torch.inference_mode():
        for idx, images, bad in DataLoader(rows, batch_size=batch_size, collate_fn=collate):
            errors += [(manifest.paths[r], msg) for r, msg in bad.items()]
            if images is not None:
                done += [int(r) for r in idx]
                logits.append(model(images).float().numpy())
    names = list(meta["class_names"])
    proba = softmax(np.concatenate(logits)) if logits else np.empty((0, len(names)))
    pred = proba.argmax(axis=1)
    paths = [manifest.paths[r] for r in done]
    atomic_write(out, predictions_csv(_Classes(names), paths, pred, proba if len(paths) else None, errors))
    return {"rows": len(paths), "errors": len(errors), "out": str(out), "predicted": [names[int(c)] for c in pred],
            "paths": paths}
