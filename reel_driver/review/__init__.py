"""`reel-driver review` and `reel-driver plots`: the code-review report against a baseline
revision (``report``), whether dvc.lock is current (``lock``), and what changed in the
training rows (``data_diff``).

May import reel_driver.tracking and the layers below it; independent of commands and serving.
"""
