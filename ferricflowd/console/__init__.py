"""The web console: see and steer every Flow from a browser.

    app.py      the ASGI app (Starlette), its shared state, the security middleware
    views.py    the pages (GET);  actions.py  the actions (POST)
    auth.py     token, login sessions, CSRF;  data.py  the overview cache and throughput ring
    ops.py      the operator reads and writes the pages use, behind one adapter
    server.py   binding, uvicorn, the command line of `python -m ferricflowd.console`
    templates/  Jinja2 pages;  static/  CSS, the console's script, vendored htmx and uPlot

The console imports `flow/` and `config`, never the supervisor or the worker; the supervisor
starts it as a child process by module name (supervisor/console.py), and `ferricflowd
console` runs it standalone.
"""
