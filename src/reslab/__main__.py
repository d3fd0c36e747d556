"""``python -m reslab`` is the same as the ``reslab`` command."""

from reslab.cli import entry

if __name__ == "__main__":
    entry()
