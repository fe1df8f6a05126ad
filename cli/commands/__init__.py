"""One module per command family. No heavy imports at module level."""
