"""The daily summary: what a day's figures are gathered from (``gather``,
``resources``, ``usage``), the figures (``model``), the page and chart
(``render``), which day is due (``day``) and the once-a-day run with delivery
(``daily``).

Imports the registry, health samples, progress and the runner's error line;
never the client, the CLI or the tasks that run it.
"""
