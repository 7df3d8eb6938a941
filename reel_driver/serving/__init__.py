"""`reel-driver serve`: the prediction API the media pipeline calls (``api``), on the
registry's champion.

May import reel_driver.tracking and the layers below it; independent of commands and review.
"""
