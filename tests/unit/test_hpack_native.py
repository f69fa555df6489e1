"""The native HPACK codec (gateway._http2_c, native/http2.pyx) against the hpack library it stands in
for: the same bytes out of every encode, the same fields (or the same exception class) out of every
decode, on generated field lists, table-size changes, valid blocks and blocks mutated at random,
each codec's state carried across a connection's blocks."""
from __future__ import annotations

import hpack
import pytest
from hpack.huffman import HuffmanEncoder
from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH
from hpack.huffman_table import decode_huffman
from hpack.struct import HeaderTuple, NeverIndexedHeaderTuple
from hpack.table import HeaderTable
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

native = pytest.importorskip("gateway._http2_c", reason="the native HPACK codec is not built")

SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
HUFFMAN = HuffmanEncoder(REQUEST_CODES, REQUEST_CODES_LENGTH)

STATIC_NAMES = sorted({n for n, _ in HeaderTable.STATIC_TABLE})
STATIC_PAIRS = list(HeaderTable.STATIC_TABLE)
names = st.one_of(st.sampled_from(STATIC_NAMES), st.sampled_from([b"x-a", b"x-b", b"x-trace-id"]),
                  st.binary(min_size=0, max_size=12))
values = st.one_of(st.sampled_from([b"", b"200", b"GET", b"/", b"text/plain", b"gzip"]),
                   st.binary(min_size=0, max_size=40))


@st.composite
def field(draw):
    kind = draw(st.integers(0, 5))
    if kind == 0:
        name, value = draw(st.sampled_from(STATIC_PAIRS))
    else:
        name, value = draw(names), draw(values)
    shape = draw(st.integers(0, 3))
    if shape == 0:
        return (name, value)
    if shape == 1:
        return (name, value, draw(st.booleans()))
    if shape == 2:
        return HeaderTuple(name, value)
    return NeverIndexedHeaderTuple(name, value)


# a connection's life on the encoder's side: blocks to encode, and table sizes set between them
step = st.one_of(st.lists(field(), max_size=12).map(lambda fs: ("encode", fs)),
                 st.sampled_from([0, 1, 64, 256, 4096, 100000]).map(lambda n: ("size", n)))


def _outcome(fn, *args):
    try:
        return "ok", fn(*args)
    except Exception as exc:     # noqa: BLE001 - the class is what is compared
        return "error", type(exc)


def _typed(fields):
    return [(type(h), h) for h in fields] if isinstance(fields, list) else fields


# -- Huffman ---------------------------------------------------------------------------------------

@SETTINGS
@given(st.binary(max_size=300))
def test_huffman_encode_is_hpacks(data):
    assert native.huffman_encode_for_tests(data) == HUFFMAN.encode(data)
    assert native.huffman_decode_for_tests(native.huffman_encode_for_tests(data)) == data


@SETTINGS
@given(st.binary(max_size=24))
def test_huffman_decode_accepts_and_refuses_what_hpack_does(data):
    assert _outcome(native.huffman_decode_for_tests, data) == _outcome(decode_huffman, data)


@SETTINGS
@given(st.binary(min_size=1, max_size=60), st.integers(0, 10_000), st.integers(0, 3))
def test_huffman_decode_of_mutated_strings(data, where, how):
    coded = bytearray(HUFFMAN.encode(data))
    i = where % len(coded)
    if how == 0:
        coded[i] ^= 1 << (where % 8)           # a bit flipped
    elif how == 1:
        del coded[i:]                          # cut short
    elif how == 2:
        coded.append(0xFF if where % 2 else 0xFE)   # padding past a byte, or not all ones
    else:
        coded[-1] &= 0xFE                      # the padding's last bit cleared
    blob = bytes(coded)
    assert _outcome(native.huffman_decode_for_tests, blob) == _outcome(decode_huffman, blob)


def test_eos_inside_a_string_is_refused():
    eos = (1 << 30) - 1                        # 30 ones, padded to 32 bits with two more
    blob = (eos << 2 | 0b11).to_bytes(4, "big")
    assert _outcome(decode_huffman, blob)[0] == "error"
    assert _outcome(native.huffman_decode_for_tests, blob) == _outcome(decode_huffman, blob)


# -- the encoder -----------------------------------------------------------------------------------

@SETTINGS
@given(st.lists(step, max_size=14), st.booleans())
def test_encoder_writes_hpacks_bytes_block_after_block(steps, huffman):
    ours, theirs = native.Encoder(), hpack.Encoder()
    for kind, arg in steps:
        if kind == "size":
            ours.header_table_size = arg
            theirs.header_table_size = arg
            assert ours.header_table_size == theirs.header_table_size
        else:
            assert ours.encode(arg, huffman) == theirs.encode(arg, huffman)


def test_encoder_takes_a_dict_pseudo_fields_first():
    fields = {b"content-type": b"text/plain", b":status": b"200", "x-u": "ü"}
    assert native.Encoder().encode(fields) == hpack.Encoder().encode(fields)


# -- the decoder -----------------------------------------------------------------------------------

def _pair(max_list=65536, max_table=4096):
    ours, theirs = native.Decoder(), hpack.Decoder()
    for d in (ours, theirs):
        d.max_header_list_size = max_list
        d.max_allowed_table_size = max_table
    return ours, theirs


@SETTINGS
@given(st.lists(step, max_size=14), st.sampled_from([200, 1000, 65536]),
       st.sampled_from([0, 256, 4096, 100000]))
def test_decoder_reads_hpacks_blocks_as_hpack_does(steps, max_list, max_table):
    """Blocks of hpack's own encoder, with its table-size changes, decoded by both: equal fields
    (and field classes), or the same exception; the tables stay in step across the blocks."""
    encoder = hpack.Encoder()
    ours, theirs = _pair(max_list, max_table)
    for kind, arg in steps:
        if kind == "size":
            encoder.header_table_size = arg
            continue
        block = encoder.encode(arg)
        got, want = _outcome(ours.decode, block, True), _outcome(theirs.decode, block, True)
        assert (got[0], _typed(got[1])) == (want[0], _typed(want[1])), block
        assert ours.header_table_size == theirs.header_table_size
        if got[0] == "error":
            return                             # h2 ends the connection: no state to keep


@SETTINGS
@given(st.lists(st.lists(field(), max_size=8), min_size=1, max_size=4), st.binary(max_size=40),
       st.integers(0, 10_000), st.integers(0, 4))
def test_decoder_on_mutated_and_arbitrary_blocks(history, junk, where, how):
    """A few valid blocks set both decoders' tables alike; then a block cut, bit-flipped, spliced
    with arbitrary bytes, or arbitrary altogether: the same fields or the same exception."""
    encoder = hpack.Encoder()
    ours, theirs = _pair()
    blocks = [encoder.encode(fields) for fields in history]
    for block in blocks[:-1]:
        assert _typed(ours.decode(block, True)) == _typed(theirs.decode(block, True))
    last = bytearray(blocks[-1])
    if how == 0 and last:
        del last[where % len(last):]
    elif how == 1 and last:
        last[where % len(last)] ^= 1 << (where % 8)
    elif how == 2:
        at = where % (len(last) + 1)
        last[at:at] = junk
    elif how == 3:
        last = bytearray(junk)
    blob = bytes(last)
    got, want = _outcome(ours.decode, blob, True), _outcome(theirs.decode, blob, True)
    assert (got[0], _typed(got[1])) == (want[0], _typed(want[1])), blob


@pytest.mark.parametrize("blob", [
    b"\x80",                                   # index 0
    b"\xff\x80\x80\x80\x80\x80\x01",           # an integer of six continuation octets
    b"\xff\xff\xff\xff\xff\x0f",               # five, the last one ending it: a huge index
    b"\x3f\xe1\x1f",                           # a table size above the allowed one
    b"\x82\x20",                               # a size update after a field
    b"\x40\x05abc",                            # a literal name cut short
    b"\x40\x81\xff\x00",                       # an invalid Huffman name
    b"\x00\x01a\x7f\x80\x01" + b"v" * 10,      # a value longer than the block
    b"\x10\x01a\x01b",                         # never indexed
    b"\x0f\x10\x01b",                          # a literal with an indexed name (16)
])
def test_decoder_edge_blocks(blob):
    ours, theirs = _pair()
    got, want = _outcome(ours.decode, blob, True), _outcome(theirs.decode, blob, True)
    assert (got[0], _typed(got[1])) == (want[0], _typed(want[1]))


def test_decoder_checks_the_list_size_and_the_table_bound_as_hpack():
    block = hpack.Encoder().encode([(b"x-long", b"v" * 300), (b"x-more", b"w")])
    for max_list in (100, 338, 339, 400):
        ours, theirs = _pair(max_list=max_list)
        assert _outcome(ours.decode, block, True) == _outcome(theirs.decode, block, True) or \
            _typed(ours.decode(block, True)) == _typed(theirs.decode(block, True))
    # the table was shrunk by our SETTINGS and the peer's encoder did not follow: refused at the end
    ours, theirs = _pair(max_table=4096)
    for d in (ours, theirs):
        d.max_allowed_table_size = 100
    block = hpack.Encoder().encode([(b"a", b"b")])
    assert _outcome(ours.decode, block, True) == _outcome(theirs.decode, block, True)
    assert _outcome(ours.decode, block, True)[0] == "error"


def test_decoder_without_raw_gives_text_as_hpack():
    block = hpack.Encoder().encode([(b":path", b"/x"), (b"x-u", "ü".encode())])
    assert native.Decoder().decode(block) == hpack.Decoder().decode(block)
    bad = hpack.Encoder().encode([(b"x", b"\xff")], huffman=False)
    assert _outcome(native.Decoder().decode, bad) == _outcome(hpack.Decoder().decode, bad)
