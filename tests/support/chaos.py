"""Chaos test constants shared with other tests.

The storage-fault test runs its own SeaweedFS on ``CHAOS_S3_PORT`` (every other port derived from it), and
``tests/core/test_storage.py`` checks that stack's ports never collide with the ``make up`` and test stacks'.
"""

CHAOS_S3_PORT = 28433
