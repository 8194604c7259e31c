"""``python -m transmask``: the same command line as the ``transmask`` console script."""
from transmask.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
