"""Celery, the transport (never the source of truth): the app and every setting
with its reason (``celery_app``), the queue names (``queues``), receipt acks
and the single beat's scheduler.

Imports live state and settings only; the task bodies are ``ugro.tasks``.
"""
