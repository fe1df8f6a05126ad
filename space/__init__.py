"""lorahub.space."""
