"""What every layer reads: params.yaml as typed objects (``params``), every path written once
(``paths``), and the one error a user can act on (``errors``).

Imports nothing of reel_driver outside itself.
"""
