"""Delivery: "get or build an asset", once, for every adapter (``/image``, ``/pxe``, ``/builds``, and
next the ``/v2`` registry frontend and the UI).

It knows nothing of HTTP (an import-linter contract keeps Flask out of ``common``): adapters ask
:class:`~common.delivery.service.Delivery` to ``locate`` a request, ``obtain`` one or several assets
(waiting or not), or report a build's ``progress``, and render the answer themselves — the shape of
Quay's ``endpoints/v2`` over ``data/registry_model``.
"""
