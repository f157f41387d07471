"""`python -m blendae` is the `blendae` command."""

from blendae.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
