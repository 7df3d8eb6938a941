"""reel-driver: a movie-preference classifier whose life runs through DVC.

The subpackages are layers; each may import the ones below it, never one above
(the import contract in pyproject.toml, checked by tests/test_architecture.py):

    cli            the `reel-driver` dispatcher; imports config only, a command's module when it runs
    commands       predict, publish, promote  |  serving: the HTTP API  |  review: the code-review report
    tracking       MLflow: the runs, the registry and its champion alias
    model          metrics, the search, the ensemble, scoring, and train's and evaluate's pure steps
                   |  selection: the feature analysis of seed 001 and the selection train reads
    preparation    which rows train, the stable hold-out, the feature build (fitted on training rows)
    data           the table's schema, PostgreSQL, the synthetic sample, atomic output files
    config         params.yaml as typed objects, every path, the user-facing error

The dvc.yaml stages live outside the package, in stages/, and call into it.
"""
