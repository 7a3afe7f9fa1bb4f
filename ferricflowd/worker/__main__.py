"""`python -m ferricflowd.worker ...`: one worker process (see process.py)."""

from __future__ import annotations

from ferricflowd.worker.process import main

if __name__ == "__main__":
    main()
