"""The engine worker: the faust agent that drives the pure interpreter per profile."""
