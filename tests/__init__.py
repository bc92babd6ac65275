"""The bundle's tests (a package, so that pytest puts the repository root on ``sys.path`` and tests share :mod:`tests.helpers`)."""
