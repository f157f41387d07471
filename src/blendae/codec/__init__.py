"""The learned image codec, on top of the models: the `.bae` container (`container`), which
model codes a file (`loader`), images ↔ bytes (`images`) and files ↔ files (`files`)."""

from blendae.codec.files import compress_files, decompress_files
from blendae.codec.images import compress, compress_batch, decompress, decompress_batch
from blendae.codec.loader import DEFAULT, Codec, load_codec, zoo_entries

__all__ = [
    "DEFAULT",
    "Codec",
    "compress",
    "compress_batch",
    "compress_files",
    "decompress",
    "decompress_batch",
    "decompress_files",
    "load_codec",
    "zoo_entries",
]
