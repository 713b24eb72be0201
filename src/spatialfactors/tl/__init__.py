"""Tools: AnnData wrappers that validate input, call an engine and write the results."""

__all__: list[str] = []
