"""Shared test configuration: hypothesis profiles and helpers.

``HYPOTHESIS_PROFILE=ci`` (the default) runs enough examples to matter with a
fixed seed, so CI is reproducible; ``dev`` is quicker, ``thorough`` much longer.
"""
import os

from hypothesis import HealthCheck, settings

settings.register_profile("ci", max_examples=120, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", max_examples=25, deadline=None)
settings.register_profile("thorough", max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
