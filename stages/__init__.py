"""reel-driver: one module per dvc.yaml stage, plus the few modules they share."""
