"""The ``lorahub`` command line: a thin click face over the library."""
