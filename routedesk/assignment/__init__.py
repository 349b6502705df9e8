"""Assignment: who gets the next offer, and the transactions that make and answer offers.

- :mod:`.strategy`: the queue assignment methods, pure (which eligible member is next);
- :mod:`.transactions`: offers, answers, picks, supervisor assignment, resolution and the
  dispatcher's pass, each one store transaction holding the invariants;
- :mod:`.wake`: when a queue's dispatcher must look again, and how it is told.
"""

from routedesk.assignment.strategy import Candidate, choose

__all__ = ["Candidate", "choose"]
