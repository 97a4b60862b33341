"""The checkout's form of the ``featcache`` command: ``python pipeline.py run ...``.

The command itself lives in :mod:`featcache.cli` (installed as ``featcache``); this file is not
installed.
"""

import sys

from featcache.cli import build_parser, main  # noqa: F401 - build_parser: the docs generate the CLI reference from it

if __name__ == "__main__":
    sys.exit(main())
