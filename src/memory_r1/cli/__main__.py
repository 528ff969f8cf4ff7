"""``python -m memory_r1.cli``: the ``memory-r1`` command."""

from memory_r1.cli import main

if __name__ == "__main__":  # pragma: no cover
    main()
