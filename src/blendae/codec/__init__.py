"""The learned image codec, on top of the models: the `.bae` container (`container`), which
model codes a file (`loader`, `zoo`), images ↔ bytes (`images`), files ↔ files (`files`) and
the torch-free decoder (`decode`). The names below load their module on first use
(`blendae.lazy`), so `container`, `zoo` and `decode` import without torch.
"""

from blendae.lazy import attributes

_HOMES = {
    "DEFAULT": "zoo",
    "zoo_entries": "zoo",
    "Codec": "loader",
    "load_codec": "loader",
    "compress": "images",
    "compress_batch": "images",
    "decompress": "images",
    "decompress_batch": "images",
    "compress_files": "files",
    "decompress_files": "files",
}
__all__ = sorted(_HOMES)
__getattr__ = attributes(__name__, _HOMES)
