"""The web dashboard (`ugro web`): jobs, GPUs, nodes, the queue and the daily
summaries in a browser, behind a login, kept current from ugro's Redis events.

It reads what ugro already has (the registry, Redis, the results tree) through
the client and the parts below it, and is never a second source of truth: its
one subscription to the status events is fanned out to every open page
(``live``), and a page that reconnects reads its data afresh. ``app`` assembles
the routes (``pages``, ``api``) behind the login (``auth``); ``server`` runs it
under uvicorn.
"""
