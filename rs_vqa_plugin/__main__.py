"""`python -m rs_vqa_plugin <command>`: the engine's command line."""

import sys

from .commands import main

if __name__ == "__main__":
    sys.exit(main())
