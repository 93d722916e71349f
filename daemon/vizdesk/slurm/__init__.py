"""Scheduler adapters: the Slurm CLI backend and the pyslurm backend behind one interface."""
