"""vizdesk: GPU remote desktops and batch jobs on Slurm clusters, opened in the browser."""

__version__ = "0.1.0"
