"""bootkit: USB device bootloaders in Python.

One memory core (read / erase / program / manifest) behind six USB class
personalities; see docs/ and ../shared/DESIGN.md for the architecture.
"""

__version__ = "0.1.0"
