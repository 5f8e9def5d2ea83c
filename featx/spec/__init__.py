"""The data layer (no torch): the spec's schema, its validation, loading it from names, files, mappings and
overrides, the apps' config schemas and their registration in Hydra's ConfigStore."""
