"""The OCI registry frontend under ``/v2`` (distribution-spec v1.1 pull side).

``errors.py`` renders failures as the registry API's JSON errors; ``proxy.py`` forwards requests
to a backing registry (streamed, bounded memory); ``sources.py`` is the source-image proxy of
``/v2/siderolabs/…``; ``installers.py`` answers installer images built on pull. The blueprint that
dispatches between them is ``api/routes/registry.py``.
"""
