"""The operator's commands: each module's ``main(argv)`` is one tool.

They are installed as ``sanic-ota-keygen``, ``sanic-ota-manifest``, ``sanic-ota-verify``
and ``sanic-ota-example`` (``[project.scripts]``), and ``tools/*.py`` in a checkout run
the same functions. The work itself lives in the core modules (keys, releases,
manifest, example_release); a tool parses its arguments, reads the settings from the
environment and reports.
"""
