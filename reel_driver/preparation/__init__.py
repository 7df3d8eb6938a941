"""What prep, predict and the served model share, so that training and serving stay equal:
which rows train and which are the backlog (``rows``), the training rows checked and split
into a stable hold-out (``training_set``), and the feature build fitted on training rows and
applied to any rows (``features``).

May import reel_driver.data and reel_driver.config.
"""
