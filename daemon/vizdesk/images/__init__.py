"""Apptainer images: the catalog (discovery, metadata, Redis cache) and resolution of a
user's image reference to a ``.sif`` path."""
