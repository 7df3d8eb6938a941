"""The model: the metrics contract (``metrics``), the grid search (``search``), the ensemble's
members (``ensemble``), scoring raw rows (``scoring``), and the pure steps of train
(``fitting``) and evaluate (``reporting``).

May import reel_driver.preparation, reel_driver.data and reel_driver.config; no MLflow.
"""
