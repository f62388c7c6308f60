"""Django configuration package (settings, urls, wsgi/asgi, Celery app).

It is not called ``platform``: a package of that name beside ``manage.py``
would shadow Python's standard library module ``platform``.
"""

from config.celery import app as celery_app

__all__ = ("celery_app",)
