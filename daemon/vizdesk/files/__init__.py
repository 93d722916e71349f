"""Users' files (uploads, job directories, results): every file operation runs in a small
helper program AS THE USER (:mod:`.helper`, through ``slurm.submit_prefix``), so the kernel
enforces the user's own permissions and the daemon never touches a user's path itself.

This package's ``__init__`` stays empty: the helper is started as ``python -m
vizdesk.files.helper`` for every operation and must import nothing heavy.
"""
