"""The operator console (DESIGN.md §18): server-rendered pages at /console, signed in with an
admin API key (routes.py), Jinja2 templates (templates/) and static scripts and styles
(static/), among them the in-browser Proof of Forgetting verifier (static/pof-verify.js)."""
