#!/usr/bin/env python
"""Django's command-line utility for MicroVibe."""
import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "microvibe.settings")
    from microvibe import event_loop

    event_loop.install()  # before Django loads daphne, which creates the loop
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
