"""The host side of the fleet: deploy signed models to device agents over MQTT, ask them for
benchmarks, collect their results exactly once and compare them (protocol: device_agent.protocol).

    deploy.py     bundle + sign + chunked transfer, waits for the device's verdict
    remote.py     benchmark/evaluate requests
    session.py    one host MQTT connection: commands out, matching events and results in
    collector.py  shared-subscription collector daemon (+ Prometheus metrics)
    store.py      ResultStore interface, SQLite implementation
    reports.py    side-by-side tables, CSV, plots
"""
