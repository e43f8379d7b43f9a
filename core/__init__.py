"""RouteLedger's pure core: events, reducers and deciders.

Nothing in this package performs I/O, reads a clock, draws random numbers or
imports anything but the standard library and attrs. Time, ids and randomness
arrive as inputs stamped by the caller (an adapter).
"""
