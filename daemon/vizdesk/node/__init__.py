"""Compute-node side: the `vizdesk node vnc` wrapper that a Slurm job runs."""
