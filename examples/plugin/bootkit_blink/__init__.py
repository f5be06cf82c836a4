"""bootkit-plugin-blink: an example personality shipped as a package of its own.

Layout, as every built-in personality has it: ``protocol`` (what both halves
share), ``device`` (the sans-I/O engine and its Function), ``host`` (the pyusb
client), ``facts`` (trade-offs for ``bootkit choose``), and ``personality``
(the object registered in the ``bootkit.personalities`` entry-point group).
"""

__version__ = "0.1.0"
