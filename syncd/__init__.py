"""syncd: keeps hot folders of product images mirrored into an Assets library."""

__version__ = "0.1.0"
