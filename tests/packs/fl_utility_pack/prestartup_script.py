"""Runs before any pack is imported (as rgthree's and Easy-Use's do)."""

import os

os.environ["FL_UTILITY_PRESTARTUP"] = "ran"
