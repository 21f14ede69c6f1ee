"""Model artefacts that are verified before they are loaded.

A registered co2cast model is an MLflow pyfunc model whose *loader is part of the installed
package* (``loader_module="pipeline.pyfunc_loader"``): the artefact holds only data — the
forecaster's ``model.json`` and ``arrays.npz``, a ``serving.json`` and MLflow's own metadata —
and no Python code that loading would execute. When a model is logged, the sha256 of every file
of its artefact is computed from what the tracking server actually stored; the registry keeps
that digest as a tag on the model version (:data:`DIGEST_TAG`). Before a model is loaded its
files are downloaded and checked against that digest; a changed, missing or extra file refuses
the load and names the file.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.errors import PermanentError

#: Model-version tag holding ``{relative path: sha256}`` of the model's artefact, as JSON.
DIGEST_TAG = "co2cast.artifact_sha256"
LOADER_MODULE = "pipeline.pyfunc_loader"
SERVING_FILE = "serving.json"
#: Written by MLflow into a model directory when it is *downloaded* through a ``models:/`` URI
#: (name and version of the registered model): not part of the stored artefact.
DOWNLOAD_ONLY_FILES = frozenset({"registered_model_meta"})


class IntegrityError(PermanentError):
    """A model artefact or published file does not match the digest recorded for it."""


class ArtifactGone(IntegrityError):
    """Not one file of a model artefact is left (its logged model deleted in MLflow and removed by ``mlflow gc``, or its
    folder removed by hand): unlike a changed file, nothing in MLflow can bring it back."""


def tree_digest(root: str | Path) -> dict[str, str]:
    """The sha256 of every file below ``root``, by ``/``-separated relative path, sorted."""
    base = Path(root)
    digest = {}
    for path in sorted(p for p in base.rglob("*") if p.is_file()):
        name = path.relative_to(base).as_posix()
        if name not in DOWNLOAD_ONLY_FILES:
            digest[name] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digest


def verify_tree(root: str | Path, expected: Mapping[str, str], what: str) -> None:
    """Check that the files below ``root`` are exactly ``expected``.

    Raises:
        ArtifactGone: not one file is left.
        IntegrityError: a file is missing, changed or was added; the message names it.
    """
    actual = tree_digest(root)
    if not actual:  # MLflow downloads an artefact that is gone as an empty folder
        raise ArtifactGone(
            f"{what}: its model files are gone from the artefact store (none of its {len(expected)} files is left: its logged "
            "model deleted in MLflow and removed by `mlflow gc`, or its folder removed?); it cannot be loaded"
        )
    hint = _restore_hint(what)
    for name, sha in sorted(expected.items()):
        if name not in actual:
            raise IntegrityError(f"{what}: file {name} is missing; refusing to load it: {hint}")
        if actual[name] != sha:
            raise IntegrityError(f"{what}: file {name} does not match its recorded sha256; refusing to load it: {hint}")
    extra = sorted(set(actual) - set(expected))
    if extra:
        raise IntegrityError(f"{what}: unexpected file {extra[0]} in the artefact; refusing to load it: {hint}")


def _restore_hint(what: str) -> str:
    """What to do about a registered version whose files changed (``what``: ``co2cast.<series> vN``, or a URI)."""
    name = what.split(" ")[0]
    series = name.removeprefix("co2cast.") if name.startswith("co2cast.") and " v" in what else "SERIES"
    return f"restore it from a backup (with none: `co2cast rollback {series}` if it is served, else delete the version in MLflow and rerun)"


def log_forecaster(
    model: Any, horizon_end: int, levels: tuple[int, ...] = (80, 95), name: str = "model", family: str | None = None
) -> tuple[Any, dict[str, str]]:
    """Log a fitted forecaster in the active MLflow run, with the package's own loader.

    Args:
        model: the fitted forecaster.
        horizon_end: the last year it may be asked for.
        levels: its interval levels.
        name: the logged model's name in the run.
        family: the candidate name it is registered under (the registry's family tag), kept in
            ``serving.json``, which the digest covers: a family tag edited in the MLflow UI is
            told on load (:func:`load_verified`), as an edited file is.

    Returns:
        MLflow's ``ModelInfo`` and the digest of the artefact as stored (for :data:`DIGEST_TAG`).
    """
    import mlflow
    import pandas as pd
    from mlflow.models import infer_signature

    with tempfile.TemporaryDirectory() as tmp:
        data = model.save(Path(tmp) / "forecaster")
        serving = {"horizon_end": int(horizon_end), "levels": [int(v) for v in levels]}
        (data / SERVING_FILE).write_text(json.dumps(serving | ({"family": family} if family is not None else {})))
        first = int(model.years_[-1]) + 1
        example = pd.DataFrame({"year": [first, first + 1]})
        output = model.predict(2, levels=levels).to_frame()
        with warnings.catch_warnings():
            # MLflow hints about integer columns and input examples; the signature is explicit.
            warnings.simplefilter("ignore", UserWarning)
            info = mlflow.pyfunc.log_model(
                name=name,
                loader_module=LOADER_MODULE,
                data_path=str(data),
                signature=infer_signature(example, output),
                pip_requirements=[],  # served from an environment with co2cast installed
            )
    return info, stored_digest(info.model_uri)


def stored_digest(model_uri: str) -> dict[str, str]:
    """The digest of a logged model's artefact as the tracking server holds it."""
    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        local = mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=tmp)
        return tree_digest(local)


def load_verified(model_uri: str, expected: Mapping[str, str] | str | None, what: str | None = None, family: str | None = None) -> Any:
    """Download a model, check every file against its recorded digest, then load it.

    Args:
        model_uri: e.g. ``models:/co2cast.canada.co2_per_capita/3``.
        expected: the digest recorded when it was logged (a mapping, or its JSON text).
        what: how to name the model in an error (default: the URI).
        family: the family its registered version's tag names (``""`` when the tag was removed):
            checked against the family its verified ``serving.json`` records (a model logged
            before it was recorded there is not checked); ``None``: no check.

    Raises:
        IntegrityError: no digest was recorded, a file does not match it, or the family tag is
            not the family the model was registered as.
    """
    import mlflow

    label = what or model_uri
    if not expected:
        raise IntegrityError(f"{label}: no artefact digest is recorded (tag {DIGEST_TAG}); refusing to load an unverified model")
    digest = _digest_of(expected)
    if digest is None:  # the tag edited by hand (in the MLflow UI): it vouches for nothing
        raise IntegrityError(
            f"{label}: its artefact digest (tag {DIGEST_TAG}) is not the {{file: sha256}} JSON co2cast records (edited in MLflow?); "
            "refusing to load an unverified model"
        )
    with tempfile.TemporaryDirectory() as tmp:
        local = mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=tmp)
        verify_tree(local, digest, label)
        if family is not None:
            _check_family(Path(local), family, label)
        return mlflow.pyfunc.load_model(local)


def _check_family(local: Path, family: str, label: str) -> None:
    """Refuse a model whose registry family tag is not the family its (verified) ``serving.json`` records."""
    from pipeline.tracking import FAMILY_TAG

    found = sorted(local.rglob(SERVING_FILE))
    logged = json.loads(found[0].read_text()).get("family") if found else None
    if logged is not None and str(logged) != family:
        tag = f"says {family!r}" if family else "was removed"
        raise IntegrityError(
            f"{label}: its tag {FAMILY_TAG} {tag}, but it was registered as {logged!r} (edited in MLflow?): "
            f"set the tag back to {logged!r}; refusing to load it"
        )


def _digest_of(expected: Mapping[str, str] | str) -> dict[str, str] | None:
    """A recorded digest as ``{relative path: sha256}``, or ``None`` when it is not one (e.g. a tag edited by hand)."""
    try:
        digest = json.loads(expected) if isinstance(expected, str) else dict(expected)
    except (ValueError, TypeError):
        return None
    if not isinstance(digest, dict) or not digest or not all(isinstance(k, str) and isinstance(v, str) for k, v in digest.items()):
        return None
    return digest


def registered_digest(model_name: str, version: str) -> str | None:
    """The digest tag recorded on a registered model version, or ``None``."""
    from mlflow import MlflowClient

    return MlflowClient().get_model_version(model_name, str(version)).tags.get(DIGEST_TAG)


def load_registered(model_name: str, version_or_alias: str | int) -> Any:
    """Load a registered co2cast model, verified against the digest on its version.

    The one way to load a registered model: ``load_registered("co2cast.canada.co2_per_capita",
    "champion")`` (an alias) or ``load_registered(name, 3)`` (a version).

    Returns:
        The MLflow ``PyFuncModel`` (``predict`` takes a DataFrame with a ``year`` column).

    Raises:
        IntegrityError: no digest on the version, or a file of its artefact was changed,
            removed or added (the message names it).
    """
    from mlflow import MlflowClient

    client = MlflowClient()
    text = str(version_or_alias)
    version = client.get_model_version(model_name, text) if text.isdigit() else client.get_model_version_by_alias(model_name, text)
    from pipeline.tracking import FAMILY_TAG

    what, digest = f"{model_name} v{version.version}", version.tags.get(DIGEST_TAG)
    return load_verified(f"models:/{model_name}/{version.version}", digest, what=what, family=version.tags.get(FAMILY_TAG) or "")


def served_forecaster(model: Any) -> Any:
    """The fitted forecaster inside a loaded co2cast pyfunc model."""
    return model.get_raw_model()
