"""SMS over SMPP 3.4: one pool of bind_transceiver sessions per link, submit_sm per
part, and the SMSC's deliver_sm (receipts and inbound SMS) handed to the dispatcher.

    link config: host, port, system_id, password, system_type, binds, window, tls,
                 source_ton/npi (else 5/0 for alphanumeric senders, 1/1 for numbers),
                 senders / prefixes (routing rules), receipt_ids,
                 entity_id_tag / content_id_tag / dlt_tlv_format (India's DLT TLVs)
    send:        encode (GSM 03.38 or UCS-2, UDH parts), submit each part in order,
                 the SMSC ids of all parts become the message's references; every
                 part carries what is left of `ttl` as its validity_period and
                 `sms.entity_id` / `sms.content_id` as TLVs
    errors:      throttling / full queue -> Throttled (link slowed); other temporary
                 statuses, a dropped session -> Unavailable (retried); a refused
                 bind -> Misconfigured; any other status -> Rejected with a mapped code

Sessions stay up between sends (`maintain` opens them for every SMS link, so receipts
and inbound SMS arrive even when nothing is sent).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable
from typing import Any, ClassVar, Literal, Self

import orjson
import uuid_utils
from pydantic import BaseModel, ConfigDict, Field, model_validator

from missive.channels.base import (
    ChannelLink,
    Elsewhere,
    EventSink,
    Misconfigured,
    OutboundMessage,
    Rejected,
    SendError,
    SendResult,
    Throttled,
    Unavailable,
    Undeliverable,
)
from missive.config import Settings
from missive.observability import exchanges
from missive.sms import pdu_log
from missive.sms.deliveries import is_receipt, parse_inbound, parse_receipt, scoped_ref
from missive.sms.encoding import encode_sms
from missive.sms.smpp_pdus import (
    ESME_RMSGQFUL,
    ESME_RTHROTTLED,
    DeliverSm,
    SmppError,
    encode_submit,
    relative_time,
)
from missive.sms.smpp_session import BindConfig, SessionDown, SmppPool

log = logging.getLogger("missive.sms")

# SMPP statuses that refuse a message, and the Messages API error they become.
REJECTIONS = {
    0x01: (1090, "Message too long"),
    0x0A: (1120, "Illegal Sender Address - rejected"),
    0x0B: (1170, "Invalid or Missing Msisdn Param"),
    0x0D: (1030, "Internal error"),
    0x45: (1330, "Unknown"),
    0x48: (1020, "Invalid params"),
    0x49: (1020, "Invalid params"),
    0x50: (1020, "Invalid params"),
    0x51: (1020, "Invalid params"),
    0x62: (1130, "Invalid TTL"),
}

# India's DLT registration as TLVs: the tags most Indian aggregators' SMPP interfaces use
# for it (PE_ID 0x1400, TEMPLATE_ID 0x1401), a convention and no standard. SMSCs differ:
# a link may name other tags (docs/channels.md).
ENTITY_ID_TAG = 0x1400
CONTENT_ID_TAG = 0x1401
# SMPP 3.4, 5.3.2: the optional parameters an SMSC vendor may define.
VENDOR_TAGS = (0x1400, 0x3FFF)


class SmsConfig(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    host: str = Field(min_length=1, max_length=253)
    port: int = Field(ge=1, le=65535)
    system_id: str = Field(min_length=1, max_length=15)
    password: str = Field(max_length=8)
    system_type: str = Field("", max_length=12)
    binds: int = Field(1, ge=1, le=32)
    window: int = Field(10, ge=1, le=1000)
    tls: bool = False
    tls_verify: bool = True
    enquire_link_interval: float = Field(30.0, ge=1, le=3600)
    source_ton: int | None = Field(None, ge=0, le=6)
    source_npi: int | None = Field(None, ge=0, le=18)
    dest_ton: int = Field(1, ge=0, le=6)
    dest_npi: int = Field(1, ge=0, le=18)
    # Routing: messages from these senders, or to numbers with these prefixes, use this link.
    senders: list[str] = Field(default_factory=list, max_length=100)
    prefixes: list[str] = Field(default_factory=list, max_length=1000)
    # How receipts write the SMSC id: as submit_sm_resp gave it, or converted to hex
    # (decimal submit ids) or to decimal (hex submit ids).
    receipt_ids: Literal["as_submitted", "hex", "decimal"] = "as_submitted"
    # The TLVs of `sms.entity_id` and `sms.content_id`, and how their text is written:
    # NUL-terminated (C-octet string) or not. SMSCs differ in both.
    entity_id_tag: int = Field(ENTITY_ID_TAG, ge=VENDOR_TAGS[0], le=VENDOR_TAGS[1])
    content_id_tag: int = Field(CONTENT_ID_TAG, ge=VENDOR_TAGS[0], le=VENDOR_TAGS[1])
    dlt_tlv_format: Literal["cstring", "octets"] = "cstring"
    # A setting of every kind of link, checked by api/channels.py (Price): not the SMSC's.
    price: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _distinct_tags(self) -> Self:
        if self.entity_id_tag == self.content_id_tag:
            raise ValueError("entity_id_tag and content_id_tag must differ")
        return self


def _fingerprint(link: ChannelLink) -> str:
    """What a pool's sessions depend on; the number of binds is not in it (a pool resizes)."""
    sessions = {k: v for k, v in link.config.items() if k != "binds"}
    return hashlib.sha256(orjson.dumps(sessions, option=orjson.OPT_SORT_KEYS)).hexdigest()


def source_address(sender: str, config: dict[str, Any]) -> tuple[str, int, int]:
    """Alphanumeric senders are TON 5 / NPI 0, numbers TON 1 / NPI 1, unless the link says."""
    ton, npi = (1, 1) if sender.isdigit() else (5, 0)
    if config.get("source_ton") is not None:
        ton = config["source_ton"]
    if config.get("source_npi") is not None:
        npi = config["source_npi"]
    return sender, ton, npi


def accepted_at(message_uuid: str) -> float | None:
    """When the message was accepted: its uuid (version 7, `missive.ids`) begins with
    that millisecond. None for another kind of uuid."""
    try:
        parsed = uuid_utils.UUID(message_uuid)
    except ValueError:
        return None
    return parsed.timestamp / 1000 if parsed.version == 7 else None


def validity_period(ttl: int, accepted: float | None, now: float) -> str:
    """What is left of the ttl (whole seconds, from acceptance) as a relative SMPP time:
    the SMSC drops the message when Missive would have. Undeliverable (1360) when nothing
    is left, as the dispatcher does before a send."""
    left = int(ttl if accepted is None else accepted + ttl - now)
    if left < 1:
        raise Undeliverable(1360, "TTL was activated")
    return relative_time(left)


def dlt_tlvs(options: dict[str, Any], config: dict[str, Any]) -> tuple[tuple[int, bytes], ...]:
    """`sms.entity_id` and `sms.content_id` as (tag, octets), with the link's tags."""
    nul = b"\0" if config.get("dlt_tlv_format", "cstring") == "cstring" else b""
    tlvs = []
    for key, tag_key, default in (("entity_id", "entity_id_tag", ENTITY_ID_TAG),
                                  ("content_id", "content_id_tag", CONTENT_ID_TAG)):
        if options.get(key):
            tlvs.append((config.get(tag_key, default), options[key].encode() + nul))
    return tuple(tlvs)


class SmsChannel:
    kind: ClassVar[str] = "sms"
    carries: ClassVar[tuple[str, ...]] = ("sms",)
    secrets: ClassVar[tuple[str, ...]] = ("password",)
    Config: ClassVar[type[BaseModel]] = SmsConfig

    def __init__(self, settings: Settings | None = None, clock: Callable[[], float] = time.time) -> None:
        self._settings = settings or Settings()
        self._clock = clock
        self._pools: dict[str, tuple[str, SmppPool]] = {}
        # Pools of links whose configuration changed, closed at the next `maintain`.
        self._closing: set[SmppPool] = set()
        self._links: dict[str, ChannelLink] = {}
        self.sink: EventSink | None = None
        # Receipts carry their deliver_sm to the provider log unless it is off.
        self._log_pdus = exchanges.Policy(self._settings.provider_logs).on

    # -- sessions -----------------------------------------------------------------------

    def _pool(self, link: ChannelLink) -> SmppPool:
        """The link's pool; a new one when there is none or its configuration (as just
        read from the database, with the number of binds this process holds) changed. A
        send never replaces a pool: its link may come from a cache a few seconds old."""
        fingerprint = _fingerprint(link)
        found = self._pools.get(link.id)
        if found is not None and found[0] == fingerprint:
            return found[1]
        if found is not None:
            log.info("link %s: configuration changed, rebinding", link.id)
            self._closing.add(found[1])
        config = SmsConfig.model_validate(link.config)
        bind = BindConfig(
            host=config.host, port=config.port, system_id=config.system_id, password=config.password,
            system_type=config.system_type, tls=config.tls, tls_verify=config.tls_verify, window=config.window,
            enquire_link_interval=config.enquire_link_interval, response_timeout=self._settings.provider_timeout,
        )

        async def on_deliver(delivers: list[DeliverSm]) -> list[bool]:
            # The link as last read: a receipt is read with the current `receipt_ids`.
            return await self._delivered(self._links.get(link.id, link), delivers)

        pool = SmppPool(bind, config.binds, on_deliver, name=f"sms-{link.id[:8]}")
        pool.start()
        self._pools[link.id] = (fingerprint, pool)
        return pool

    async def maintain(self, links: list[ChannelLink]) -> None:
        """Keep sessions open for exactly these links."""
        wanted = {link.id for link in links}
        self._links = {link.id: link for link in links}
        for link in links:
            before = self._pools.get(link.id)
            try:
                pool = self._pool(link)
            except ValueError as exc:
                log.warning("link %s: cannot bind: %s", link.id, exc)
                continue
            binds = SmsConfig.model_validate(link.config).binds
            if before is None or before[1] is not pool or len(pool.binds) != binds:
                log.info("link %s: %d bind(s) in this process", link.id, binds)
            await pool.resize(binds)
        for link_id in [k for k in self._pools if k not in wanted]:
            _, pool = self._pools.pop(link_id)
            await pool.close()
        while self._closing:
            await self._closing.pop().close()

    async def close(self) -> None:
        pools = [pool for _, pool in self._pools.values()]
        self._pools.clear()
        for pool in pools:
            await pool.close()

    # -- sending ------------------------------------------------------------------------

    async def send(self, message: OutboundMessage, link: ChannelLink) -> SendResult:
        # Only `maintain` opens sessions: it is told how many of the link's binds this
        # process holds. With none here, another dispatcher sends the message.
        found = self._pools.get(link.id)
        if found is None:
            raise Elsewhere()
        pool = found[1]
        ids = [await self._submit_logged(pool, params) for params in self._submits(message, link)]
        return SendResult(provider_ref=ids[0], all_refs=tuple(scoped_ref(link.id, smsc_id) for smsc_id in ids))

    async def send_many(
        self, messages: list[OutboundMessage], link: ChannelLink, recorders: list[exchanges.Recorder | None],
    ) -> list[SendResult | Exception]:
        """`send` for several messages on one link, each with its own provider log (or
        None): the submit_sm of the one-part messages go out together and are answered
        together (`SmppPool.submit_many`); a message of several parts goes through `send`
        meanwhile. For each message its result, or what `send` would have raised."""
        found = self._pools.get(link.id)
        if found is None:
            return [Elsewhere()] * len(messages)
        pool = found[1]
        results: list[SendResult | Exception | None] = [None] * len(messages)
        together: list[int] = []  # one-part messages, in the order of `datas`
        datas: list[bytes] = []
        apart: list[int] = []  # several parts: through `send`
        for i, message in enumerate(messages):
            try:
                submits = self._submits(message, link)
                if len(submits) > 1:
                    apart.append(i)
                    continue
                datas.append(encode_submit(0, submits[0]))  # bad fields fail here, alone
            except Exception as exc:  # noqa: BLE001 - this message's result, as `send` raises it
                results[i] = exc
                continue
            together.append(i)
            if recorders[i] is not None:
                recorders[i].add(exchanges.Exchange("out", "smpp", *pdu_log.submit_sm(submits[0]), time.time()))
        answered, alone = await asyncio.gather(
            pool.submit_many(datas),
            asyncio.gather(*(self._send_recorded(messages[i], link, recorders[i]) for i in apart), return_exceptions=True))
        for i, result in zip(apart, alone, strict=True):
            results[i] = result
        for i, answer in zip(together, answered, strict=True):
            recorder = recorders[i]
            if isinstance(answer, Exception):
                error = self._send_error(answer, pool)
                results[i] = error
                if recorder is not None:
                    recorder.add(exchanges.Exchange("in", "smpp", *pdu_log.submit_failed(error.reason), time.time()))
                continue
            smsc_id, read_at = answer
            if recorder is not None:
                recorder.add(exchanges.Exchange("in", "smpp", *pdu_log.submit_sm_resp(smsc_id), read_at))
            results[i] = SendResult(provider_ref=smsc_id, all_refs=(scoped_ref(link.id, smsc_id),))
        return results  # type: ignore[return-value]

    async def _send_recorded(self, message: OutboundMessage, link: ChannelLink,
                             recorder: exchanges.Recorder | None) -> SendResult:
        with exchanges.recording(recorder):
            return await self.send(message, link)

    def _submits(self, message: OutboundMessage, link: ChannelLink) -> list[dict[str, Any]]:
        """The submit_sm fields of each part of `message`, in order."""
        text = message.text or ""
        options = message.body.get("sms") or {}
        encoding = options.get("encoding_type", "auto")
        # The concatenation reference: the uuid's last byte, which is random (a version 7
        # uuid begins with its time, the same for weeks in its first digits).
        encoded = encode_sms(text, encoding, ref=int(message.uuid[-2:], 16))
        source, ton, npi = source_address(message.sender, link.config)
        # `trusted_recipient` and `sms.pool_id` (Vonage's fraud defender and number pools)
        # have no counterpart on an SMSC: accepted, and without effect.
        extra: dict[str, Any] = {}
        if message.body.get("ttl"):
            extra["validity_period"] = validity_period(message.body["ttl"], accepted_at(message.uuid), self._clock())
        tlvs = dlt_tlvs(options, link.config)
        if tlvs:
            extra["vendor_tlvs"] = tlvs
        return [
            {
                "source_addr": source, "source_addr_ton": ton, "source_addr_npi": npi,
                "destination_addr": message.to,
                "dest_addr_ton": link.config.get("dest_ton", 1), "dest_addr_npi": link.config.get("dest_npi", 1),
                "esm_class": encoded.esm_class, "data_coding": encoded.data_coding,
                "registered_delivery": 1, "short_message": part, **extra,
            }
            for part in encoded.parts
        ]

    async def _submit_logged(self, pool: SmppPool, params: dict[str, Any]) -> str:
        """`_submit`, with the submit_sm and its answer in the message's provider log."""
        if exchanges.current() is None:
            return (await self._submit(pool, params))[0]
        exchanges.record("out", "smpp", *pdu_log.submit_sm(params))
        try:
            smsc_id, read_at = await self._submit(pool, params)
        except SendError as error:
            exchanges.record("in", "smpp", *pdu_log.submit_failed(error.reason))
            raise
        # Stamped when it was read, so that it comes before a receipt read after it.
        exchanges.record("in", "smpp", *pdu_log.submit_sm_resp(smsc_id), at=read_at)
        return smsc_id

    async def _submit(self, pool: SmppPool, params: dict[str, Any]) -> tuple[str, float]:
        try:
            return await pool.submit_timed(params)
        except (SmppError, SessionDown) as error:
            raise self._send_error(error, pool) from None

    @staticmethod
    def _send_error(error: Exception, pool: SmppPool) -> SendError:
        """What an SMSC's error status or a lost session means for the message."""
        if isinstance(error, SmppError):
            if error.status in (ESME_RTHROTTLED, ESME_RMSGQFUL):
                return Throttled(1.0, f"SMSC: {error.name}")
            if error.retryable:
                return Unavailable(f"SMSC: {error.name}")
            code, reason = REJECTIONS.get(error.status, (1330, "Unknown"))
            return Rejected(code, f"{reason} (SMSC {error.name})")
        refused = next((b.last_error for b in pool.binds if b.last_error and "bind refused" in b.last_error), None)
        if refused and not pool.bound_count:
            return Misconfigured(f"the SMSC refused the bind: {refused.split(':', 1)[-1].strip()}")
        return Unavailable(f"SMPP session: {error}")

    # -- what the SMSC pushes -----------------------------------------------------------

    async def _delivered(self, link: ChannelLink, delivers: list[DeliverSm]) -> list[bool]:
        """Turn deliver_sm read together into events and hand them over, each on its own
        (one that cannot be read or stored fails alone); say of each whether it is stored.
        One that is not gets a temporary error back, so the SMSC sends it again."""
        if self.sink is None:
            raise RuntimeError("no dispatcher to take SMSC events")
        stored: list[bool | asyncio.Future[None]] = []
        for pdu in delivers:
            try:
                event = self._event(link, pdu)
            except Exception:
                log.exception("link %s: deliver_sm seq %d unreadable; asking for it again", link.id, pdu.sequence_number)
                stored.append(False)
                continue
            stored.append(True if event is None else self.sink(link, [event]))
        for i, item in enumerate(stored):
            if isinstance(item, bool):
                continue
            try:
                await item
                stored[i] = True
            except Exception as exc:  # noqa: BLE001 - said to the SMSC, which sends it again
                log.warning("link %s: deliver_sm seq %d not stored (%s); asking for it again",
                            link.id, delivers[i].sequence_number, exc)
                stored[i] = False
        return stored  # type: ignore[return-value] - every future awaited above

    def _event(self, link: ChannelLink, pdu: DeliverSm) -> Any:
        """The event a deliver_sm carries, or None for a receipt that is not final."""
        if is_receipt(pdu.esm_class, pdu.receipted_message_id):
            receipt = parse_receipt(pdu.short_message, pdu.receipted_message_id, pdu.message_state, link.id,
                                    link.config.get("receipt_ids", "as_submitted"))
            if receipt is None:
                log.info("link %s: receipt that is not final, ignored", link.id)
                return None
            return pdu_log.with_pdu(receipt, pdu) if self._log_pdus else receipt
        sar = (pdu.sar_msg_ref_num, pdu.sar_total_segments, pdu.sar_segment_seqnum)
        return parse_inbound(pdu.destination_addr, pdu.source_addr, pdu.esm_class, pdu.data_coding,
                             pdu.short_message, pdu.message_payload, sar)

