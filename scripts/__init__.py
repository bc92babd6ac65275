"""3DDX bone surface reconstruction bundle: the package that configs reach by ``_target_``."""
