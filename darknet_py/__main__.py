"""`python -m darknet_py ...` and the `darknet` console script: upstream's command line (cli.py),
in a process set up first by hostmem (before the command line loads torch)."""
import sys

from .hostmem import restart_with_malloc_env


def console() -> int:
    restart_with_malloc_env()
    from .cli import main

    return main()


if __name__ == "__main__":
    sys.exit(console())
