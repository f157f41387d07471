"""The shipped codec models' records, read without loading any weights (so without torch):
what `compress --help` lists, and which model a file's id names.

Shipped models live in `blendae/zoo/` as `NAME.safetensors` (weights and integer tables)
and `NAME.json` (what trained them, their id and preset); `earlier.json` names the models
earlier releases shipped.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from blendae.errors import BlendaeError

DEFAULT = "general"  # the model `blendae compress` uses without --model
# The study's specialised blend zoo, also named blend-q0..blend-q4 (`--model blend-q3`).
ALIASES = {f"blend-q{k}": f"q{k}" for k in range(5)}
NOT_CODECS = ("earlier", "separate")  # JSON files in the zoo folder that are not codecs


def zoo_folder() -> Path:
    return Path(str(resources.files("blendae") / "zoo"))


@lru_cache(maxsize=1)
def zoo_entries() -> dict[str, dict[str, Any]]:
    """Name → metadata of every shipped codec model, in name order, models that a newer one
    replaced last (they are kept so that their files decode)."""
    found: dict[str, dict[str, Any]] = {}
    for meta_path in sorted(zoo_folder().glob("*.json")):
        if meta_path.stem not in NOT_CODECS:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            found[meta["name"]] = meta
    return dict(sorted(found.items(), key=lambda item: "superseded_by" in item[1]))


def offered() -> dict[str, dict[str, Any]]:
    """The shipped models a user picks from (what help and the compare page list): all but
    those a newer model replaced, which stay in the zoo so that their files decode."""
    return {name: meta for name, meta in zoo_entries().items() if "superseded_by" not in meta}


def training_sets(meta: dict[str, Any]) -> list[str]:
    """The `--data` specs of the image sets a zoo model trained on (a mixture's parts, from
    its JSON's data manifest; [] for a model of the study's blends alone)."""
    manifest = meta.get("data", {}).get("manifest") or {}
    return [part["data"] for part in manifest.get("parts", [])]


def canonical(name: str) -> str:
    """A shipped model's name with its alias resolved (blend-q3 → q3); others unchanged."""
    return ALIASES.get(name, name)


def check_quality(model: str | None, quality: int | None) -> None:
    """Refuse `quality` for a shipped fixed-rate model, from its JSON alone (no weights, no
    torch): the error comes before any image is read. Other models are checked on loading.
    """
    if quality is None:
        return
    name = DEFAULT if model is None else canonical(model)
    meta = zoo_entries().get(name)
    if meta is not None and meta.get("quality") is None:  # variable-rate models record one
        shown = name if model is None or model == name else f"{model} ({name})"
        raise BlendaeError(
            f"--quality {quality}: model {shown} codes at one fixed rate; --quality needs a "
            f"variable-rate model ({DEFAULT}, the default); drop --quality or --model"
        )


def unknown_model(ident: bytes, asked: str | None, asked_id: str | None) -> BlendaeError:
    """The error for a file whose model id `ident` is neither the model `asked` for (with id
    `asked_id`) nor a shipped one; it names the release that shipped it, if one did."""
    earlier = json.loads((zoo_folder() / "earlier.json").read_text(encoding="utf-8"))
    hint = "pass the run folder of the model that made it with --model"
    if ident.hex() in earlier:  # a model an earlier release shipped
        known = earlier[ident.hex()]
        hint = (
            f"it is blendae {known['release']}'s {known['model']}, kept in the source "
            f"repository: pass --model {known['path']} (or decode it with blendae "
            f"{known['release']})"
        )
    return BlendaeError(
        f"the file was made by codec model {ident.hex()}, which is "
        + (f"not {asked!r} (id {asked_id}) nor " if asked else "not ")
        + f"a shipped model; {hint}"
    )
