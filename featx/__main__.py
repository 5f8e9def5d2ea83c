"""``python -m featx``: the same app as the ``featx`` console script."""

from featx.cli.main import main

main()
