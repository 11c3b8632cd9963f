"""The training config: model defaults, presets, overrides, their types and ranges."""
