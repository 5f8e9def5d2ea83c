"""The only place that talks to model registries (torchvision): model names, constructing a model (on the meta
device, or with only the kept layers allocated), weights enums and their cached files."""
