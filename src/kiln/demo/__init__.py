"""``kiln demo``: prepares labelled-synthetic demo models (once, then reused) and serves both apps
with the web pages. ``prepare`` builds; ``samples`` holds the sample cases the pages offer."""
