"""Typed access to the process's long-lived objects from inside a request."""

from __future__ import annotations

from flask import current_app

from common.services import Services


def services() -> Services:
    found: Services = current_app.extensions["factory"]
    return found
