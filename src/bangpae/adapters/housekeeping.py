"""Housekeeping: the retention purge, the audit anchor, and the sign-ins of ended orders."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from bangpae.adapters.anchors import (
    AnchorError,
    anchor_head,
    anchor_marks,
    anchor_problem,
    latest_anchor,
)
from bangpae.adapters.store import Store
from bangpae.adapters.store.retention import PurgeReport
from bangpae.config import Settings
from bangpae.domain import retention
from bangpae.services.ports import Clock

log = logging.getLogger("bangpae.housekeeping")


def run_purge(
    store: Store,
    policy: retention.Policy,
    now: float,
    *,
    dry_run: bool = False,
    anchor_path: Path | None = None,
    actor: str = "system",
    role: str = "system",
    witness: str = "",
) -> PurgeReport:
    """Decide what is due under the policy and the holds in force, and delete it (audited).

    A real run first verifies the whole audit chain, against every anchor when there is
    an anchor file (AnchorError otherwise: purging then could destroy the evidence of
    tampering, or cut records whose times were rewritten to look old), and anchors the
    new head afterwards, so the newest anchor never points at a purged record.
    """
    if not dry_run:
        if anchor_path is not None:
            latest = latest_anchor(anchor_path, store.audit_key)
            problem = None if latest is None else anchor_problem(store, latest)
            if problem is not None:
                raise AnchorError(f"{problem} (anchor on the last line of {anchor_path})")
        marks = [] if anchor_path is None else anchor_marks(anchor_path, store.audit_key)
        verdict = store.audit_verify(anchors=marks, audit_days=policy.audit_days, now=now)
        if not verdict.ok:
            raise AnchorError(
                f"the audit chain is broken at record {verdict.first_bad_id}: {verdict.reason}"
            )
    holds = store.legal_holds()
    orders, incidents, handoffs = store.retention_inputs(holds)
    due = retention.plan(now, policy, orders, incidents, handoffs, holds)
    report = store.purge(due, dry_run=dry_run, actor=actor, role=role)
    if anchor_path is not None and not dry_run:
        anchor_head(store, anchor_path, now, checked=True, witness=witness)
    return report


class Housekeeping:
    """The scheduled purge and audit anchoring of a running service."""

    def __init__(
        self,
        store: Store,
        policy: retention.Policy,
        anchor_path: Path,
        purge_every_s: float,
        anchor_every_s: float,
        witness: str = "",
    ) -> None:
        self.store, self.policy, self.anchor_path = store, policy, anchor_path
        self.purge_every_s, self.anchor_every_s = purge_every_s, anchor_every_s
        self.witness = witness
        self.next_purge_at: float | None = None
        self.next_anchor_at: float | None = None
        self.orders_checked_at = 0.0  # at start, every order that ended before it

    @classmethod
    def from_settings(cls, store: Store, settings: Settings) -> Housekeeping:
        """Housekeeping as the settings describe it."""
        return cls(
            store,
            settings.retention_policy(),
            settings.resolved_anchor_path(),
            settings.purge_interval_s,
            settings.audit_anchor_interval_s,
            settings.audit_witness,
        )

    def step(self, now: float) -> None:
        """End the sign-ins of orders that ended; purge and anchor when due.

        The first purge comes one interval after the last one recorded (or after
        start); the first anchor at once.
        """
        self.end_sessions_of_ended_orders(now)
        if self.next_purge_at is None:
            self.next_purge_at = (self.store.last_purge_at() or now) + self.purge_every_s
            self.next_anchor_at = now
        if self.purge_every_s > 0 and now >= self.next_purge_at:
            self.next_purge_at = now + self.purge_every_s
            report = run_purge(
                self.store, self.policy, now, anchor_path=self.anchor_path, witness=self.witness
            )
            log.info("retention purge: %s", dict(report.counts))
        if self.anchor_every_s > 0 and self.next_anchor_at is not None:
            if now >= self.next_anchor_at:
                self.next_anchor_at = now + self.anchor_every_s
                anchor_head(self.store, self.anchor_path, now, witness=self.witness)

    def end_sessions_of_ended_orders(self, now: float) -> int:
        """Revoke the sessions of the parties of orders that ended since the last check
        (a party under another order in force keeps signing in); how many were revoked."""
        revoked = 0
        for order_id in self.store.orders_ended_between(self.orders_checked_at, now):
            revoked += self.store.revoke_order_sessions(order_id, now)
        self.orders_checked_at = now
        if revoked:
            log.info("%d sessions of ended orders revoked", revoked)
        return revoked


async def run_housekeeping(store: Store, settings: Settings, clock: Clock) -> None:
    """Run housekeeping on the app clock, checking every ``tick_s``, until cancelled."""
    keeper = Housekeeping.from_settings(store, settings)
    while True:
        try:
            await asyncio.to_thread(keeper.step, clock.now())
        except AnchorError as exc:  # never purge or anchor over a chain that lost its anchor
            log.error("audit chain does not match its anchor: %s", exc)
        except Exception:  # retried on the next tick
            log.exception("housekeeping failed")
        await asyncio.sleep(settings.tick_s)
