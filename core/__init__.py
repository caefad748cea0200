"""The core layer: what every other package may import and which imports none of them.

The job spec (spec.py, sweep_spec.py), the domain errors with their API status codes
(errors.py) and the outer-loop math (outer.py). worker, coordinator, services, reproduce and
bench import it; it imports only third-party libraries (tests/test_layers.py checks this).
"""
