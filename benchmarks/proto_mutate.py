"""Protobuf-level mutations of a serialized model, for fuzzing the runtime's model checks.

A model is decoded into a tree of fields (a length-delimited field becomes a sub-tree when
its bytes parse as a message), one mutation is applied where protobuf parsers and naive
scanners tend to disagree (tag encodings, wire types, repeats, nesting, foreign fields,
extreme values), and the tree is encoded again with correct lengths, so the damage sits
deep inside an otherwise well-formed file.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from runtime.onnx_proto import encode_varint

KINDS = (
    "overlong_tag",
    "high_tag_bits",
    "wire_type",
    "duplicate",
    "delete",
    "foreign_field",
    "nest",
    "extreme_varint",
    "overlong_varint",
    "swap",
    "external_data",
    "function",
)


@dataclass
class Field:
    number: int
    wire: int
    value: int | bytes | list[Field]
    tag: bytes | None = None  # a hand-made tag encoding (None: canonical)
    raw_value: bytes | None = None  # a hand-made varint value encoding
    children: bool = field(default=False)


varint = encode_varint


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ValueError("varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def decode(buf: bytes, depth: int = 0) -> list[Field]:
    """Fields of a message; ValueError if the bytes are not one."""
    out, pos = [], 0
    while pos < len(buf):
        key, pos = _read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise ValueError("field 0")
        if wire == 0:
            value, pos = _read_varint(buf, pos)
            out.append(Field(number, 0, value))
        elif wire in (1, 5):
            n = 8 if wire == 1 else 4
            if pos + n > len(buf):
                raise ValueError("short")
            out.append(Field(number, wire, buf[pos : pos + n]))
            pos += n
        elif wire == 2:
            size, pos = _read_varint(buf, pos)
            if pos + size > len(buf):
                raise ValueError("short")
            data = buf[pos : pos + size]
            pos += size
            f = Field(number, 2, data)
            if depth < 12 and size and data[:1] != b"\x00":
                try:
                    children = decode(data, depth + 1)
                    # Only a faithful parse is a sub-message (strings and packed numbers
                    # sometimes parse too, but do not encode back to the same bytes).
                    if encode(children) == data:
                        f.value, f.children = children, True
                except ValueError:
                    pass
            out.append(f)
        else:
            raise ValueError("wire type")
    return out


def encode(fields: list[Field]) -> bytes:
    out = bytearray()
    for f in fields:
        out += f.tag if f.tag is not None else varint((f.number << 3) | f.wire)
        if f.wire == 0:
            out += f.raw_value if f.raw_value is not None else varint(f.value)  # type: ignore[arg-type]
        elif f.wire in (1, 5):
            out += f.value  # type: ignore[operator]
        else:
            data = encode(f.value) if f.children else f.value  # type: ignore[arg-type]
            out += varint(len(data)) + data
    return bytes(out)


def _all(fields: list[Field], parent: list[Field] | None = None):
    """(containing list, field) for every field of the tree."""
    for f in fields:
        yield fields, f
        if f.children:
            yield from _all(f.value)  # type: ignore[arg-type]


def _overlong(value: int, extra: int, high: int = 0) -> bytes:
    """A varint of `value` padded with `extra` continuation bytes; `high` sets bits above 31
    (which protobuf drops from a tag)."""
    value |= high
    raw = bytearray(varint(value))
    for _ in range(extra):
        raw[-1] |= 0x80
        raw.append(0)
    return bytes(raw)


def mutate(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    """One protobuf-level mutation of a serialized model; returns the bytes and its kind."""
    tree = decode(data)
    kind = rng.choice(KINDS)
    sites = list(_all(tree))
    parent, f = rng.choice(sites)
    if kind == "overlong_tag":
        f.tag = _overlong((f.number << 3) | f.wire, rng.randint(1, 4))
    elif kind == "high_tag_bits":
        key = (f.number << 3) | f.wire
        f.tag = varint(key | (rng.randint(1, 15) << 32))
    elif kind == "wire_type":
        f.tag = varint((f.number << 3) | rng.choice([w for w in (0, 1, 2, 5) if w != f.wire]))
    elif kind == "duplicate":
        parent.insert(rng.randrange(len(parent) + 1), f)
    elif kind == "delete":
        parent.remove(f)
    elif kind == "foreign_field":
        number = rng.choice([3, 9, 10, 13, 14, 15, 16, 20, 21, 22, 25, rng.randint(1, 1 << 20)])
        wire = rng.choice([0, 2])
        value: int | bytes = rng.getrandbits(32) if wire == 0 else rng.randbytes(rng.randint(0, 8))
        parent.insert(rng.randrange(len(parent) + 1), Field(number, wire, value))
    elif kind == "nest":
        wrapped = Field(f.number, 2, [f] * rng.randint(1, 3), children=True)
        for _ in range(rng.randint(1, 40)):
            wrapped = Field(rng.choice([1, 5, 6, 7, 11]), 2, [wrapped], children=True)
        parent[parent.index(f)] = wrapped
    elif kind in ("extreme_varint", "overlong_varint"):
        ints = [(p, x) for p, x in sites if x.wire == 0]
        if ints:
            _, x = rng.choice(ints)
            if kind == "extreme_varint":
                x.value = rng.choice([0, 1, (1 << 31) - 1, 1 << 31, (1 << 62), (1 << 64) - 1])
            else:
                x.raw_value = _overlong(int(x.value), rng.randint(1, 3))  # type: ignore[arg-type]
    elif kind == "swap":
        if len(parent) > 1:
            i, j = rng.sample(range(len(parent)), 2)
            parent[i], parent[j] = parent[j], parent[i]
    elif kind == "external_data":
        # TensorProto.external_data (13) naming a file, data_location (14) = EXTERNAL, added
        # to a length-delimited field somewhere, with a plain or a smuggled tag.
        entry = [Field(1, 2, b"location"), Field(2, 2, b"secret.bin")]
        extra = [Field(13, 2, entry, children=True), Field(14, 0, 1)]
        if rng.random() < 0.5:
            for e in extra:
                e.tag = varint(((e.number << 3) | e.wire) | (1 << 32))
        subs = [x for _, x in sites if x.children] or [f]
        target = rng.choice(subs)
        if target.children:
            target.value = [*target.value, *extra]  # type: ignore[misc]
    else:  # "function": a ModelProto.functions entry with a node in a custom domain
        node = Field(7, 2, [Field(4, 2, b"Evil"), Field(7, 2, b"com.microsoft")], children=True)
        fn = Field(25, 2, [Field(1, 2, b"f"), Field(2, 2, b"com.microsoft"), node], children=True)
        tree.append(fn)
    return encode(tree), kind
