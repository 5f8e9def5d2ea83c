"""From a spec to a backbone: stage members and their execution order, the meta-device probe (channels, strides),
the plan, materialising the kept layers, reading and fitting weights, the checkpoint format, ``build``/``load``,
and ``propose`` (finding the stages of any model)."""
