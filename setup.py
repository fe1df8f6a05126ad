"""The one compiled part: two SHA-256 chains interleaved on one core (x86 SHA extensions), lorahub/_sha256x2.c.

Everything else is configured in pyproject.toml. The extension is optional: without a C compiler the install
goes on, and ``lorahub fingerprint`` / ``lorahub index`` compute the two SHA-256 values with hashlib (the same
values, about twice the CPU).
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("lorahub._sha256x2", sources=["lorahub/_sha256x2.c"], optional=True)])
