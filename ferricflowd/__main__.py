"""`python -m ferricflowd ...` is the `ferricflowd` command."""

from __future__ import annotations

from ferricflowd.cli import main

if __name__ == "__main__":
    main()
