"""`python -m ferricflowd.console`: the console process the supervisor starts."""

from ferricflowd.console.server import main

if __name__ == "__main__":
    main()
