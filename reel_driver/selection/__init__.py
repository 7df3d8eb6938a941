"""The feature analysis of seed 001 on training rows: the flowchart's tests and the selection
train reads (``analysis``), its plots (``analysis_plots``) and its report (``report``).

May import reel_driver.preparation, reel_driver.data and reel_driver.config; independent of
reel_driver.model.
"""
