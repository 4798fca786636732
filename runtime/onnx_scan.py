"""A small, strict reader of ONNX's protobuf wire format, to vet a model before loading it.

onnxruntime parses whatever it is given, and a hostile file can point it at other files
(external data: CVE-2022-25882, CVE-2024-27318) or at custom operator libraries. The
runtime has no `onnx` package (it is not needed on a device), so this walks the bytes
itself, visiting only what matters: operator-set domains, node domains (also inside
subgraphs and functions) and whether any tensor keeps its data outside the file.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import ArtifactError

MAX_DEPTH = 64  # nested graphs; a real model here has 1 level


class _Malformed(Exception):
    pass


@dataclass
class ScanResult:
    """What vetting needs to know about a model file."""

    domains: set[str] = field(default_factory=set)
    external_data: bool = False
    nodes: int = 0


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise _Malformed("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _fields(buf: bytes):
    """Yield (field number, wire type, value): value is an int or a bytes slice."""
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise _Malformed("field number 0")
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = int.from_bytes(buf[pos : pos + 8], "little"), pos + 8
        elif wire == 2:
            size, pos = _varint(buf, pos)
            value, pos = buf[pos : pos + size], pos + size
        elif wire == 5:
            value, pos = int.from_bytes(buf[pos : pos + 4], "little"), pos + 4
        else:
            raise _Malformed(f"wire type {wire}")
        if pos > end:
            raise _Malformed("field runs past the end")
        yield number, wire, value


def _text(value: object) -> str:
    if not isinstance(value, bytes | memoryview):
        raise _Malformed("expected a string")
    try:
        return bytes(value).decode("utf-8")
    except UnicodeDecodeError:
        raise _Malformed("string is not UTF-8") from None


def _tensor(buf: bytes, out: ScanResult) -> None:
    for number, _, value in _fields(buf):
        if number == 13 or (number == 14 and value == 1):  # external_data / EXTERNAL
            out.external_data = True


def _attribute(buf: bytes, out: ScanResult, depth: int) -> None:
    for number, wire, value in _fields(buf):
        if wire != 2:
            continue
        if number in (5, 10):  # t, tensors
            _tensor(value, out)
        elif number in (6, 11):  # g, graphs
            _graph(value, out, depth + 1)
        elif number == 22:  # sparse_tensor: values and indices are tensors
            for _, w, v in _fields(value):
                if w == 2:
                    _tensor(v, out)


def _node(buf: bytes, out: ScanResult, depth: int) -> None:
    out.nodes += 1
    domain = ""
    for number, wire, value in _fields(buf):
        if number == 7 and wire == 2:
            domain = _text(value)
        elif number == 5 and wire == 2:
            _attribute(value, out, depth)
    out.domains.add(domain)


def _graph(buf: bytes, out: ScanResult, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise _Malformed("graphs nested too deep")
    for number, wire, value in _fields(buf):
        if wire != 2:
            continue
        if number == 1:
            _node(value, out, depth)
        elif number == 5:
            _tensor(value, out)
        elif number == 15:  # sparse_initializer
            for _, w, v in _fields(value):
                if w == 2:
                    _tensor(v, out)


def _opset(buf: bytes, out: ScanResult) -> None:
    for number, wire, value in _fields(buf):
        if number == 1 and wire == 2:
            out.domains.add(_text(value))


def scan(data: bytes, source: str = "model.onnx") -> ScanResult:
    """Walk a serialized ModelProto; ArtifactError if it is not well-formed protobuf."""
    out = ScanResult()
    graphs = 0
    try:
        for number, wire, value in _fields(memoryview(data).tobytes()):
            if wire != 2:
                continue
            if number == 7:
                graphs += 1
                _graph(value, out, 0)
            elif number == 8:
                _opset(value, out)
            elif number == 25:  # functions: their nodes and opsets count too
                for n, w, v in _fields(value):
                    if n == 3 and w == 2:
                        _node(v, out, 0)
                    elif n == 4 and w == 2:
                        _opset(v, out)
    except _Malformed as exc:
        raise ArtifactError(f"{source} is not a valid ONNX model ({exc}); re-export it") from None
    if graphs != 1:
        raise ArtifactError(f"{source} is not a valid ONNX model (no graph); re-export it")
    return out
