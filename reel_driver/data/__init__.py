"""The media table at the edges: its schema (``schema``), PostgreSQL reads and writes
(``database``), the synthetic sample a newcomer's clone runs on (``sample``), and atomic
output files (``outputs``).

May import reel_driver.config.
"""
