"""Typed access to the process's long-lived objects from inside a request."""

from __future__ import annotations

from flask import current_app

from common.delivery.installers import InstallerImages
from common.delivery.service import Delivery
from common.services import Services


def services() -> Services:
    found: Services = current_app.extensions["factory"]
    return found


def delivery() -> Delivery:
    found: Delivery = current_app.extensions["delivery"]
    return found


def installers() -> InstallerImages:
    found: InstallerImages = current_app.extensions["installers"]
    return found
