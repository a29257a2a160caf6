"""The daily summary: what a day's figures are gathered from (``gather``,
``resources``), the figures (``model``), the page and chart (``render``), which
day is due (``day``) and the once-a-day run with delivery (``daily``).
"""
