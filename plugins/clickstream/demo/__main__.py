"""``python -m clickstream.demo ...``: see :mod:`clickstream.demo` and ``python -m clickstream.demo --help``."""

from __future__ import annotations

from clickstream.demo.commands import main

if __name__ == "__main__":
    raise SystemExit(main())
