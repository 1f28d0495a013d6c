"""A seeded simulation of the whole of smsledger, in the spirit of TigerBeetle's simulator.

`tests.simulation.simulator` drives the real system (PostgreSQL, the Flask app, the job
functions, the Sippy simulator over XML-RPC) with a workload and faults chosen by one seed over
simulated days, then checks every invariant of DESIGN.md. `test_simulation.py` runs one fixed
seed at a small size in the suite; `python -m tests.simulation --seed N --customers C --days D`
runs any seed at any size on a throwaway PostgreSQL.
"""
