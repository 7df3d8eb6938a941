"""The user's commands around the pipeline: ``predict`` (score raw rows or the backlog),
``publish`` (predictions into atp.prediction) and ``promote`` (the gated `champion` alias).

May import reel_driver.tracking and the layers below it; independent of serving and review.
"""
