"""`--data SPEC`: which images a run trains on.

A spec is one source (`cifar10`, `mnist`, `fashion-mnist`, `folder:PATH`), a blend of
two (`blend:A+B`: image i of A averaged with image i of B), or a mixture of such specs
(`mix:A,B,...`: the union of their images, for a model meant to code all of them). The
study's data is `blend:cifar10+mnist`, the default. A folder's path is made absolute, so
the spec a run records names the same images wherever the command was started.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from blendae.errors import BlendaeError

BUILTIN = ("cifar10", "mnist", "fashion-mnist")
FOLDER = "folder:"
BLEND = "blend:"
MIX = "mix:"
STUDY = "blend:cifar10+mnist"
PRESET_NAMES = ("seed", "unit", "data")  # see blendae.data.normalize
PAIRINGS = ("fixed", "random")
AUGMENTS = ("hflip", "vflip", "rot90", "transpose", "invert")  # see blendae.data.transforms
EXAMPLES = (
    "cifar10, fashion-mnist, folder:PATH, blend:cifar10+mnist, blend:folder:PATH+mnist, "
    "mix:cifar10,mnist,blend:cifar10+mnist"
)


@dataclass(frozen=True)
class DataSpec:
    """One source, or the two sources of a blend, each a builtin name or `folder:/abs/path`;
    or a mixture: its parts, each one of those (no sources of its own)."""

    sources: tuple[str, ...]
    parts: tuple[DataSpec, ...] = ()

    def __str__(self) -> str:
        if self.parts:
            return MIX + ",".join(str(p) for p in self.parts)
        return self.sources[0] if len(self.sources) == 1 else BLEND + "+".join(self.sources)

    @property
    def is_blend(self) -> bool:
        return len(self.sources) == 2

    @property
    def is_study(self) -> bool:
        return str(self) == STUDY


def _source(text: str) -> str | None:
    """The canonical form of one source, or None when `text` is not one."""
    if text in BUILTIN:
        return text
    if text.startswith(FOLDER) and len(text) > len(FOLDER):
        return FOLDER + str(Path(text[len(FOLDER) :]).expanduser().absolute())
    return None


@lru_cache(maxsize=256)  # the split search revisits tails: remembering them keeps it linear
def _mixture(body: str) -> tuple[DataSpec, ...] | None:
    """The parts of a mixture's body, or None; a folder path may hold ',' (the split into
    the most specs that all parse wins, the earliest commas first)."""
    if not body:
        return None
    for i, char in enumerate(body):
        if char == ",":
            try:
                head = parse_spec(body[:i], mixture=False)
            except BlendaeError:
                continue
            rest = _mixture(body[i + 1 :])
            if rest is not None:
                return (head, *rest)
    try:
        return (parse_spec(body, mixture=False),)
    except BlendaeError:
        return None


def parse_spec(text: str, mixture: bool = True) -> DataSpec:
    """Parse `--data`; a folder path may hold '+' (the split that names two sources wins)."""
    if not isinstance(text, str) or not text:
        raise BlendaeError(f"--data needs a spec such as {EXAMPLES}")
    if mixture and text.startswith(MIX):
        parts = _mixture(text[len(MIX) :])
        if not parts or len(parts) < 2 or len(set(parts)) != len(parts):
            raise BlendaeError(
                f"--data {text!r}: a mixture names two or more different specs, mix:A,B,..., "
                "each a source or a blend (not a mixture)"
            )
        return DataSpec((), parts)
    if text.startswith(BLEND):
        body = text[len(BLEND) :]
        for i, char in enumerate(body):
            if char == "+":
                a, b = _source(body[:i]), _source(body[i + 1 :])
                if a and b:
                    return DataSpec((a, b))
        raise BlendaeError(
            f"--data {text!r}: a blend names two sources, blend:A+B, each one of "
            f"{', '.join(BUILTIN)} or folder:PATH"
        )
    source = _source(text)
    if source is None:
        raise BlendaeError(f"unknown --data {text!r}; examples: {EXAMPLES}")
    return DataSpec((source,))


def check_augments(ops: Sequence[str]) -> tuple[str, ...]:
    """`ops` as a tuple, each a known augmentation named once."""
    unknown = [op for op in ops if op not in AUGMENTS]
    if unknown or len(set(ops)) != len(ops):
        raise BlendaeError(
            f"--augment {','.join(ops)}: name each of {', '.join(AUGMENTS)} at most once"
        )
    return tuple(ops)
