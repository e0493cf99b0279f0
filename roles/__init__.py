"""Host half of tcpskim: the sensor, hardworker and logger roles and the host-side helpers.

Runs on each Linux testbed host with the distribution's python3 (so that bcc imports).
Needs only the standard library, bcc and pyroute2; never Fabric.
"""
