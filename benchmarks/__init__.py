"""Benchmarks: figures printed as tables, never tests.

`python -m benchmarks` runs the accuracy and speed benchmark (accuracy.py, with the
hard set in hardset.py, the real set in realset.py, scoring rules in scoring.py, the
daemon replay in stream.py, timing and memory in speed.py).
"""
