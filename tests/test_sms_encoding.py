"""The SMS encoder, segmenter and decoder: properties over generated texts, then examples
at the boundaries (160/161 septets, 70/71 units, escapes and emoji at a cut)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from missive.sms.encoding import (
    DC_ASCII,
    DC_GSM,
    DC_LATIN1,
    DC_UCS2,
    ESM_UDHI,
    Concat,
    EncodedSms,
    decode_payload,
    encode_sms,
    join_parts,
    split_udh,
)
from missive.sms.gsm import ESCAPE, GSM_BASIC, GSM_EXTENDED, count_parts, fits_gsm, split_units

FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

GSM_CHARS = sorted(set(GSM_BASIC.replace("\x1b", "")) | set(GSM_EXTENDED))
# Short and long texts alike: long ones are where the cuts are.
gsm_texts = st.one_of(
    st.text(alphabet=GSM_CHARS, max_size=40),
    st.text(alphabet=GSM_CHARS, min_size=150, max_size=480),
)
# st.text() holds no surrogate code points, but "\x00", controls and astral characters.
any_texts = st.one_of(st.text(max_size=40), st.text(min_size=60, max_size=300))
astral = st.characters(min_codepoint=0x10000, max_codepoint=0x10FFFF)
ucs2_texts = st.text(alphabet=st.one_of(st.characters(codec="utf-8"), astral), min_size=60, max_size=200)
# Surrogate code points, alone or as a pair written as two code points, among others.
surrogate_pair = st.just("\ud83d\ude00")
surrogate_chars = st.one_of(st.characters(categories=["Cs"]), surrogate_pair, st.characters(codec="utf-8"))
surrogate_texts = st.one_of(
    st.lists(surrogate_chars, max_size=20), st.lists(surrogate_chars, min_size=60, max_size=140)
).map("".join)
encoding_types = st.sampled_from(["auto", "text", "unicode", None])


def payloads(encoded: EncodedSms) -> list[bytes]:
    return [split_udh(part, encoded.esm_class)[1] for part in encoded.parts]


def septets(payload: bytes) -> list[bytes]:
    """An unpacked GSM payload as its characters' codes: an escape with the code after it."""
    out, index = [], 0
    while index < len(payload):
        width = 2 if payload[index] == ESCAPE else 1
        out.append(payload[index : index + width])
        index += width
    return out


def check_structure(text: str, encoded: EncodedSms) -> None:
    """Every invariant of an encoding that holds whatever the text."""
    bodies = payloads(encoded)
    multipart = len(encoded.parts) > 1
    assert encoded.esm_class == (ESM_UDHI if multipart else 0)
    assert count_parts(text, "unicode" if encoded.data_coding == DC_UCS2 else "auto") == len(encoded.parts)
    if multipart:
        headers = [split_udh(part, encoded.esm_class)[0] for part in encoded.parts]
        assert all(part[:3] == b"\x05\x00\x03" for part in encoded.parts)
        assert [h.seq for h in headers if h] == list(range(1, len(encoded.parts) + 1))
        assert {(h.ref, h.total) for h in headers if h} == {(headers[0].ref, len(encoded.parts))}
    if encoded.data_coding == DC_GSM:
        for body in bodies:
            assert len(body) <= (153 if multipart else 160)
            assert all(len(code) == 2 for code in septets(body) if code[0] == ESCAPE)  # no lone escape
            assert all(octet < 0x80 for octet in body)
    else:
        assert encoded.data_coding == DC_UCS2
        for body in bodies:
            assert len(body) % 2 == 0
            assert len(body) <= (134 if multipart else 140)
            if body:
                assert not 0xD8 <= body[-2] <= 0xDB, "part ends with a high surrogate"
                assert not 0xDC <= body[0] <= 0xDF, "part starts with a low surrogate"


# --- properties ---------------------------------------------------------------------


@FAST
@given(gsm_texts, st.sampled_from(["auto", "text", None]), st.integers(0, 70000))
def test_gsm_texts_round_trip_in_gsm(text: str, encoding_type: str | None, ref: int) -> None:
    encoded = encode_sms(text, encoding_type, ref)
    assert encoded.data_coding == DC_GSM
    check_structure(text, encoded)
    bodies = payloads(encoded)
    assert "".join(decode_payload(body, DC_GSM) for body in bodies) == text
    assert join_parts(bodies, DC_GSM) == text
    assert count_parts(text, encoding_type) == len(encoded.parts)


@FAST
@given(st.one_of(any_texts, ucs2_texts), encoding_types, st.integers(0, 70000))
def test_any_text_round_trips(text: str, encoding_type: str | None, ref: int) -> None:
    encoded = encode_sms(text, encoding_type, ref)
    check_structure(text, encoded)
    bodies = payloads(encoded)
    assert "".join(decode_payload(body, encoded.data_coding) for body in bodies) == text
    assert join_parts(bodies, encoded.data_coding) == text
    assert count_parts(text, encoding_type) == len(encoded.parts)
    if encoding_type == "unicode" or not fits_gsm(text):
        assert encoded.data_coding == DC_UCS2


@FAST
@given(gsm_texts)
def test_gsm_parts_are_filled_before_cutting(text: str) -> None:
    """Greedy: a part ends only where the next character would not fit it."""
    bodies = payloads(encode_sms(text))
    for body, after in zip(bodies, bodies[1:], strict=False):
        assert len(body) + len(septets(after)[0]) > 153


@FAST
@given(ucs2_texts)
def test_ucs2_parts_are_filled_before_cutting(text: str) -> None:
    pieces = split_units(text, "ucs2")
    for piece, after in zip(pieces, pieces[1:], strict=False):
        assert len(piece.encode("utf-16-be")) // 2 + (2 if ord(after[0]) > 0xFFFF else 1) > 67


@FAST
@given(surrogate_texts)
def test_surrogate_code_points_never_break_the_encoder(text: str) -> None:
    """Lone surrogates (which JSON can carry) go out as U+FFFD; a pair written as two
    code points goes out as its character, never cut in two."""
    encoded = encode_sms(text, "unicode")
    check_structure(text, encoded)
    expected = text.encode("utf-16-be", "surrogatepass").decode("utf-16-be", "replace")
    assert join_parts(payloads(encoded), DC_UCS2) == expected


@FAST
@given(st.binary(max_size=300), st.sampled_from([DC_GSM, DC_ASCII, DC_LATIN1, DC_UCS2, 2, 4, 0xF0, 0xF4, 0x18, 255]))
def test_decoding_never_raises(data: bytes, data_coding: int) -> None:
    assert isinstance(decode_payload(data, data_coding), str)
    assert isinstance(join_parts([data[:7], data[7:]], data_coding), str)


@FAST
@given(st.binary(max_size=200), st.integers(0, 255))
def test_split_udh_never_raises(data: bytes, esm_class: int) -> None:
    concat, payload = split_udh(data, esm_class)
    assert data.endswith(payload)
    if concat is not None:
        assert 1 <= concat.seq <= concat.total


@FAST
@given(st.one_of(gsm_texts, ucs2_texts), st.integers(0, 70000))
def test_split_udh_recovers_the_concatenation(text: str, ref: int) -> None:
    encoded = encode_sms(text, ref=ref)
    total = len(encoded.parts)
    for seq, part in enumerate(encoded.parts, start=1):
        concat, _ = split_udh(part, encoded.esm_class)
        assert concat == (Concat(ref & 0xFF, total, seq) if total > 1 else None)


# --- examples -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "data_coding", "parts"),
    [
        ("", DC_GSM, 1),
        ("a" * 160, DC_GSM, 1),
        ("a" * 161, DC_GSM, 2),
        ("a" * 306, DC_GSM, 2),
        ("a" * 307, DC_GSM, 3),
        ("é" * 70, DC_GSM, 1),  # é is in the default alphabet
        ("ł" * 70, DC_UCS2, 1),
        ("ł" * 71, DC_UCS2, 2),
        ("ł" * 134, DC_UCS2, 2),
        ("ł" * 135, DC_UCS2, 3),
        ("€" * 80, DC_GSM, 1),  # two septets each
        ("€" * 81, DC_GSM, 2),
        ("😀" * 35, DC_UCS2, 1),  # two UTF-16 units each
        ("😀" * 36, DC_UCS2, 2),
    ],
)
def test_part_counts(text: str, data_coding: int, parts: int) -> None:
    encoded = encode_sms(text)
    assert (encoded.data_coding, len(encoded.parts)) == (data_coding, parts)
    assert count_parts(text) == parts


def test_gsm_goes_out_unpacked_with_escapes() -> None:
    assert encode_sms("@A€{}").parts == (b"\x00\x41\x1b\x65\x1b\x28\x1b\x29",)


def test_an_escape_is_never_cut() -> None:
    text = "a" * 152 + "€" + "b" * 10
    first, second = payloads(encode_sms(text))
    assert first == b"a" * 152
    assert second == b"\x1b\x65" + b"b" * 10


def test_an_emoji_at_the_67_unit_boundary_moves_whole() -> None:
    text = "ł" * 66 + "😀" + "ł" * 10
    encoded = encode_sms(text)
    first, second = payloads(encoded)
    assert first == ("ł" * 66).encode("utf-16-be")
    assert second == ("😀" + "ł" * 10).encode("utf-16-be")
    assert encoded.parts[0][:6] == bytes([5, 0, 3, 0, 2, 1])


def test_multipart_header_carries_ref_total_and_seq() -> None:
    encoded = encode_sms("x" * 400, ref=0x1FF)
    assert encoded.esm_class == ESM_UDHI
    assert [part[:6] for part in encoded.parts] == [bytes([5, 0, 3, 0xFF, 3, seq]) for seq in (1, 2, 3)]


def test_encoding_type() -> None:
    assert encode_sms("hello", "unicode") == EncodedSms(DC_UCS2, 0, ("hello".encode("utf-16-be"),))
    assert encode_sms("hello", "text").data_coding == DC_GSM
    assert encode_sms("hello ł", "text").data_coding == DC_UCS2
    assert encode_sms("hello ł", None).data_coding == DC_UCS2
    assert count_parts("a" * 100, "unicode") == 2
    assert len(encode_sms("a" * 100, "unicode").parts) == 2


def test_too_many_parts_is_an_error() -> None:
    assert len(encode_sms("a" * 153 * 255).parts) == 255
    with pytest.raises(ValueError):
        encode_sms("a" * (153 * 255 + 1))


def test_split_udh() -> None:
    assert split_udh(b"\x05\x00\x03\x2a\x02\x01hi", ESM_UDHI) == (Concat(0x2A, 2, 1), b"hi")
    assert split_udh(b"\x06\x08\x04\x12\x34\x03\x02hi", ESM_UDHI) == (Concat(0x1234, 3, 2), b"hi")
    # another element first (a port address), then the concatenation
    udh = b"\x0b\x05\x04\x0b\x84\x23\xf0\x00\x03\x07\x02\x02"
    assert split_udh(udh + b"xy", 0x43) == (Concat(7, 2, 2), b"xy")
    assert split_udh(b"\x05\x00\x03\x2a\x02\x01hi", 0) == (None, b"\x05\x00\x03\x2a\x02\x01hi")
    assert split_udh(b"\x09\x00\x03", ESM_UDHI) == (None, b"\x09\x00\x03")  # longer than the data
    assert split_udh(b"", ESM_UDHI) == (None, b"")
    assert split_udh(b"\x05\x00\x03\x2a\x02\x03hi", ESM_UDHI) == (None, b"hi")  # seq > total
    assert split_udh(b"\x03\x00\x05\x2ahi", ESM_UDHI) == (None, b"hi")  # element overruns the UDH


def test_decode_gsm() -> None:
    assert decode_payload(b"\x00\x41\x1b\x65\x1b\x3c", DC_GSM) == "@A€["
    assert decode_payload(b"a\x1b\x41b", DC_GSM) == "a?b"  # unknown extension code
    assert decode_payload(b"ab\x1b", DC_GSM) == "ab"  # trailing escape dropped
    assert decode_payload(b"\xc1\x80", DC_GSM) == "A@"  # top bit ignored
    assert decode_payload(b"\x41", 0xF1) == "A"  # message-class coding, GSM alphabet


def test_decode_other_codings() -> None:
    assert decode_payload(b"caf\xe9", DC_LATIN1) == "café"
    assert decode_payload(b"caf\xe9", DC_ASCII) == "caf\ufffd"
    assert decode_payload(b"\x00h\x00i\x00", DC_UCS2) == "hi"  # odd last octet dropped
    assert decode_payload(b"\xd8\x3d\x00A", DC_UCS2) == "\ufffdA"  # lone surrogate
    assert decode_payload(b"\xe9", 2) == "é"  # unknown coding: Latin-1


def test_join_parts_mends_a_pair_cut_by_the_sender() -> None:
    data = "x😀y".encode("utf-16-be")
    assert join_parts([data[:4], data[4:]], DC_UCS2) == "x😀y"
    assert join_parts([b"ab\x1b", b"\x65c"], DC_GSM) == "ab€c"
