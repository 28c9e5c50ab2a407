"""`python -m bot`: the same as the `reprint-bot` command."""

from bot.cli import main

if __name__ == "__main__":
    main()
