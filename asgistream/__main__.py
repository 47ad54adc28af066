"""``python -m asgistream URL``: the command-line client (needs the ``client`` extra)."""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command-line client, or say which extra it needs."""
    try:
        from .client.cli import main as cli
    except ImportError as exc:
        if exc.name != "httpx":
            raise
        print(
            "asgistream: the command-line client needs the 'client' extra: "
            "pip install 'asgistream[client]'",
            file=sys.stderr,
        )
        return 2
    return cli(argv)


if __name__ == "__main__":
    sys.exit(main())
