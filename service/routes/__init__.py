"""The REST routes, one module per domain, all mounted under ``/api/v1`` by :func:`service.app.create_app`."""
