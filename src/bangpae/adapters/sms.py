"""Text messages to her phone over SMPP 3.4, with delivery receipts (docs/sms.md).

``BANGPAE_SMS_URL=smpp://system_id:password@host:port?source=BANGPAE&tls=0`` names the
operator's SMSC. The SMPP session is ``aiosmpplib``'s ESME: asyncio all the way (a text
never blocks the event loop), binding as a transceiver, keeping the bind alive with
enquire_link, reconnecting with exponential backoff when it is lost, and splitting long
texts with UDH concatenation. Korean goes as UCS-2 (data_coding 0x08), English in the
GSM 7-bit default alphabet.

What this module adds is the bookkeeping a protection service needs: every text is kept
(``sms_messages``: never the number, never the words) from queued to submitted, then
to what its delivery receipt says (delivered, expired, undeliverable, failed), with
times; a text the SMSC refuses, or that no bind takes within ``submit_timeout_s``, is
tried again a bounded number of times, then recorded as failed. Receipts are matched by
the SMSC's message id (the library's correlator while this process lives, the stored id
after a restart).

The password is never logged: the settings keep the URL as a secret, :class:`SmppConfig`
hides it from ``repr``, and the library's own log lines are passed on without their
details (they carry numbers and words).
"""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from aiosmpplib import (
    ESME,
    NPI,
    TON,
    AbstractBroker,
    AbstractHook,
    DeliverSm,
    GenericNack,
    PhoneNumber,
    SmppCommandStatus,
    SmppMessage,
    SubmitSm,
    SubmitSmResp,
)
from aiosmpplib.retrytimer import SimpleExponentialBackoff
from aiosmpplib.utils import detect_format

from bangpae.domain.notices import Notice

log = logging.getLogger("bangpae.sms")

UCS2_SINGLE = 140  # bytes of one text
UCS2_PART = 134  # bytes of one part of a long text (6 go to the UDH)
GSM_SINGLE, GSM_PART = 160, 153  # characters, in the GSM 7-bit default alphabet
ESM_UDHI = 0x40
# The final states a receipt's ``stat`` names; ACCEPTD and ENROUTE are not final.
RECEIPT_STATES = {
    "DELIVRD": "delivered",
    "EXPIRED": "expired",
    "UNDELIV": "undeliverable",
    "REJECTD": "failed",
    "DELETED": "failed",
    "UNKNOWN": "failed",
}


class SmsUrlError(ValueError):
    """``BANGPAE_SMS_URL`` cannot be used (the message never quotes the password)."""


@dataclass(frozen=True, slots=True)
class SmppConfig:
    """Where the SMSC is and how to bind to it."""

    host: str
    port: int
    system_id: str
    password: str = field(repr=False)
    source: str = "BANGPAE"

    def __str__(self) -> str:
        return f"smpp://{self.system_id}@{self.host}:{self.port}"


def parse_sms_url(url: str) -> SmppConfig:
    """``smpp://system_id:password@host:port?source=BANGPAE&tls=0`` as a config."""
    parts = urlsplit(url.strip())
    if parts.scheme != "smpp":
        raise SmsUrlError("BANGPAE_SMS_URL must start with smpp://")
    try:
        port = parts.port
    except ValueError:
        raise SmsUrlError("BANGPAE_SMS_URL has a bad port") from None
    if not parts.hostname or port is None:
        raise SmsUrlError("BANGPAE_SMS_URL needs host:port")
    system_id, password = unquote(parts.username or ""), unquote(parts.password or "")
    # SMPP 3.4 §5.2: system_id at most 15 characters, password at most 8
    if not system_id or len(system_id) > 15:
        raise SmsUrlError("BANGPAE_SMS_URL needs a system_id of 1-15 characters")
    if len(password) > 8:
        raise SmsUrlError("the SMPP password is at most 8 characters (SMPP 3.4)")
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    unknown = set(query) - {"source", "tls"}
    if unknown:
        raise SmsUrlError(f"BANGPAE_SMS_URL: unknown parameters {sorted(unknown)}")
    if query.get("tls", "0") not in ("0", "false", "no"):
        raise SmsUrlError(
            "tls=1: the SMPP library speaks plain TCP; carry it over TLS with a tunnel "
            "(stunnel or a VPN) to 127.0.0.1 and point BANGPAE_SMS_URL there (docs/sms.md)"
        )
    source = query.get("source", "BANGPAE")
    if not 1 <= len(source) <= 11:
        raise SmsUrlError("source is 1-11 characters (an alphanumeric sender id)")
    return SmppConfig(parts.hostname, port, system_id, password, source)


def e164_digits(phone: str) -> str:
    """The SMPP destination address of an E.164 number: its digits, without the ``+``."""
    return phone.removeprefix("+")


def parts_of(text: str) -> int:
    """How many parts ``text`` takes: GSM 7-bit when it can, else UCS-2."""
    if detect_format(text) == "gsm0338":
        return 1 if len(text) <= GSM_SINGLE else math.ceil(len(text) / GSM_PART)
    size = len(text.encode("utf-16-be"))
    return 1 if size <= UCS2_SINGLE else math.ceil(size / UCS2_PART)


@dataclass
class _Pending:
    """A text not yet accepted by the SMSC: what is needed to try again (memory only)."""

    phone: str
    text: str
    attempts: int = 0
    enqueued_at: float = 0.0


@dataclass
class SmsStats:
    """Counters for /metrics and tests."""

    queued: int = 0
    submitted: int = 0
    retried: int = 0
    failed: int = 0
    receipts: int = 0
    binds: int = 0


class _Broker(AbstractBroker):
    """The queue the ESME takes texts from; a text given up or tried again meanwhile is
    skipped (only its newest attempt goes)."""

    def __init__(self, gateway: SmppGateway) -> None:
        self.queue: asyncio.Queue[SmppMessage] = asyncio.Queue()
        self.gateway = gateway

    async def enqueue(self, message: SmppMessage) -> None:
        """Queue a message for the SMSC."""
        await self.queue.put(message)

    async def dequeue(self) -> SmppMessage:
        """The next message still wanted."""
        while True:
            message = await self.queue.get()
            if not isinstance(message, SubmitSm) or self.gateway.wanted(message):
                return message


class _Hook(AbstractHook):
    """The ESME's callbacks: submit answers, receipts, send errors."""

    def __init__(self, gateway: SmppGateway) -> None:
        self.gateway = gateway

    async def sending(self, smpp_message: SmppMessage, pdu: bytes, client_id: str) -> None:
        """Nothing to do before a PDU leaves."""

    async def received(self, smpp_message: SmppMessage | None, pdu: bytes, client_id: str) -> None:
        """An answer or a request from the SMSC."""
        await self.gateway.on_received(smpp_message)

    async def send_error(self, smpp_message: SmppMessage, error: Exception, client_id: str) -> None:
        """A text could not be sent (lost connection, no answer in time)."""
        if isinstance(smpp_message, SubmitSm):
            await self.gateway.attempt_failed(
                smpp_message.log_id, type(error).__name__, smpp_message.extra_data
            )


class _LibraryLog(logging.Handler):
    """Passes the library's warnings on as their fixed words only: the details it adds
    after ``>>>`` hold PDUs, numbers and texts."""

    def emit(self, record: logging.LogRecord) -> None:
        """Log the event's name at its level on ``bangpae.sms``."""
        event = str(record.msg).split(" >>> ", 1)[0][:200]
        log.log(record.levelno, "smpp: %s", event)


class SmppGateway:
    """Texts to phones through an SMSC over SMPP; kept with their receipts."""

    kind = "sms"

    def __init__(
        self,
        config: SmppConfig,
        store: Any,
        clock: Any,
        *,
        max_attempts: int = 3,
        retry_base_s: float = 5.0,
        submit_timeout_s: float = 60.0,
        enquire_link_s: float = 30.0,
        reconnect_min_s: float = 1.0,
    ) -> None:
        self.config = config
        self.store = store
        self.clock = clock
        self.max_attempts = max_attempts
        self.retry_base_s = retry_base_s
        self.submit_timeout_s = submit_timeout_s
        self.stats = SmsStats()
        self._pending: dict[int, _Pending] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.esme = ESME(
            smsc_host=config.host,
            smsc_port=config.port,
            system_id=config.system_id,
            password=config.password,
            client_id="bangpae",
            enquire_link_interval=float(enquire_link_s),
            log_level=logging.WARNING,
            log_metadata={"system_id": config.system_id},
            log_handler=_LibraryLog(),
            hook=_Hook(self),
            broker=_Broker(self),
            retry_timer=SimpleExponentialBackoff(
                min_delay=max(int(reconnect_min_s * 1000), 1), max_increases=5
            ),
            socket_timeout=10.0,
        )
        self._runner: asyncio.Task[None] | None = None

    # -- running ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind (and keep binding) to the SMSC; texts left queued by a stopped process
        are recorded as failed."""
        failed = await asyncio.to_thread(
            self.store.fail_unfinished_sms, self.clock.now(), "interrupted by a restart"
        )
        if failed:
            log.warning("%d texts queued before the restart recorded as failed", failed)
        log.info("SMS gateway: binding to %s", self.config)
        self._runner = asyncio.create_task(self.esme.start(), name="smpp")
        self._spawn(self._sweep())

    async def stop(self) -> None:
        """Unbind and stop."""
        for task in list(self._tasks):
            task.cancel()
        if self._runner is not None:
            self._runner.cancel()
            try:
                await asyncio.wait_for(asyncio.shield(self._runner), 5.0)
            except (asyncio.CancelledError, TimeoutError):
                pass
            self._runner = None

    @property
    def bound(self) -> bool:
        """Whether a bind is up now."""
        return bool(self.esme.session_state == self.esme.bind_mode.session_state)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- sending ---------------------------------------------------------------------------

    async def send(self, phone: str, text: str, notice: Notice | None = None) -> str:
        """Keep the text as queued and hand it to the SMPP session; ``queued``.

        The receipt comes later and is kept with the notice (``sms`` of the notice).
        """
        if notice is None or notice.person_id is None:
            raise ValueError("a text is sent for a notice to a person")
        now = self.clock.now()
        sms_id = await asyncio.to_thread(
            self.store.add_sms, notice, notice.person_id, parts_of(text), now
        )
        self._pending[sms_id] = _Pending(phone, text)
        self.stats.queued += 1
        await self._enqueue(sms_id)
        return "queued"

    async def _enqueue(self, sms_id: int) -> None:
        pending = self._pending.get(sms_id)
        if pending is None:
            return
        pending.attempts += 1
        pending.enqueued_at = self.clock.now()
        await asyncio.to_thread(self.store.sms_update, sms_id, attempts=pending.attempts)
        source_ton = TON.INTERNATIONAL if self.config.source.isdigit() else TON.ALPHANUMERIC
        message = SubmitSm(
            short_message=pending.text,
            source=PhoneNumber(self.config.source, source_ton, NPI.UNKNOWN),
            destination=PhoneNumber(e164_digits(pending.phone), TON.INTERNATIONAL, NPI.ISDN),
            esm_class=ESM_UDHI,  # split with UDH when long; cleared by the library when not
            registered_delivery=0b00000001,  # a receipt, delivered or failed
            # Korean needs UCS-2 (data_coding 0x08); English fits the GSM default alphabet
            # (160 characters a part, not 70). The library splits by the same choice.
            encoding=detect_format(pending.text),
            auto_message_payload=False,
            log_id=str(sms_id),
            extra_data=str(pending.attempts),
        )
        await self.esme.broker.enqueue(message)

    def wanted(self, message: SubmitSm) -> bool:
        """Whether a queued message is still the newest attempt of a text not given up."""
        pending = self._pending.get(_sms_id(message.log_id) or -1)
        return pending is not None and str(pending.attempts) == message.extra_data

    async def attempt_failed(self, log_id: str, reason: str, attempt: str | None = None) -> None:
        """One attempt failed: try again after a backoff, or record the text as failed.

        ``attempt``: which attempt failed, when known; an older one than the newest (its
        answer timed out after the text was tried again) changes nothing.
        """
        sms_id = _sms_id(log_id)
        pending = self._pending.get(sms_id or -1)
        if sms_id is None or pending is None:
            return
        if attempt is not None and attempt != str(pending.attempts):
            return
        if pending.attempts >= self.max_attempts:
            del self._pending[sms_id]
            self.stats.failed += 1
            log.warning("text %d failed after %d attempts: %s", sms_id, pending.attempts, reason)
            await asyncio.to_thread(
                self.store.sms_update,
                sms_id,
                state="failed",
                done_at=self.clock.now(),
                error=reason,
            )
            return
        self.stats.retried += 1
        await asyncio.to_thread(self.store.sms_update, sms_id, error=reason)
        delay = self.retry_base_s * 2 ** (pending.attempts - 1)
        pending.enqueued_at = math.inf  # not timed out again while it waits

        async def again() -> None:
            await asyncio.sleep(delay)
            await self._enqueue(sms_id)

        self._spawn(again())

    async def _sweep(self) -> None:
        """An attempt no SMSC answered within ``submit_timeout_s`` (no bind, a lost
        answer) counts as failed."""
        while True:
            await asyncio.sleep(min(self.submit_timeout_s / 4, 1.0))
            now = self.clock.now()
            for sms_id, pending in list(self._pending.items()):
                if now - pending.enqueued_at > self.submit_timeout_s:
                    await self.attempt_failed(str(sms_id), "no answer from the SMSC")

    # -- answers and receipts ------------------------------------------------------------------

    async def on_received(self, message: SmppMessage | None) -> None:
        """An answer to a submit, a receipt, or the bind's answer."""
        if isinstance(message, SubmitSmResp) and not isinstance(message, GenericNack):
            await self._on_submit_resp(message)
        elif isinstance(message, DeliverSm) and message.is_receipt():
            await self._on_receipt(message)
        elif message is not None and message.smpp_command.name.startswith("BIND_"):
            if message.command_status == SmppCommandStatus.ESME_ROK:
                self.stats.binds += 1
                log.info("SMS gateway bound to %s", self.config)
            else:
                log.error("SMS gateway: the SMSC refused the bind: %s", message.command_status.name)

    async def _on_submit_resp(self, resp: SubmitSmResp) -> None:
        sms_id = _sms_id(resp.log_id)
        if sms_id is None:
            return
        if resp.command_status != SmppCommandStatus.ESME_ROK:
            await self.attempt_failed(
                resp.log_id, f"refused: {resp.command_status.name}", resp.extra_data or None
            )
            return
        if self._pending.pop(sms_id, None) is None:
            return  # an old attempt answered late: the newest one decides
        self.stats.submitted += 1
        await asyncio.to_thread(
            self.store.sms_update,
            sms_id,
            state="submitted",
            message_id=resp.message_id[:65],
            submitted_at=self.clock.now(),
            error="",
        )

    async def _on_receipt(self, receipt: DeliverSm) -> None:
        data = receipt.parse_receipt()
        message_id = str(data.get("id", ""))[:65]
        sms_id = _sms_id(receipt.log_id)
        if sms_id is None and message_id:
            sms_id = await asyncio.to_thread(self.store.sms_by_message_id, message_id)
        if sms_id is None:
            log.warning("a delivery receipt matched no text sent")
            return
        stat = str(data.get("stat", "")).upper()
        state = RECEIPT_STATES.get(stat)
        if state is None:
            return  # ACCEPTD, ENROUTE: not final
        self.stats.receipts += 1
        err = data.get("err", 0)
        await asyncio.to_thread(
            self.store.sms_update,
            sms_id,
            state=state,
            done_at=self.clock.now(),
            error="" if state == "delivered" else f"{stat} err {err}",
        )


def _sms_id(log_id: str) -> int | None:
    return int(log_id) if log_id.isdigit() else None
