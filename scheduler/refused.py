"""``Refused``: what a request handler raises when a request cannot be done.

Its text goes back to the asker as the Reply's error. Shared by the request
handlers of ``queries`` and ``tenantverbs`` (so neither imports the other's).
"""

from __future__ import annotations


class Refused(Exception):
    """A request that cannot be done; the text goes back to the asker."""
