"""Packaging design recommendation: from a product brief to palettes, fonts, layout and mock-ups."""
