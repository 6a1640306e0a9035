"""Response playbooks as data: for each order profile and incident kind, the operator's steps.

A step says who is contacted, what each party is told (Korean and English), and
which parties are deliberately told nothing. The operator sees a playbook as a
checklist; a step is done when the operator marks it, or when the lifecycle
action it stands for is recorded (dispatching an officer, handing off to police).

Profiles (``profile`` in docs/tiers.md):

- ``kr``: the victim sees him inside the reveal radius and the distance tier inside
  the notify radius; a breach goes to police and a field officer.
- ``fr``: France's anti-approach bracelet. The alert distance (1-10 km) is the
  order's keep-away distance, the pre-alert zone twice it. In pre-alert the
  operator calls the offender, and the victim is not told if he complies; on
  alert the victim and police are.
- ``es``: Spain's Cometa. Fixed exclusion zones plus a 500 m mobile zone around the
  victim (the keep-away distance); the operator calls the victim, then the
  offender, then police.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from bangpae.domain.incidents import HIGH, Priority
from bangpae.domain.model import Event, EventKind, Tier

Party = Literal["victim", "offender", "police", "officer", "supervisor"]
PROFILES: tuple[str, ...] = ("kr", "fr", "es")
DEFAULT = "*"  # the playbook a profile uses for a kind it has no own playbook for
PRE_ALERT = "pre_alert"  # fr: the offender is inside twice the alert distance


@dataclass(frozen=True, slots=True)
class Text:
    """One sentence in both languages of the service."""

    ko: str
    en: str

    def as_dict(self) -> dict[str, str]:
        """``{"ko": ..., "en": ...}``."""
        return {"ko": self.ko, "en": self.en}


@dataclass(frozen=True, slots=True)
class Step:
    """One thing the operator does: whom to contact and what each party is told.

    ``done_by`` names lifecycle actions (timeline ``action`` values) that complete
    the step on their own; ``withheld`` names parties deliberately told nothing.
    """

    id: str
    title: Text
    contacts: tuple[Party, ...] = ()
    told: tuple[tuple[Party, Text], ...] = ()
    withheld: tuple[Party, ...] = ()
    done_by: tuple[str, ...] = ()

    def told_to(self, party: Party) -> Text | None:
        """What this step tells ``party``, if anything."""
        return next((text for who, text in self.told if who == party), None)


@dataclass(frozen=True, slots=True)
class Playbook:
    """The ordered steps for one profile and incident kind."""

    profile: str
    kind: str
    steps: tuple[Step, ...]


@dataclass(frozen=True, slots=True)
class ChecklistItem:
    """A step and whether it is done."""

    step: Step
    done: bool


@dataclass(frozen=True, slots=True)
class Checklist:
    """A playbook with the state of each step, as the operator sees it."""

    profile: str
    kind: str
    items: tuple[ChecklistItem, ...]

    @property
    def next_step(self) -> Step | None:
        """The first step not yet done (None when every step is)."""
        return next((i.step for i in self.items if not i.done), None)

    @property
    def complete(self) -> bool:
        """Whether every step is done."""
        return all(i.done for i in self.items)

    def told(self, party: Party, done_only: bool = True) -> list[Text]:
        """What ``party`` is told, in step order (by the steps done, unless asked for all)."""
        out = []
        for item in self.items:
            text = item.step.told_to(party)
            if text is not None and (item.done or not done_only):
                out.append(text)
        return out

    def as_dict(self) -> dict[str, Any]:
        """The checklist as JSON for the console."""
        nxt = self.next_step
        return {
            "profile": self.profile,
            "kind": self.kind,
            "complete": self.complete,
            "next_step": None if nxt is None else nxt.id,
            "steps": [
                {
                    "id": i.step.id,
                    "title": i.step.title.as_dict(),
                    "contacts": list(i.step.contacts),
                    "told": {who: text.as_dict() for who, text in i.step.told},
                    "withheld": list(i.step.withheld),
                    "done": i.done,
                }
                for i in self.items
            ],
        }


# -- the steps every profile shares --------------------------------------------------------

_REVIEW = Step(
    "review",
    Text(
        "두 당사자의 최근 위치와 장치 상태를 확인",
        "Check both parties' latest positions and devices",
    ),
)
_DISPATCH = Step(
    "dispatch_officer",
    Text("가장 가까운 보호관찰관 출동 지시", "Dispatch the nearest field officer"),
    contacts=("officer",),
    told=(
        (
            "officer",
            Text(
                "사건 현장으로 출동하십시오. 위치는 출동 중에만 공유됩니다.",
                "Go to the incident; positions are shared with you while you are dispatched.",
            ),
        ),
    ),
    done_by=("dispatch",),
)


def _police(ko: str, en: str) -> Step:
    return Step(
        "notify_police",
        Text("경찰에 사건 인계", "Hand the case to the police"),
        contacts=("police",),
        told=(("police", Text(ko, en)),),
        done_by=("handoff",),
    )


def _call(step_id: str, party: Party, title: Text, ko: str, en: str) -> Step:
    return Step(step_id, title, contacts=(party,), told=((party, Text(ko, en)),))


_CALL_VICTIM = Text("피해자에게 전화", "Call the victim")
_CALL_OFFENDER = Text("가해자에게 전화", "Call the offender")

# -- kr ------------------------------------------------------------------------------------

_KR: dict[str, tuple[Step, ...]] = {
    "breach": (
        _REVIEW,
        _police(
            "접근금지 명령 위반: 가해자가 피해자에게 접근했습니다. 112 출동을 요청합니다.",
            "Protective-order breach: the offender is near the victim. Please send a patrol.",
        ),
        _DISPATCH,
        _call(
            "call_victim",
            "victim",
            _CALL_VICTIM,
            "가해자가 접근금지 거리 안에 있습니다. 경찰과 보호관찰관이 출동 중입니다. "
            "안전한 곳으로 이동하세요.",
            "The offender is inside the keep-away distance. Police and an officer are on "
            "the way. Move to a safe place.",
        ),
        _call(
            "call_offender",
            "offender",
            _CALL_OFFENDER,
            "접근금지 명령을 위반하고 있습니다. 즉시 피해자에게서 멀어지십시오.",
            "You are violating the protective order. Move away from the protected person now.",
        ),
    ),
    "sos": (
        _call(
            "call_victim",
            "victim",
            _CALL_VICTIM,
            "긴급 신고를 받았습니다. 경찰과 보호관찰관이 출동합니다.",
            "We received your emergency call. Police and an officer are on the way.",
        ),
        _police(
            "피해자 긴급 신고: 112 출동을 요청합니다.",
            "Victim emergency call: please send a patrol.",
        ),
        _DISPATCH,
    ),
    "tamper": (
        _call(
            "call_offender",
            "offender",
            _CALL_OFFENDER,
            "전자장치 훼손이 감지되었습니다. 즉시 보호관찰소에 출석하십시오.",
            "Tampering with your device was detected. Report to the probation office now.",
        ),
        _DISPATCH,
        _police(
            "전자장치 훼손: 소재 파악을 요청합니다.",
            "Monitoring device tampered with: please help locate the offender.",
        ),
        _call(
            "warn_victim",
            "victim",
            Text("피해자에게 주의 안내", "Warn the victim"),
            "가해자의 위치 확인이 일시적으로 어렵습니다. 주의하십시오.",
            "We cannot locate the offender for now. Please take care.",
        ),
    ),
    DEFAULT: (
        _REVIEW,
        _call(
            "call_offender",
            "offender",
            _CALL_OFFENDER,
            "준수사항 위반이 감지되었습니다. 지시에 따르십시오.",
            "A breach of your obligations was detected. Follow the officer's instructions.",
        ),
    ),
}

# -- fr ------------------------------------------------------------------------------------

_FR: dict[str, tuple[Step, ...]] = {
    PRE_ALERT: (
        _REVIEW,
        _call(
            "call_offender",
            "offender",
            _CALL_OFFENDER,
            "경보 거리에 접근하고 있습니다. 즉시 방향을 바꾸십시오.",
            "You are approaching the alert distance. Turn back now.",
        ),
        Step(
            "check_compliance",
            Text(
                "가해자가 멀어지는지 확인 (따르면 피해자에게 알리지 않음)",
                "Check that he moves away (if he complies, the victim is not told)",
            ),
            withheld=("victim",),
        ),
    ),
    "breach": (
        _call(
            "call_victim",
            "victim",
            _CALL_VICTIM,
            "가해자가 경보 거리 안에 있습니다. 안전한 곳으로 이동하세요. 경찰에 알렸습니다.",
            "The offender is inside the alert distance. Move to a safe place; the police "
            "have been told.",
        ),
        _police(
            "접근금지 팔찌 경보: 가해자가 경보 거리 안에 있습니다. 출동을 요청합니다.",
            "Anti-approach bracelet alert: the offender is inside the alert distance. "
            "Please intervene.",
        ),
        _call(
            "call_offender",
            "offender",
            _CALL_OFFENDER,
            "경보 거리를 침범했습니다. 즉시 떠나십시오. 경찰이 출동했습니다.",
            "You are inside the alert distance. Leave now; the police have been called.",
        ),
    ),
    DEFAULT: (
        _REVIEW,
        _call(
            "call_offender",
            "offender",
            _CALL_OFFENDER,
            "장치 또는 준수사항 문제가 감지되었습니다. 지시에 따르십시오.",
            "A problem with your device or obligations was detected. Follow instructions.",
        ),
        _police(
            "접근금지 팔찌 사건: 확인을 요청합니다.",
            "Anti-approach bracelet incident: please check.",
        ),
    ),
}

# -- es ------------------------------------------------------------------------------------

_ES_VICTIM = _call(
    "call_victim",
    "victim",
    _CALL_VICTIM,
    "가해자가 보호 구역 안에 있습니다. 안전한 곳에 머무르세요. 경찰에 알립니다.",
    "The offender is inside your protection zone. Stay somewhere safe; we are calling the police.",
)
_ES_OFFENDER = _call(
    "call_offender",
    "offender",
    _CALL_OFFENDER,
    "접근금지 구역을 침범했습니다. 즉시 떠나십시오.",
    "You are inside an exclusion zone. Leave it now.",
)
_ES_POLICE = _police(
    "접근금지 구역 침범(코메타): 출동을 요청합니다.",
    "Exclusion-zone breach (Cometa): please intervene.",
)
_ES: dict[str, tuple[Step, ...]] = {
    "breach": (_ES_VICTIM, _ES_OFFENDER, _ES_POLICE),
    "zone": (_ES_VICTIM, _ES_OFFENDER, _ES_POLICE),
    DEFAULT: (_REVIEW, _ES_OFFENDER, _ES_POLICE),
}

PLAYBOOKS: Mapping[str, Mapping[str, tuple[Step, ...]]] = {"kr": _KR, "fr": _FR, "es": _ES}


def playbook(profile: str, kind: str) -> Playbook:
    """The playbook for an incident kind under a profile (an unknown profile is an error)."""
    if profile not in PLAYBOOKS:
        raise ValueError(f"unknown profile {profile!r}")
    books = PLAYBOOKS[profile]
    return Playbook(profile, kind, books.get(kind, books[DEFAULT]))


def checklist(profile: str, kind: str, done: Iterable[str] = ()) -> Checklist:
    """The checklist of an incident: its playbook's steps, each marked done or not."""
    finished = frozenset(done)
    book = playbook(profile, kind)
    return Checklist(profile, kind, tuple(ChecklistItem(s, s.id in finished) for s in book.steps))


def done_steps(profile: str, kind: str, timeline: Sequence[Mapping[str, Any]]) -> frozenset[str]:
    """Which steps an incident's timeline shows done: marked ones, and those an action did."""
    marked = {
        str(e["data"].get("step"))
        for e in timeline
        if e.get("action") == "step" and isinstance(e.get("data"), Mapping)
    }
    actions = {str(e.get("action")) for e in timeline}
    return frozenset(
        s.id
        for s in playbook(profile, kind).steps
        if s.id in marked or any(a in actions for a in s.done_by)
    )


def incident_checklist(profile: str, kind: str, timeline: Sequence[Mapping[str, Any]]) -> Checklist:
    """The checklist of an incident from its timeline."""
    return checklist(profile, kind, done_steps(profile, kind, timeline))


def profile_incident(
    profile: str, event: Event, kind: str, priority: Priority | None
) -> tuple[str, Priority | None]:
    """The incident an event opens or joins under a profile (most follow the common rules).

    ``fr``: the pre-alert zone (the notify radius, twice the alert distance) opens a
    ``pre_alert`` incident when he enters it from clear; his other moves short of the
    alert distance join its timeline, so the operator sees whether he complied.
    """
    if profile != "fr" or kind != "proximity" or event.kind != EventKind.TIER_CHANGED:
        return kind, priority
    if event.tier_from == Tier.CLEAR and event.tier_to in (Tier.NOTIFY, Tier.REVEAL):
        return PRE_ALERT, HIGH
    return PRE_ALERT, None
