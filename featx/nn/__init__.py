"""The modules users hold: :class:`~featx.nn.backbone.Backbone`, the FPN neck, norm policies and freezing, and
re-initialisation."""
