"""`lossc` on the command line (and `python -m lossc`): lossc.cli's commands, with a
Ctrl-C while they are still being imported ended as one during a command is: one
line, exit status 130 (it was a traceback from whichever import it fell in)."""
import sys


def main() -> None:
    try:
        from lossc.cli import main as commands
    except KeyboardInterrupt:
        print("\nlossc: interrupted", file=sys.stderr)
        sys.exit(130)
    commands()


if __name__ == "__main__":
    main()
