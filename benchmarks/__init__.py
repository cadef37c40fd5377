"""syncd's benchmarks: each measure beside a baseline run in the same process tree.

    python -m benchmarks [--quick | --scale F] [--only NAME ...] [--out PATH]

Not part of the pass/fail suite: figures and ratios are printed and written as JSON,
never asserted. Every measure builds its own data in a temporary folder.
"""
