"""The composition root: one console script that loads the configuration once and starts an API
server (``api/``) or a Celery worker (``worker/``). It sits above both, so neither they nor
``common/`` import it."""
