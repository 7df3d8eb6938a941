"""MLflow: where runs go and what ties them to DVC and git (``runs``), what train and evaluate
record (``records``), and the model registry with its `champion` alias (``registry``).

May import reel_driver.model and the layers below it.
"""
