"""The dvc.yaml stages, one module each (`python -m stages.<name>` from the repository root).

Each is I/O around calls into reel_driver: params, read, pure steps, write atomically. No
stage imports another (the import contract in pyproject.toml). Not installed: DVC runs
them from the repository.
"""
