"""Signals datasets send to the apps after them, which datasets must not import.

``deleting`` is sent inside the deletion's transaction, with the row locked; a receiver refuses the deletion by
raising a ``ServiceError`` (training refuses while a queued or running job reads the dataset).
"""

from django.dispatch import Signal

deleting = Signal()  # kwargs: dataset
