"""Entry point for ``python -m spatialfactors``."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
