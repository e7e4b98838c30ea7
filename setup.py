"""Builds the optional C scanner of the logs fast path; everything else is in pyproject.toml.

`optional=True`: where no C compiler or Python headers are found the build goes on without
it, and relayguard runs its pure-Python scanner (same results, slower).
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("relayguard._fastscan", ["relayguard/_fastscan.c"],
                             optional=True)])
