"""Helpers shared by the benchmark scripts in ``bench/`` (not a benchmark itself).

``make bench`` runs every ``bench/*.py``; this package lives one level down so it is not run.
"""
