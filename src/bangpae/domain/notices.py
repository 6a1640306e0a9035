"""What the protected person and the control centre are told, and when.

A notice is the short text a phone shows on its lock screen (Web Push, SMS) and the
apps show as a banner. Rules:

- **No position, no distance, no digit** in a victim's notice, and nothing that says
  what the app is for: lock screens are seen by others. The app, once opened, shows
  what the disclosure policy allows. Staff notices name the incident and the order.
- **The offender is never told anything** by notices: the audience is the victim
  or the staff of the control centre, nothing else.
- **The victim is told what her profile tells her**: ``fr`` withholds the pre-alert
  (the notify and reveal tiers) from her; she is told when he is inside the alert
  distance (breach). ``kr`` and ``es`` tell her every tier she is shown.
- **The victim is told when the service is degraded**: his device stopped reporting
  or has no fix, his signal was lost while he was near, or bangpae itself is failing.
- **De-duplicated**: a notice with the same key inside its kind's window is sent
  once; a tier flickering at a boundary does not buzz her phone every minute. A
  breach has the shortest window, an escalation page none (each page is a page).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from bangpae.domain import incidents
from bangpae.domain.model import Event, EventKind, Order, Tier
from bangpae.domain.playbooks import Text

Audience = Literal["victim", "staff"]
VICTIM: Audience = "victim"
STAFF: Audience = "staff"

# De-duplication windows per notice kind, seconds (a kind not named: DEFAULT_WINDOW_S).
WINDOWS_S: dict[str, float] = {
    "tier_breach": 60.0,
    "tier_reveal": 300.0,
    "tier_notify": 600.0,
    "tier_clear": 600.0,
    "offender_signal_lost": 900.0,
    "offender_device_down": 1800.0,
    "service_degraded": 1800.0,
    "service_restored": 600.0,
    "incident": 300.0,
    "escalated": 0.0,
}
DEFAULT_WINDOW_S = 600.0

# The tiers a profile withholds from the victim (she is shown clear instead).
WITHHELD_TIERS: dict[str, frozenset[Tier]] = {"fr": frozenset({Tier.NOTIFY, Tier.REVEAL})}

_RANK = {Tier.CLEAR: 0, Tier.UNCERTAIN: 0, Tier.NOTIFY: 1, Tier.REVEAL: 2, Tier.BREACH: 3}

# Discreet on purpose, in the words of the app: someone else may read her lock screen.
TEXTS: dict[str, Text] = {
    "tier_notify": Text(
        "주의 단계가 되었습니다. 앱을 확인하세요.", "Caution step. Please check the app."
    ),
    "tier_reveal": Text(
        "접근 단계가 되었습니다. 앱을 확인하세요.", "Nearby step. Please check the app."
    ),
    "tier_breach": Text("위험 단계입니다. 지금 앱을 여세요.", "Danger step. Open the app now."),
    "tier_clear": Text("지금은 안전 단계입니다.", "You are in the safe step now."),
    "offender_signal_lost": Text(
        "상대방의 신호가 끊겼습니다. 관제센터가 확인 중입니다. 앱을 확인하세요.",
        "His signal was lost. The control centre is checking. Please check the app.",
    ),
    "offender_device_down": Text(
        "상대방 장치가 위치를 보내지 않고 있습니다. 관제센터가 확인 중입니다. "
        "위험하다고 느끼면 긴급 신고하세요.",
        "His device is not reporting. The control centre is checking. "
        "If you feel unsafe, call for help.",
    ),
    "service_degraded": Text(
        "서비스에 장애가 있어 알림이 늦을 수 있습니다. 위험하다고 느끼면 긴급 신고하세요.",
        "The service has a problem and alerts may be late. If you feel unsafe, call for help.",
    ),
    "service_restored": Text(
        "서비스가 정상으로 돌아왔습니다.", "The service is working normally again."
    ),
}


@dataclass(frozen=True, slots=True)
class Notice:
    """One thing to tell one victim, or every member of a staff role."""

    audience: Audience
    kind: str
    priority: incidents.Priority
    text: Text
    dedup_key: str
    at: float
    order_id: int | None = None
    person_id: int | None = None  # the victim told (audience victim)
    role: str | None = None  # the staff role told (audience staff)

    @property
    def window_s(self) -> float:
        """How long a notice with the same key is not sent again."""
        return WINDOWS_S.get(self.kind, DEFAULT_WINDOW_S)


def victim_tier(profile: str, tier: Tier) -> Tier:
    """The tier the protected person is shown under her order's profile."""
    return Tier.CLEAR if tier in WITHHELD_TIERS.get(profile, frozenset()) else tier


def _to_victim(order: Order, kind: str, priority: incidents.Priority, at: float) -> Notice:
    return Notice(
        VICTIM,
        kind,
        priority,
        TEXTS[kind],
        f"victim:{order.victim_id}:order:{order.id}:{kind}",
        at,
        order_id=order.id,
        person_id=order.victim_id,
    )


def _tier_notice(order: Order, event: Event) -> Notice | None:
    if event.tier_to is None:
        return None
    shown_to = victim_tier(order.profile, event.tier_to)
    shown_from = victim_tier(order.profile, event.tier_from or Tier.CLEAR)
    if shown_to == Tier.UNCERTAIN:
        # lost while close (the engine only goes uncertain from reveal or breach); under
        # a profile that withheld those tiers she was never told he was near
        if shown_from == Tier.CLEAR:
            return None
        return _to_victim(order, "offender_signal_lost", incidents.HIGH, event.at)
    if _RANK[shown_to] > _RANK[shown_from]:
        priority = incidents.CRITICAL if shown_to == Tier.BREACH else incidents.HIGH
        return _to_victim(order, f"tier_{shown_to.label}", priority, event.at)
    if shown_to == Tier.CLEAR and shown_from != Tier.CLEAR:  # away, or his signal back far off
        return _to_victim(order, "tier_clear", incidents.NORMAL, event.at)
    return None


# The kinds of event anyone may be told of (``victim_notices``, ``staff_notices``): what
# she is shown, his device gone quiet, a supervisor's page, and every critical incident.
NOTICE_KINDS = frozenset(
    {
        EventKind.SHOWN_TIER_CHANGED,
        EventKind.OFFLINE,
        EventKind.NO_FIX,
        EventKind.INCIDENT_ESCALATED,
        *incidents.MAY_BE_CRITICAL,
    }
)


def victim_notices(event: Event, orders: Iterable[Order]) -> list[Notice]:
    """What the protected people of ``orders`` are told of ``event``.

    She is told of changes of what she is *shown* (``shown_tier_changed``), never of the
    exact tier's: its moments would trace the radii around him (``docs/disclosure.md``).
    ``orders`` are the orders the event concerns: its own order for a tier change,
    the orders of the offender for a device event. Events about the victim's own
    devices and everything else tell her nothing (an SOS is confirmed in her app,
    never on a lock screen: a silent SOS must stay silent).
    """
    out: list[Notice] = []
    for order in orders:
        if not order.active(event.at):
            continue
        if event.kind == EventKind.SHOWN_TIER_CHANGED and event.order_id == order.id:
            notice = _tier_notice(order, event)
            if notice is not None:
                out.append(notice)
        elif (
            event.kind in (EventKind.OFFLINE, EventKind.NO_FIX)
            and event.person_id == order.offender_id
        ):
            out.append(_to_victim(order, "offender_device_down", incidents.HIGH, event.at))
    return out


def staff_notices(event: Event) -> list[Notice]:
    """What the control centre's phones are told of ``event``: critical incidents, pages.

    The operators' console shows every event on its stream; a notice is for the
    phone in a pocket, so only what must not wait: a critical event, and each
    escalation page to the supervisors.
    """
    subject = (
        f"order {event.order_id}" if event.order_id is not None else f"person {event.person_id}"
    )
    if event.kind == EventKind.INCIDENT_ESCALATED:
        incident = event.data.get("incident_id", "")
        return [
            Notice(
                STAFF,
                "escalated",
                incidents.CRITICAL,
                Text(
                    f"미확인 긴급 사건 #{incident} ({subject}): 감독자 확인 필요",
                    f"Unacknowledged critical incident #{incident} ({subject}): supervisor needed",
                ),
                f"staff:supervisor:escalated:{event.id}",
                event.at,
                order_id=event.order_id,
                role="supervisor",
            )
        ]
    if incidents.priority_of(event) != incidents.CRITICAL:
        return []
    kind = incidents.incident_kind(event)
    return [
        Notice(
            STAFF,
            "incident",
            incidents.CRITICAL,
            Text(f"긴급 사건: {kind} ({subject})", f"Critical incident: {kind} ({subject})"),
            f"staff:operator:{subject}:{kind}",
            event.at,
            order_id=event.order_id,
            role="operator",
        )
    ]


def service_notices(orders: Iterable[Order], degraded: bool, at: float) -> list[Notice]:
    """Tell every protected person of an active order that bangpae is degraded, or back."""
    kind = "service_degraded" if degraded else "service_restored"
    priority = incidents.HIGH if degraded else incidents.NORMAL
    return [_to_victim(o, kind, priority, at) for o in orders if o.active(at)]


def due(last_sent_at: float | None, notice: Notice) -> bool:
    """Whether ``notice`` is sent, given when the last one with its key was."""
    return last_sent_at is None or notice.at - last_sent_at >= notice.window_s


# -- text messages (SMS) to her phone: docs/sms.md -------------------------------------------

# The tiers she may choose to be texted for, in the order the apps list them.
SMS_TIERS: tuple[str, ...] = ("notify", "reveal", "breach", "uncertain")
# The notice kinds each choosable tier covers.
SMS_TIER_OF: dict[str, str] = {
    "tier_notify": "notify",
    "tier_reveal": "reveal",
    "tier_breach": "breach",
    "offender_signal_lost": "uncertain",
}
# Texted whenever her texts are on, whatever tiers she chose: her protection itself is
# weakened (his device silent, bangpae failing), and she may not have the app open.
SMS_ALWAYS: frozenset[str] = frozenset({"offender_device_down", "service_degraded"})
# The tiers texted by default, per profile: Korea texts the 2 km pre-alert (notify) since
# 2024; elsewhere the pre-alert stays in the app unless she asks for it.
SMS_DEFAULT_TIERS: dict[str, tuple[str, ...]] = {
    "kr": SMS_TIERS,
}
SMS_DEFAULT_TIERS_OTHER: tuple[str, ...] = ("reveal", "breach", "uncertain")
# The cap on texts: one per kind per person inside this window (a tier flapping at a
# boundary, or bangpae flapping between degraded and back, sends one text, not a storm);
# the notice itself still reaches her app and push at once.
SMS_MIN_INTERVAL_S = 300.0
# And at most this many texts per person per hour, whatever the kinds (a breach is never
# held back by this cap, only by its own 5 minutes).
SMS_MAX_PER_HOUR = 6
LANGS: tuple[str, ...] = ("ko", "en")


@dataclass(frozen=True, slots=True)
class SmsPrefs:
    """Whether she is texted, for which tiers, and in which language."""

    enabled: bool
    tiers: tuple[str, ...]
    lang: str = "ko"

    def as_dict(self) -> dict[str, object]:
        """As stored and as the API shows them."""
        return {"enabled": self.enabled, "tiers": list(self.tiers), "lang": self.lang}


def default_sms_prefs(profile: str) -> SmsPrefs:
    """Her texts before she chose: on, for the tiers her order's profile texts."""
    tiers = SMS_DEFAULT_TIERS.get(profile, SMS_DEFAULT_TIERS_OTHER)
    return SmsPrefs(True, tiers, "ko")


# Her stored choices' key for the contact her phone is shown after a change made with her
# duress PIN (docs/sms.md): never part of the choices texts follow.
SHOWN = "shown"


def sms_prefs(stored: dict[str, object] | None, profile: str) -> SmsPrefs:
    """Her stored choices, or the defaults of her order's profile."""
    stored = {k: v for k, v in (stored or {}).items() if k != SHOWN}
    if not stored:
        return default_sms_prefs(profile)
    raw = stored.get("tiers")
    tiers = tuple(t for t in SMS_TIERS if isinstance(raw, list) and t in raw)
    lang = stored.get("lang")
    return SmsPrefs(bool(stored.get("enabled")), tiers, lang if lang in LANGS else "ko")


def sms_wanted(notice: Notice, prefs: SmsPrefs) -> str | None:
    """Why ``notice`` is not texted to her under her choices; None: it is."""
    if notice.audience != VICTIM or notice.person_id is None:
        return "not for staff"
    if not prefs.enabled:
        return "texts off"
    if notice.kind in SMS_ALWAYS:
        return None
    tier = SMS_TIER_OF.get(notice.kind)
    if tier is None:
        return "not texted"  # safe again, service restored: no need to wake her
    return None if tier in prefs.tiers else "tier not chosen"


def sms_capped(notice: Notice, last_same_kind_at: float | None, sent_last_hour: int) -> bool:
    """Whether the cap holds ``notice`` back (``docs/sms.md``, "How often")."""
    if last_same_kind_at is not None and notice.at - last_same_kind_at < SMS_MIN_INTERVAL_S:
        return True
    return notice.kind != "tier_breach" and sent_last_hour >= SMS_MAX_PER_HOUR


def sms_text(notice: Notice, lang: str) -> str:
    """The words of the text: the notice's discreet sentence in her language."""
    return notice.text.en if lang == "en" else notice.text.ko


@dataclass(frozen=True, slots=True)
class Contact:
    """Her phone number (opened) and her stored choices of texts (None: the defaults)."""

    person_id: int
    kind: str
    phone: str | None
    sms_prefs: dict[str, Any] | None
