"""A small SMSC for the tests: a real asyncio TCP server speaking enough SMPP 3.4.

It answers bind_transceiver and bind_transmitter (refusing a wrong password with
ESME_RINVPASWD), submit_sm (reassembling texts concatenated with a UDH), enquire_link
and unbind, and sends a deliver_sm delivery receipt for each part submitted with
``registered_delivery``. Responses and receipts are encoded with aiosmpplib's PDU
classes; submit_sm is decoded here, field by field from the specification (§4.4.1),
so the test does not read the client's bytes with the client's own code.

``drop()`` closes every connection (a lost bind); ``submit_status`` makes it refuse
submits; ``receipt_stat`` sets what the receipts say; ``hold_receipts`` keeps them
until ``release()``, as an SMSC does that delivers a receipt hours later.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from dataclasses import dataclass, field
from datetime import UTC, datetime

from aiosmpplib import (
    BindTransceiverResp,
    BindTransmitterResp,
    DeliverSm,
    EnquireLinkResp,
    GenericNack,
    PhoneNumber,
    SmppCommandStatus,
    SubmitSmResp,
    UnbindResp,
)

BIND_TRANSMITTER, BIND_TRANSCEIVER = 0x00000002, 0x00000009
SUBMIT_SM, ENQUIRE_LINK, UNBIND, DELIVER_SM_RESP = 0x00000004, 0x00000015, 0x00000006, 0x80000005


@dataclass
class Submit:
    """One submit_sm as received."""

    source: str
    destination: str
    dest_ton: int
    esm_class: int
    registered_delivery: int
    data_coding: int
    udh: bytes
    payload: bytes  # the short message after its UDH
    message_id: str


@dataclass
class Smsc:
    """The server's state, for the tests to read and steer."""

    system_id: str = "bangpae"
    password: str = "secret1"
    port: int = 0
    binds: list[tuple[str, str]] = field(default_factory=list)  # (system_id, ok|refused)
    submits: list[Submit] = field(default_factory=list)
    receipts_sent: list[str] = field(default_factory=list)  # message ids
    enquire_links: int = 0
    unbinds: int = 0
    submit_status: SmppCommandStatus = SmppCommandStatus.ESME_ROK
    receipt_stat: str = "DELIVRD"
    hold_receipts: bool = False  # keep receipts until release() (sent on the bind open then)
    held: list[bytes] = field(default_factory=list)
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)
    _server: asyncio.Server | None = None
    _seq: int = 0

    async def start(self) -> Smsc:
        """Listen on 127.0.0.1 (a free port)."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        """Close the listener and every connection."""
        self.drop()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def drop(self) -> None:
        """Close every connection at once, as a lost link does."""
        for w in list(self._writers):
            w.transport.abort()
        self._writers.clear()

    def release(self) -> None:
        """Send the held receipts on the connections open now."""
        for pdu in self.held:
            for w in self._writers:
                w.write(pdu)
        self.held.clear()

    @property
    def bound(self) -> int:
        """Connections open now."""
        return len(self._writers)

    def texts(self) -> list[tuple[str, str]]:
        """The texts received, as (destination, text), long ones reassembled."""
        out: list[tuple[str, str]] = []
        parts: dict[int, dict[int, bytes]] = {}
        for s in self.submits:
            if s.udh:  # IEI 0x00: concatenated SM, 8-bit reference (3GPP TS 23.040 §9.2.3.24.1)
                assert s.udh[1] == 0x00 and s.udh[2] == 3, s.udh.hex()
                ref, total, seq = s.udh[3], s.udh[4], s.udh[5]
                parts.setdefault(ref, {})[seq] = s.payload
                if len(parts[ref]) == total:
                    whole = b"".join(parts[ref][i] for i in range(1, total + 1))
                    out.append((s.destination, self._decode(s.data_coding, whole)))
            else:
                out.append((s.destination, self._decode(s.data_coding, s.payload)))
        return out

    @staticmethod
    def _decode(data_coding: int, payload: bytes) -> str:
        return payload.decode("utf-16-be") if data_coding == 0x08 else payload.decode("latin-1")

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        transceiver = False
        try:
            while True:
                head = await reader.readexactly(16)
                length, command, _status, seq = struct.unpack("!IIII", head)
                body = await reader.readexactly(length - 16)
                if command in (BIND_TRANSCEIVER, BIND_TRANSMITTER):
                    system_id, rest = _cstring(body)
                    password, _ = _cstring(rest)
                    ok = (system_id, password) == (self.system_id, self.password)
                    self.binds.append((system_id, "ok" if ok else "refused"))
                    status = SmppCommandStatus.ESME_ROK if ok else SmppCommandStatus.ESME_RINVPASWD
                    resp_cls = (
                        BindTransceiverResp if command == BIND_TRANSCEIVER else BindTransmitterResp
                    )
                    writer.write(resp_cls(seq, status, system_id="smsc").pdu())
                    await writer.drain()
                    if not ok:
                        break
                    transceiver = command == BIND_TRANSCEIVER
                elif command == SUBMIT_SM:
                    await self._submit(writer, seq, body, transceiver)
                elif command == ENQUIRE_LINK:
                    self.enquire_links += 1
                    writer.write(EnquireLinkResp(seq).pdu())
                elif command == UNBIND:
                    self.unbinds += 1
                    writer.write(UnbindResp(seq).pdu())
                    await writer.drain()
                    break
                elif command == DELIVER_SM_RESP:
                    pass
                else:
                    writer.write(GenericNack(seq, SmppCommandStatus.ESME_RINVCMDID).pdu())
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._writers.discard(writer)
            with contextlib.suppress(Exception):
                writer.close()

    async def _submit(
        self, writer: asyncio.StreamWriter, seq: int, body: bytes, transceiver: bool
    ) -> None:
        if self.submit_status != SmppCommandStatus.ESME_ROK:
            writer.write(SubmitSmResp(seq, self.submit_status, message_id="").pdu())
            return
        _service_type, rest = _cstring(body)
        _src_ton, _src_npi = rest[0], rest[1]
        source, rest = _cstring(rest[2:])
        dest_ton, _dest_npi = rest[0], rest[1]
        destination, rest = _cstring(rest[2:])
        esm_class, _protocol_id, _priority = rest[0], rest[1], rest[2]
        _schedule, rest = _cstring(rest[3:])
        _validity, rest = _cstring(rest)
        registered_delivery, _replace, data_coding, _default_id, sm_length = rest[:5]
        short = rest[5 : 5 + sm_length]
        udh = b""
        if esm_class & 0x40:
            udh = short[: short[0] + 1]
            short = short[short[0] + 1 :]
        self._seq += 1
        message_id = f"m{self._seq:06d}"
        self.submits.append(
            Submit(
                source,
                destination,
                dest_ton,
                esm_class,
                registered_delivery,
                data_coding,
                udh,
                short,
                message_id,
            )
        )
        writer.write(SubmitSmResp(seq, message_id=message_id).pdu())
        await writer.drain()
        if registered_delivery & 0x01 and transceiver:
            self._seq += 1
            now = datetime.now(UTC).replace(tzinfo=None)
            text = DeliverSm.encode_receipt(
                {
                    "id": message_id,
                    "sub": 1,
                    "dlvrd": 1 if self.receipt_stat == "DELIVRD" else 0,
                    "submit date": now,
                    "done date": now,
                    "stat": self.receipt_stat,
                    "err": 0,
                    "text": "",
                }
            )
            receipt = DeliverSm(
                sequence_num=self._seq,
                short_message=text,
                source=PhoneNumber(destination),
                destination=PhoneNumber(source),
                esm_class=0x04,  # SMSC delivery receipt
                registered_delivery=0,
            )
            if self.hold_receipts:
                self.held.append(receipt.pdu())
            else:
                writer.write(receipt.pdu())
            self.receipts_sent.append(message_id)


def _cstring(data: bytes) -> tuple[str, bytes]:
    end = data.index(b"\x00")
    return data[:end].decode("latin-1"), data[end + 1 :]
