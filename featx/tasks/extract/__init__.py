"""``featx-extract``: listing images, decoding them, the input transform, the extraction loop over ranks, and the
output folder (shards, manifest, settings) with ``read_features``."""
