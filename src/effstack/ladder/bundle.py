"""The bundle: a folder ``effstack serve`` loads as it is.

::

    BUNDLE/
      manifest.json   kind, schema, model name and fingerprint, input spec, files with sha256, versions, machine
      serving.json    a ServingConfig: model file, engine, precision, max batch, budget, instances, threads
      model.onnx      the chosen artifact (an INT8 build is a QDQ ONNX file; a torch rung is model.ts)
      ladder.json     every rung's measurements (the same JSON ``effstack ladder --json`` writes)
      report.html     the self-contained report
      tokenizer.json  text models only: the tokenizer the server runs (serving.json's ``text`` points at it,
                      the manifest's ``text`` holds the max length and pad id), so the bundle serves texts
                      without the model's original folder

The folder is built next to its destination and swapped in at the end, so a reader never sees half a
bundle, and a failed write leaves the previous bundle as it was. :func:`read_bundle` checks every file
against the manifest's hashes, so a truncated or edited file is refused with its name.

>>> path = write_bundle(result, "bundles/resnet50")     # doctest: +SKIP
>>> manifest, serving = read_bundle(path)              # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from .._files import atomic_dir
from ..errors import ArtifactError, ConfigError
from .core import KEPT
from .runner import LadderResult, Variant

__all__ = ["BUNDLE_KIND", "write_bundle", "read_bundle", "is_bundle"]

BUNDLE_KIND = "effstack.bundle"
SCHEMA = 1


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def is_bundle(path: str | Path) -> bool:
    """True when ``path`` is a folder holding a bundle manifest."""
    return (Path(path) / "manifest.json").is_file()


def _write_artifact(variant: Variant, engine: str, folder: Path) -> str:
    """Put the variant's runnable file in ``folder``; returns its file name."""
    if variant.int8:
        src = variant.details.get("artifact")
        if not src or not Path(src).is_file():
            raise ArtifactError(f"the INT8 build of {variant.label!r} has no file to bundle; run the ladder again")
        shutil.copyfile(src, folder / "model.onnx")
        return "model.onnx"
    model = variant.model
    if engine == "torch":
        import torch

        if getattr(model, "module", None) is None:
            raise ArtifactError(f"{variant.label!r} has no torch module to save for the torch engine")
        x = torch.from_numpy(model.input.example(1))
        with torch.inference_mode():
            traced = torch.jit.trace(model.module, x)
        traced.save(str(folder / "model.ts"))
        return "model.ts"
    from ..export import export_onnx

    shutil.copyfile(export_onnx(model), folder / "model.onnx")
    return "model.onnx"


TOKENIZER_FILES = ("tokenizer.json",)  # what TextTokenizer reads; the rest of a Hugging Face folder is not needed


def _text_model(variant: Variant) -> Any:
    """The loaded text model behind a variant (an INT8 build: its float parent's), or None for other models."""
    for v in (variant, variant.float_parent):
        model = getattr(v, "model", None)
        if isinstance(getattr(model, "meta", None), dict) and model.meta.get("text"):
            return model
    return None


def _write_tokenizer(info: dict[str, Any], folder: Path) -> dict[str, Any]:
    """Copy a text model's tokenizer into the bundle; returns the serving config's ``text`` setting."""
    src = Path(info["folder"])
    for fname in TOKENIZER_FILES:
        if not (src / fname).is_file():
            raise ArtifactError(f"the text model's {fname} is missing from {str(src)!r}; cannot bundle its tokenizer")
        shutil.copyfile(src / fname, folder / fname)
    return {"tokenizer": ".", "max_length": int(info["max_length"]), "pad_id": int(info.get("pad_id", 0))}


def write_bundle(result: LadderResult, out: str | Path, *, name: str | None = None, overwrite: bool = True,
                 report_html: str | None = None) -> Path:
    """Write the ladder's chosen configuration as a servable bundle at ``out``; returns the folder.

    Args:
        result: a climbed ladder (its ``variants`` must still hold the chosen model).
        out: the bundle folder; an existing *bundle* there is replaced atomically, anything else is refused.
        name: the protocol name (default: the model's name).
        report_html: the HTML report to include (default: rendered from ``result``).

    Raises:
        ConfigError: the ladder kept nothing within budget, or ``out`` is a non-bundle folder with files.
        ArtifactError: the chosen model cannot be written.
    """
    from ..serve.config import ServingConfig

    out = Path(out)
    final = result.final
    if result.infeasible or final is None or final.config is None or final.status != KEPT:
        raise ConfigError(f"nothing to bundle: {result.infeasible or 'the ladder kept no configuration'}")
    # an INT8 build is per engine under one label: the chosen engine's own, when the climb made one for each
    variant = result.variants.get(f"{final.variant}@{final.config.engine}") or result.variants.get(final.variant)
    if variant is None:
        raise ConfigError(f"the chosen model {final.variant!r} is not in this result; bundle right after the climb")
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not is_bundle(out))):
        raise ConfigError(f"{str(out)!r} exists and is not an effstack bundle; choose an empty or new folder")
    cfg = final.config
    model_name = name or _safe(result.model)
    text_model = _text_model(variant)
    text = dict(text_model.meta["text"]) if text_model is not None else None
    with atomic_dir(out) as tmp:  # the previous bundle stays as it was unless the new one is complete
        artifact = _write_artifact(variant, cfg.engine, tmp)
        threads = cfg.threads * cfg.instances if cfg.threads else None
        text_setting = _write_tokenizer(text, tmp) if text else None
        spec: Any = artifact
        if text:  # token ids with a dynamic length: the file's input shape alone does not say the max length
            from ..models.spec import ModelSpec

            spec = ModelSpec(artifact, input=text_model.input)
        serving = ServingConfig(model=spec, name=model_name, engine=cfg.engine,
                                precision=variant.float_precision if variant.int8 else cfg.precision,
                                max_batch=cfg.batch, latency_budget_ms=result.budget.p99_ms,
                                instances=cfg.instances, threads=threads, text=text_setting)
        _dump(tmp / "serving.json", serving.to_dict())
        _dump(tmp / "ladder.json", result.to_dict())
        if report_html is None:
            from ..report.html import ladder_html

            report_html = ladder_html(result)
        (tmp / "report.html").write_text(report_html, encoding="utf-8")
        model = variant.model
        manifest = {
            "kind": BUNDLE_KIND, "schema": SCHEMA, "name": model_name, "model": result.model,
            "variant": variant.label, "rung": final.step, "config": cfg.to_dict(),
            "executed_precision": "int8" if variant.int8 else cfg.precision,
            "fingerprint": getattr(model, "fingerprint", ""), "input": model.input.to_dict(),
            "measured": final.measured.to_dict() if final.measured else None,
            "speedup": final.cumulative_speedup, "budget": result.budget.to_dict(),
            "versions": result.versions, "machine": result.machine,
            **({"text": {k: text[k] for k in ("max_length", "pad_id", "layers", "hidden") if k in text}
                | {"tokenizer": "tokenizer.json"}} if text else {}),
            "files": {f.name: _sha256(f) for f in sorted(tmp.iterdir()) if f.is_file()},
        }
        _dump(tmp / "manifest.json", manifest)
    return out


def _safe(name: str) -> str:
    from ..export._cache import safe_name

    return safe_name(name)[:128]


def _dump(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")


def read_bundle(path: str | Path) -> tuple[dict[str, Any], Any]:
    """Read and verify a bundle: ``(manifest, ServingConfig)``.

    Raises:
        ArtifactError: not a bundle, a newer schema, a missing file, or a file whose hash does not match.
    """
    from ..report.jsonio import read_json
    from ..serve.config import ServingConfig

    folder = Path(path)
    if not is_bundle(folder):
        raise ArtifactError(f"{str(folder)!r} is not an effstack bundle (no manifest.json); "
                            "write one with 'effstack ladder ... --bundle DIR'")
    manifest = read_json(folder / "manifest.json", "bundle manifest")
    if not isinstance(manifest, dict) or manifest.get("kind") != BUNDLE_KIND:
        raise ArtifactError(f"{str(folder / 'manifest.json')!r} is not an effstack bundle manifest")
    if int(manifest.get("schema", 0)) > SCHEMA:
        raise ArtifactError(f"bundle schema {manifest.get('schema')} is newer than this effstack reads ({SCHEMA}); "
                            "upgrade effstack")
    for fname, digest in (manifest.get("files") or {}).items():
        f = folder / fname
        if not f.is_file():
            raise ArtifactError(f"bundle file {fname!r} is missing from {str(folder)!r}; write the bundle again")
        if _sha256(f) != digest:
            raise ArtifactError(f"bundle file {fname!r} does not match its manifest hash (truncated or edited); "
                                "write the bundle again")
    return manifest, ServingConfig.read(folder / "serving.json")
