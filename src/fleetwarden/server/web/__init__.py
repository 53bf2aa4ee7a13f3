"""Server-rendered dashboard (Jinja2 + htmx) under ``/ui``; no build step."""
