"""`--data SPEC`: which images a run trains on.

A spec is one source (`cifar10`, `mnist`, `fashion-mnist`, `folder:PATH`) or a blend of
two (`blend:A+B`: image i of A averaged with image i of B). The study's data is
`blend:cifar10+mnist`, the default. A folder's path is made absolute, so the spec a run
records names the same images wherever the command was started.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from blendae.errors import BlendaeError

BUILTIN = ("cifar10", "mnist", "fashion-mnist")
FOLDER = "folder:"
BLEND = "blend:"
STUDY = "blend:cifar10+mnist"
PRESET_NAMES = ("seed", "unit", "data")  # see blendae.data.normalize
PAIRINGS = ("fixed", "random")
AUGMENTS = ("hflip", "vflip", "rot90", "transpose", "invert")  # see blendae.data.transforms
EXAMPLES = "cifar10, fashion-mnist, folder:PATH, blend:cifar10+mnist, blend:folder:PATH+mnist"


@dataclass(frozen=True)
class DataSpec:
    """One source, or the two sources of a blend, each a builtin name or `folder:/abs/path`."""

    sources: tuple[str, ...]

    def __str__(self) -> str:
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


def parse_spec(text: str) -> DataSpec:
    """Parse `--data`; a folder path may hold '+' (the split that names two sources wins)."""
    if not isinstance(text, str) or not text:
        raise BlendaeError(f"--data needs a spec such as {EXAMPLES}")
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
