"""Finding and describing models: a ``.tflite`` (or ``.onnx``, ``.hef``) path, a model
directory, a repository of numbered versions (:mod:`edge.modelrepo`), or a bundled name.

A model directory holds one ``.tflite``, ``.onnx`` or ``.hef`` model and optionally
``labels.txt`` and ``manifest.json`` (task, preprocessing, postprocessing, thresholds).
Anything the manifest leaves out is taken from the model's embedded TFLite metadata, then
derived from its tensors.
Nothing here loads the interpreter; :mod:`edge.engine` does.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge.choices import TASKS
from edge.errors import ModelError
from edge.labels import parse_labels
from edge.preprocess import PreprocessConfig
from edge.tflite_metadata import read_metadata

if TYPE_CHECKING:
    from edge.drift import Baseline

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
LABEL_FILES = ("labels.txt", "labelmap.txt", "labels")
MODEL_SUFFIXES = (".tflite", ".onnx", ".hef", ".rpk")  # .rpk: an AI Camera network (edge.rpk)
NETWORK_SUFFIX = ".rpk"


@dataclass(frozen=True, slots=True)
class PostprocessConfig:
    """Thresholds and limits for turning outputs into results.

    threshold: minimum score (0..1) for detections and classes. iou_threshold: NMS overlap above
    which the lower-scoring box of the same class is dropped. logits: the classifier (or
    single-channel segmenter) outputs logits (apply softmax or sigmoid); None = decide from the
    values. labels_offset: added to a class id before the label lookup (1 for a label file that
    starts with a background entry the model lacks, -1 for one that leaves out the model's
    background class 0); None = work it out from the labels and the model's class count
    (:func:`edge.labels.fit_labels`). segmentation_threshold: probability (0..1) from which a
    pixel of a single-channel (sigmoid) segmentation output is foreground.
    allow: when non-empty, only these labels are reported.
    """

    threshold: float = 0.4
    iou_threshold: float = 0.45
    max_detections: int = 20
    top_k: int = 3
    logits: bool | None = None
    labels_offset: int | None = None
    segmentation_threshold: float = 0.5
    allow: frozenset[str] = frozenset()

    def problems(self) -> list[str]:
        out = []
        if not 0.0 <= self.threshold <= 1.0:
            out.append("threshold: must be within 0..1")
        if not 0.0 < self.iou_threshold <= 1.0:
            out.append("iou_threshold: must be within (0, 1]")
        if self.max_detections < 1:
            out.append("max_detections: must be at least 1")
        if self.top_k < 1:
            out.append("top_k: must be at least 1")
        if not 0.0 <= self.segmentation_threshold <= 1.0:
            out.append("segmentation_threshold: must be within 0..1")
        offset = self.labels_offset
        if offset is not None and (not isinstance(offset, int) or isinstance(offset, bool)):
            out.append("labels_offset: must be an integer (such as -1 or 1)")
        return out


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """Everything known about a model before it is loaded.

    preprocess: None when neither a manifest nor metadata says; the engine then derives it from
    the input tensor's quantization. task: None means infer it from the output tensors.
    labels_source: where ``labels`` came from (a file path or the model's metadata), for
    messages. baseline: the manifest's record of the model's results on representative
    images (``edge baseline``), what drift is measured against; None when it has none.
    """

    path: Path
    name: str
    version: str = ""
    task: str | None = None
    labels: dict[int, str] = field(default_factory=dict)
    preprocess: PreprocessConfig | None = None
    postprocess: PostprocessConfig = PostprocessConfig()
    description: str = ""
    directory: Path | None = None
    labels_source: str = ""
    baseline: Baseline | None = None


def model_search_path() -> list[Path]:
    """Where bundled model names are looked up: ``$EDGE_MODEL_PATH`` (colon-separated), the
    source checkout's ``models/``, then ``<prefix>/share/edge/models`` of an installed copy."""
    paths = [Path(p) for p in os.environ.get("EDGE_MODEL_PATH", "").split(os.pathsep) if p]
    paths.append(Path(__file__).resolve().parent.parent / "models")
    paths.append(Path(sys.prefix) / "share" / "edge" / "models")
    return [p for p in paths if p.is_dir()]


def bundled_models() -> dict[str, Path]:
    """Bundled model name → directory, first match on the search path wins."""
    found: dict[str, Path] = {}
    for root in model_search_path():
        for d in sorted(root.iterdir()):
            if d.is_dir() and d.name not in found and _model_files(d):
                found[d.name] = d
    return found


def resolve(ref: str | Path) -> tuple[Path, Path | None]:
    """Find the model file for ``ref``: (model file, model directory or None)."""
    p = Path(ref)
    if p.is_dir():
        return _tflite_in(p), p
    if p.suffix.lower() == NETWORK_SUFFIX and not p.exists():
        raise ModelError(
            f"IMX500 network not found: {p}. The stock networks are installed by 'sudo apt "
            "install imx500-all' into /usr/share/imx500-models/; check the camera's network "
            "path."
        )
    if p.exists():
        return p, (p.parent if (p.parent / MANIFEST).exists() else None)
    if p.suffix not in MODEL_SUFFIXES and os.sep not in str(ref):
        bundled = bundled_models()
        if str(ref) in bundled:
            d = bundled[str(ref)]
            return _tflite_in(d), d
        names = ", ".join(sorted(bundled)) or "none found"
        raise ModelError(
            f"no model named {str(ref)!r}: it is neither a file, a directory nor a bundled "
            f"model (bundled: {names}). Give the path to a .tflite, .onnx or .hef file or a model "
            "directory."
        )
    raise ModelError(
        f"model file not found: {p}. Check the path, or run `edge info` to list the bundled models."
    )


def _tflite_in(d: Path) -> Path:
    manifest = _read_manifest(d)
    if manifest and "model" in manifest:
        path = d / str(manifest["model"])
        if not path.exists():
            raise ModelError(
                f"{d / MANIFEST} names model {manifest['model']!r}, which is not in "
                f"{d}. Fix the manifest or restore the file."
            )
        return path
    found = _model_files(d)
    cpu = [f for f in found if not f.stem.endswith("_edgetpu")]
    if not found:
        raise ModelError(
            f"{d} holds no .tflite, .onnx or .hef model and no numbered version folders (1/, 2/, "
            "...). Put the model file there or give its path directly."
        )
    if len(cpu) > 1:
        raise ModelError(
            f"{d} holds several model files ({', '.join(f.name for f in found)}): name the "
            f'one to use with a {MANIFEST} ("model": "file.tflite") or give its path.'
        )
    return cpu[0] if cpu else found[0]


def _model_files(d: Path) -> list[Path]:
    return sorted(f for f in d.iterdir() if f.suffix in MODEL_SUFFIXES and f.is_file())


def _read_manifest(d: Path) -> dict[str, Any] | None:
    path = d / MANIFEST
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"cannot read {path}: {exc}. Fix the JSON or remove the file.") from exc
    if not isinstance(data, dict):
        raise ModelError(f"{path} must hold a JSON object")
    return data


def _dataclass_from(cls: Any, data: Any, where: str, problems: list[str]) -> Any:
    if data is None:
        return None
    if not isinstance(data, dict):
        problems.append(f"{where}: must be an object")
        return None
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        problems.append(
            f"{where}: unknown keys {', '.join(unknown)} (known: {', '.join(sorted(names))})"
        )
        return None
    values = {
        k: (tuple(v) if isinstance(v, list) and k not in ("allow",) else v) for k, v in data.items()
    }
    if "allow" in values:
        values["allow"] = frozenset(values["allow"])
    try:
        obj = cls(**values)
    except TypeError as exc:
        problems.append(f"{where}: {exc}")
        return None
    problems += [f"{where}.{p}" for p in obj.problems()]
    return obj


def _network_facts(
    path: Path,
    labels: dict[int, str],
    labels_source: str,
    task: str | None,
    post: PostprocessConfig,
) -> tuple[dict[int, str], str, str | None, PostprocessConfig]:
    """What an AI Camera network's intrinsics add to a spec: labels (unless a labels file gave
    them), the task (unless set), softmax for a classifier whose scores are logits."""
    from dataclasses import replace

    from edge.rpk import read_network
    from edge.runtime.sensor import TASKS, network_labels

    intrinsics = read_network(path).intrinsics
    names = network_labels(intrinsics)
    if not labels and names:
        labels = dict(enumerate(names))
        labels_source = f"the network_intrinsics in {path.name}"
    task = task or TASKS.get(str(intrinsics.get("task", "object detection")))
    if (intrinsics.get("cpu") or {}).get("softmax") and post.logits is None:
        post = replace(post, logits=True)
    return labels, labels_source, task, post


def load_spec(ref: str | Path, task: str | None = None) -> ModelSpec:
    """Resolve ``ref`` and gather its labels, manifest and embedded metadata (no interpreter).

    A repository of numbered versions gives its highest version that passes the checks that
    need no runtime (the daemon also verifies it in a child process: :mod:`edge.modelrepo`)."""
    if Path(ref).is_dir():
        # edge.modelrepo.scan imports this module: imported here, not at the top.
        from edge.modelrepo import scan

        if scan.is_repository(Path(ref)):
            return scan.newest_spec(Path(ref))
    path, directory = resolve(ref)
    manifest = (_read_manifest(directory) if directory else None) or {}
    where = str(directory / MANIFEST) if directory else str(path)
    known = {
        "name",
        "version",
        "model",
        "labels",
        "task",
        "description",
        "made_by",
        "preprocess",
        "postprocess",
        "metrics",
        "baseline",
        "sha256",
    }
    problems = [f"unknown key {k!r}" for k in sorted(set(manifest) - known)]
    pre = _dataclass_from(PreprocessConfig, manifest.get("preprocess"), "preprocess", problems)
    post = (
        _dataclass_from(PostprocessConfig, manifest.get("postprocess"), "postprocess", problems)
        or PostprocessConfig()
    )
    task = task or manifest.get("task")
    if task is not None and task not in TASKS:
        problems.append(f"task: {task!r} is not one of {', '.join(TASKS)}")
    if problems:
        raise ModelError(f"invalid model manifest {where}: " + "; ".join(problems))
    raw_baseline = manifest.get("baseline")
    baseline = None
    if raw_baseline is not None:
        from edge.drift import Baseline  # imported by the models that have a baseline

        baseline = Baseline.from_dict(raw_baseline, where)

    labels: dict[int, str] = {}
    label_file = None
    if directory:
        named = manifest.get("labels")
        candidates = [directory / str(named)] if named else [directory / n for n in LABEL_FILES]
        label_file = next((c for c in candidates if c.is_file()), None)
        if named and label_file is None:
            raise ModelError(f"{where} names labels file {named!r}, which does not exist")
    labels_source = ""
    if label_file is not None:
        try:
            labels = parse_labels(label_file.read_text(encoding="utf-8"))
        except UnicodeDecodeError as exc:
            raise ModelError(
                f"{label_file} is not UTF-8 text ({exc.reason} at byte {exc.start}); save it as "
                "UTF-8, one label per line"
            ) from exc
        except OSError as exc:
            raise ModelError(f"cannot read {label_file}: {exc.strerror}") from exc
        labels_source = str(label_file)

    name = str(manifest.get("name") or (directory.name if directory else path.stem))
    version = str(manifest.get("version", ""))
    description = str(manifest.get("description", ""))
    if path.suffix.lower() == NETWORK_SUFFIX:
        labels, labels_source, task, post = _network_facts(path, labels, labels_source, task, post)
    meta = read_metadata(path)
    if meta is not None:
        if not labels and meta.labels:
            labels, labels_source = meta.labels, f"the labels in {path.name}'s metadata"
        version = version or meta.version
        description = description or meta.description
        if pre is None and meta.mean is not None and meta.std is not None:
            pre = PreprocessConfig(mean=meta.mean, std=meta.std)
    return ModelSpec(
        path=path,
        name=name,
        version=version,
        task=task,
        labels=labels,
        preprocess=pre,
        postprocess=post,
        description=description,
        directory=directory,
        labels_source=labels_source,
        baseline=baseline,
    )
