"""The offers of one case and the answers to them, in one place.

A case's workflow runs one offer at a time (the live offer), made either by its own routing
step or by the queue's dispatcher (the ``offer`` signal). Agents answer through two doors, the
``accept``/``decline`` signals and the ``respond`` Update, and both land here with the same
vocabulary. An answer can arrive before its offer: the store shows an offer the moment it
commits, and an agent can be quicker than the signal that tells the workflow. Such an early
answer is kept briefly and only for the offer it can mean.

Pure and deterministic (no Temporal calls, times passed in), so it is unit-tested without a
server and is safe in workflow code: everything here changes only in signal, update and run
code that replay repeats in the same order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from routedesk.contracts import OfferInfo

# How long an answer that came before any offer to its agent may still apply to one. The store
# shows an offer before the workflow hears of it for milliseconds, not seconds: anything older
# was sent for some other offer and must not accept a later one.
EARLY_ANSWER_TTL = timedelta(seconds=5)


class Decision(StrEnum):
    ACCEPT = "accept"
    DECLINE = "decline"


class OfferResult(StrEnum):
    """How an offer ended, as the ``respond`` Update reports it."""

    ASSIGNED = "assigned"
    DECLINED = "declined"
    TIMED_OUT = "timed_out"
    WITHDRAWN = "withdrawn"  # picked, assigned by a supervisor or resolved meanwhile
    REFUSED = "refused"  # accepted, but the store refused (e.g. capacity)


@dataclass(frozen=True)
class Answer:
    agent_id: str
    decision: Decision
    reason: str | None = None
    offer_id: int | None = None  # pins the answer to one offer
    at: datetime | None = None  # workflow time it arrived


@dataclass
class OfferInbox:
    live: OfferInfo | None = None  # the offer the workflow waits on
    waiting: list[OfferInfo] = field(default_factory=list)  # made by the dispatcher, not yet run
    answers: dict[int, Answer] = field(default_factory=dict)  # offer id -> its first answer
    results: dict[int, str] = field(default_factory=dict)  # offer id -> how it ended
    early: dict[str, Answer] = field(default_factory=dict)  # agent id -> answer before its offer

    # --- offers ---------------------------------------------------------------------------

    def deliver(self, offer: OfferInfo, now: datetime, *, bounded: bool = True) -> None:
        """The dispatcher's offer, run after the live one (if any) ends."""
        self.waiting.append(offer)
        self._apply_early(offer, now, bounded)

    def open(self, offer: OfferInfo, now: datetime, *, bounded: bool = True) -> None:
        """The workflow starts waiting on ``offer``."""
        self.live = offer
        self._apply_early(offer, now, bounded)

    def next_waiting(self) -> OfferInfo | None:
        return self.waiting.pop(0) if self.waiting else None

    def close(self, offer: OfferInfo, result: str) -> None:
        self.results[offer.offer_id] = result
        if self.live is not None and self.live.offer_id == offer.offer_id:
            self.live = None

    def held_by(self, agent_id: str) -> OfferInfo | None:
        """The agent's open offer: the live one, or one the dispatcher sent that is not yet run."""
        for offer in [self.live, *self.waiting]:
            if offer is not None and offer.agent_id == agent_id and offer.offer_id not in self.results:
                return offer
        return None

    def answered_before(self, agent_id: str) -> bool:
        """The agent held an offer on this case that has ended: an answer now is stale."""
        return any(a.agent_id == agent_id for oid, a in self.answers.items() if oid in self.results)

    # --- answers --------------------------------------------------------------------------

    def answer(self, answer: Answer, *, keep_early: bool) -> bool:
        """Record an agent's answer; True when it applies to an open offer now.

        An answer naming another offer than the agent's open one is ignored; the first answer
        to an offer wins. With no open offer, ``keep_early`` keeps it for the agent's next
        offer (see :data:`EARLY_ANSWER_TTL`).
        """
        offer = self.held_by(answer.agent_id)
        if offer is not None:
            if answer.offer_id in (None, offer.offer_id):
                self.answers.setdefault(offer.offer_id, answer)
                return True
            return False
        if keep_early:
            self.early[answer.agent_id] = answer
        return False

    def answer_to(self, offer: OfferInfo) -> Answer | None:
        return self.answers.get(offer.offer_id)

    def is_answered(self, offer: OfferInfo) -> bool:
        return offer.offer_id in self.answers

    def _apply_early(self, offer: OfferInfo, now: datetime, bounded: bool) -> None:
        early = self.early.pop(offer.agent_id, None)
        if early is None or early.offer_id not in (None, offer.offer_id):
            return
        if bounded and early.offer_id is None and (early.at is None or now - early.at > EARLY_ANSWER_TTL):
            return  # sent for some earlier offer, or with no offer at all: never for this one
        self.answers.setdefault(offer.offer_id, early)
