"""A strict reader of the part of ONNX's protobuf schema that rnn-textgen graphs use.

onnxruntime parses whatever protobuf it is given. This reads the same bytes first, the way
protobuf does (field tags are 32-bit, packed and unpacked repeated numbers both count), but
accepts only what our exporters write: canonical varints, the schema's wire type for every
field, each singular field at most once (protobuf would merge or overwrite a repeat), and
none of the fields that reach outside a plain graph (external or sparse data, functions,
subgraph attributes, training info). Nothing is copied: strings and tensor data are
`memoryview`s into the file, and a field budget bounds the work on any input.

The `onnx` package is not needed; `graph_rules` decides what the parsed graph may do.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Far above any graph textgen-train writes (a 16-layer LSTM is a few hundred fields), far
# below what would take more than a second or two to walk in Python.
MAX_FIELDS = 200_000

# TensorProto.DataType values our graphs use, with their NumPy types.
DTYPES = {1: np.float32, 2: np.uint8, 3: np.int8, 6: np.int32, 7: np.int64}
FLOAT, UINT8, INT8, INT32, INT64 = 1, 2, 3, 6, 7


class ProtoError(Exception):
    """The bytes are not a model in the form our exporters write (the message says why)."""


# Attribute types (AttributeProto.AttributeType) the parser keeps.
ATTR_FLOAT, ATTR_INT, ATTR_STRING, ATTR_FLOATS, ATTR_INTS, ATTR_STRINGS = 1, 2, 3, 6, 7, 8


@dataclass
class Attribute:
    name: str = ""
    type: int = 0
    f: float | None = None
    i: int | None = None
    s: bytes | None = None
    floats: list[float] = field(default_factory=list)
    ints: list[int] = field(default_factory=list)
    strings: list[bytes] = field(default_factory=list)

    def value(self) -> object:
        """The attribute's value for its declared type; ProtoError if that field is unset."""
        slot = {
            ATTR_FLOAT: self.f,
            ATTR_INT: self.i,
            ATTR_STRING: self.s,
            ATTR_FLOATS: self.floats,
            ATTR_INTS: self.ints,
            ATTR_STRINGS: self.strings,
        }
        if self.type not in slot or slot[self.type] is None:
            raise ProtoError(f"attribute {self.name!r} has type {self.type} and no value")
        return slot[self.type]


@dataclass
class Node:
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    name: str = ""
    op_type: str = ""
    domain: str = ""
    attributes: list[Attribute] = field(default_factory=list)


@dataclass
class Tensor:
    name: str = ""
    data_type: int = 0
    dims: list[int] = field(default_factory=list)
    raw_data: memoryview | None = None
    float_count: int = 0  # float_data elements
    varint_data: list[memoryview] = field(default_factory=list)  # int32_data / int64_data
    varint_count: int = 0
    float_data: list[memoryview] = field(default_factory=list)

    @property
    def size(self) -> int:
        n = 1
        for d in self.dims:
            n *= d
        return n

    def elements(self) -> int:
        """How many elements the stored data holds (whichever field holds it)."""
        if self.raw_data is not None:
            itemsize = np.dtype(DTYPES[self.data_type]).itemsize
            if len(self.raw_data) % itemsize:
                raise ProtoError(f"tensor {self.name!r}: raw_data is not whole elements")
            return len(self.raw_data) // itemsize
        return self.float_count + self.varint_count

    def array(self) -> np.ndarray:
        """The values, as a NumPy array of the tensor's type and shape."""
        dtype = np.dtype(DTYPES[self.data_type]).newbyteorder("<")
        if self.raw_data is not None:
            data = np.frombuffer(self.raw_data, dtype)
        elif self.float_data:
            data = np.frombuffer(b"".join(self.float_data), "<f4").astype(dtype)
        else:
            data = np.array(self.int_values(), np.int64).astype(dtype)
        return data.reshape(self.dims)

    def int_values(self) -> list[int]:
        """The values of a small integer tensor (axes)."""
        if self.raw_data is not None:
            return [int(v) for v in np.frombuffer(self.raw_data, DTYPES[self.data_type])]
        out: list[int] = []
        for chunk in self.varint_data:
            pos = 0
            while pos < len(chunk):
                v, pos = _varint(chunk, pos)
                out.append(_signed(v, 64))
        return out


@dataclass
class ValueInfo:
    name: str = ""
    elem_type: int = 0
    # None: no shape recorded; otherwise each dim is an int (dim_value), a str (dim_param)
    # or None (neither).
    shape: list[int | str | None] | None = None


@dataclass
class Graph:
    name: str = ""
    nodes: list[Node] = field(default_factory=list)
    initializers: list[Tensor] = field(default_factory=list)
    inputs: list[ValueInfo] = field(default_factory=list)
    outputs: list[ValueInfo] = field(default_factory=list)
    value_info: list[ValueInfo] = field(default_factory=list)


@dataclass
class Model:
    ir_version: int = 0
    opsets: dict[str, int] = field(default_factory=dict)
    producer_name: str = ""
    graph: Graph | None = None


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    """Decode one varint; refuse over-long encodings, which our exporters never write (and
    which let a tag smuggle high bits that protobuf drops)."""
    result = shift = 0
    start = pos
    while True:
        if pos >= len(buf):
            raise ProtoError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            if b == 0 and pos - start > 1:
                raise ProtoError("non-canonical varint")
            if pos - start == 10 and b > 1:
                raise ProtoError("varint over 64 bits")
            return result, pos
        shift += 7
        if shift >= 70:
            raise ProtoError("varint over 64 bits")


def _signed(value: int, bits: int) -> int:
    """protobuf's int32/int64: the low `bits` bits, two's complement."""
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


class _Reader:
    """Walks fields of one message; the budget is shared by the whole file."""

    def __init__(self, budget: list[int]) -> None:
        self.budget = budget

    def fields(self, buf: memoryview, where: str):
        pos, end = 0, len(buf)
        while pos < end:
            self.budget[0] -= 1
            if self.budget[0] < 0:
                raise ProtoError(f"more than {MAX_FIELDS:,} fields")
            key, pos = _varint(buf, pos)
            if key > 0xFFFFFFFF:
                raise ProtoError(f"field tag over 32 bits in {where}")
            number, wire = key >> 3, key & 7
            if number == 0:
                raise ProtoError(f"field number 0 in {where}")
            if wire == 0:
                value, pos = _varint(buf, pos)
            elif wire == 1:
                if pos + 8 > end:
                    raise ProtoError(f"field runs past the end of {where}")
                value, pos = buf[pos : pos + 8], pos + 8
            elif wire == 2:
                size, pos = _varint(buf, pos)
                if pos + size > end:
                    raise ProtoError(f"field runs past the end of {where}")
                value, pos = buf[pos : pos + size], pos + size
            elif wire == 5:
                if pos + 4 > end:
                    raise ProtoError(f"field runs past the end of {where}")
                value, pos = buf[pos : pos + 4], pos + 4
            else:
                raise ProtoError(f"wire type {wire} in {where}")
            yield number, wire, value


class _Message:
    """Field-by-field decoding of one message against a fixed table of known fields.

    `spec` maps field number -> (name, kind, repeated). Kinds: "str", "bytes", "int32",
    "int64", "float", "msg". A field not in the table, a wire type the schema does not
    give that field, or a singular field seen twice is refused.
    """

    _WIRE = {"str": 2, "bytes": 2, "msg": 2, "int32": 0, "int64": 0, "float": 5}
    # Tensor data, located rather than decoded (a 100 MB initializer stays a memoryview):
    # "f32data" keeps float32 bytes, "vdata" varint bytes, packed or one value at a time.
    _DATA = {"f32data": 5, "vdata": 0}

    def __init__(self, reader: _Reader, buf: memoryview, where: str, spec: dict) -> None:
        self.values: dict[str, list] = {}
        for number, wire, value in reader.fields(buf, where):
            if number not in spec:
                what = _KNOWN_REFUSALS.get((id(spec), number))
                what = f" ({what})" if what else ""
                raise ProtoError(
                    f"{where} has field {number}{what}, which rnn-textgen never writes"
                )
            name, kind, repeated = spec[number]
            items = self.values.setdefault(name, [])
            if items and not repeated:
                raise ProtoError(f"{where}.{name} appears twice")
            if kind in self._DATA:
                items.append(self._data(kind, wire, value, where, name))
                continue
            expected = self._WIRE[kind]
            if wire == expected:
                items.append(self._scalar(kind, value, where, name))
            elif repeated and wire == 2 and kind in ("int32", "int64", "float"):
                items.extend(self._packed(kind, value, where, name))
            else:
                raise ProtoError(f"{where}.{name} has wire type {wire}")

    @staticmethod
    def _scalar(kind: str, value, where: str, name: str):
        if kind == "str":
            try:
                return bytes(value).decode("utf-8")
            except UnicodeDecodeError:
                raise ProtoError(f"{where}.{name} is not UTF-8") from None
        if kind == "int32":
            return _signed(value, 32)
        if kind == "int64":
            return _signed(value, 64)
        if kind == "float":
            return float(np.frombuffer(value, "<f4")[0])
        return value  # bytes, msg: a memoryview

    @staticmethod
    def _data(kind: str, wire: int, value, where: str, name: str) -> memoryview:
        if wire == 2:
            if kind == "f32data" and len(value) % 4:
                raise ProtoError(f"{where}.{name}: packed floats are not whole")
            return value
        if wire != _Message._DATA[kind]:
            raise ProtoError(f"{where}.{name} has wire type {wire}")
        if kind == "f32data":
            return value
        return memoryview(encode_varint(value))

    @staticmethod
    def _packed(kind: str, value: memoryview, where: str, name: str) -> list:
        if kind == "float":
            if len(value) % 4:
                raise ProtoError(f"{where}.{name}: packed floats are not whole")
            return [float(x) for x in np.frombuffer(value, "<f4")]
        out, pos = [], 0
        while pos < len(value):
            v, pos = _varint(value, pos)
            out.append(_signed(v, 32 if kind == "int32" else 64))
        return out

    def one(self, name: str, default=None):
        items = self.values.get(name)
        return items[0] if items else default

    def all(self, name: str) -> list:
        return self.values.get(name, [])


# The schema subset (field numbers from onnx.proto). Fields absent here are refused.
_MODEL = {
    1: ("ir_version", "int64", False),
    2: ("producer_name", "str", False),
    3: ("producer_version", "str", False),
    4: ("domain", "str", False),
    5: ("model_version", "int64", False),
    6: ("doc_string", "str", False),
    7: ("graph", "msg", False),
    8: ("opset_import", "msg", True),
    14: ("metadata_props", "msg", True),
}
_OPSET = {1: ("domain", "str", False), 2: ("version", "int64", False)}
_ENTRY = {1: ("key", "str", False), 2: ("value", "str", False)}
_GRAPH = {
    1: ("node", "msg", True),
    2: ("name", "str", False),
    5: ("initializer", "msg", True),
    10: ("doc_string", "str", False),
    11: ("input", "msg", True),
    12: ("output", "msg", True),
    13: ("value_info", "msg", True),
}
_NODE = {
    1: ("input", "str", True),
    2: ("output", "str", True),
    3: ("name", "str", False),
    4: ("op_type", "str", False),
    5: ("attribute", "msg", True),
    6: ("doc_string", "str", False),
    7: ("domain", "str", False),
}
_ATTRIBUTE = {
    1: ("name", "str", False),
    2: ("f", "float", False),
    3: ("i", "int64", False),
    4: ("s", "bytes", False),
    7: ("floats", "float", True),
    8: ("ints", "int64", True),
    9: ("strings", "bytes", True),
    13: ("doc_string", "str", False),
    20: ("type", "int32", False),
}
_TENSOR = {
    1: ("dims", "int64", True),
    2: ("data_type", "int32", False),
    8: ("name", "str", False),
    4: ("float_data", "f32data", True),
    5: ("int32_data", "vdata", True),
    7: ("int64_data", "vdata", True),
    9: ("raw_data", "bytes", False),
    12: ("doc_string", "str", False),
    14: ("data_location", "int32", False),
}
_VALUE_INFO = {
    1: ("name", "str", False),
    2: ("type", "msg", False),
    3: ("doc_string", "str", False),
}
_TYPE = {1: ("tensor_type", "msg", False), 6: ("denotation", "str", False)}
_TENSOR_TYPE = {1: ("elem_type", "int32", False), 2: ("shape", "msg", False)}
_SHAPE = {1: ("dim", "msg", True)}
_DIM = {
    1: ("dim_value", "int64", False),
    2: ("dim_param", "str", False),
    3: ("denotation", "str", False),
}


# Fields of the schema that are refused by name, so the message says what was found.
_KNOWN_REFUSALS = {
    (id(_MODEL), 20): "training info",
    (id(_MODEL), 25): "model-local functions",
    (id(_GRAPH), 15): "sparse initializers",
    (id(_NODE), 8): "a function overload",
    (id(_ATTRIBUTE), 5): "a tensor attribute",
    (id(_ATTRIBUTE), 6): "a subgraph",
    (id(_ATTRIBUTE), 10): "tensor attributes",
    (id(_ATTRIBUTE), 11): "subgraphs",
    (id(_ATTRIBUTE), 22): "a sparse tensor",
    (id(_TENSOR), 3): "a segment",
    (id(_TENSOR), 13): "external data: tensor bytes in another file",
}


def _tensor(reader: _Reader, buf: memoryview, where: str) -> Tensor:
    msg = _Message(reader, buf, where, _TENSOR)
    if msg.one("data_location", 0) != 0:
        raise ProtoError(f"{where} keeps its data outside the file (external data)")
    out = Tensor(
        name=msg.one("name", ""),
        data_type=msg.one("data_type", 0),
        dims=msg.all("dims"),
        raw_data=msg.one("raw_data"),
    )
    floats = msg.all("float_data")
    ints32, ints64 = msg.all("int32_data"), msg.all("int64_data")
    out.float_data = floats
    out.float_count = sum(len(v) // 4 for v in floats)
    out.varint_data = ints32 or ints64
    out.varint_count = sum(_count_varints(v, where) for v in out.varint_data)
    stored = [x for x in (out.raw_data, floats, ints32, ints64) if x is not None and len(x)]
    if len(stored) > 1:
        raise ProtoError(f"tensor {out.name!r} stores its data in two fields")
    if out.data_type not in DTYPES:
        raise ProtoError(f"tensor {out.name!r} has data type {out.data_type}")
    if any(d < 0 for d in out.dims):
        raise ProtoError(f"tensor {out.name!r} has a negative dimension")
    if out.elements() != out.size:
        raise ProtoError(f"tensor {out.name!r} holds {out.elements()} values for {out.dims}")
    return out


def encode_varint(value: int) -> bytes:
    """The canonical protobuf encoding of `value` (negative: as its 64-bit two's complement)."""
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = value & 0x7F
        value >>= 7
        out.append(b | (0x80 if value else 0))
        if not value:
            return bytes(out)


# --- writing: the few messages a graph built at load needs (see runtime.step_graph) -------


def _key(tag: int, wire: int) -> bytes:
    return encode_varint(tag << 3 | wire)


def _bytes_field(tag: int, payload: bytes) -> bytes:
    return _key(tag, 2) + encode_varint(len(payload)) + payload


def _int_field(tag: int, value: int) -> bytes:
    return _key(tag, 0) + encode_varint(value)


# A message as the pieces that make it up: weights stay in their arrays until encode_model
# joins everything once (a model of a few MB would otherwise be copied at every level).
Parts = list[bytes | memoryview]


def _parts_field(tag: int, parts: Parts) -> Parts:
    return [_key(tag, 2), encode_varint(sum(len(p) for p in parts)), *parts]


def encode_tensor(name: str, array: np.ndarray) -> Parts:
    """A TensorProto holding `array` (one of DTYPES) as raw little-endian data."""
    codes = {np.dtype(t): code for code, t in DTYPES.items()}
    data = np.ascontiguousarray(array.astype(array.dtype.newbyteorder("<"), copy=False))
    head = b"".join(_int_field(1, d) for d in array.shape)
    head += _int_field(2, codes[array.dtype]) + _bytes_field(8, name.encode())
    return [head, *_parts_field(9, [memoryview(data).cast("B")])]


def encode_node(
    op_type: str,
    inputs: list[str],
    outputs: list[str],
    *,
    name: str = "",
    domain: str = "",
    attributes: list[Attribute] | None = None,
) -> bytes:
    """A NodeProto; `attributes` as the parser returns them (int, ints, float, strings)."""
    out = b"".join(_bytes_field(1, x.encode()) for x in inputs)
    out += b"".join(_bytes_field(2, x.encode()) for x in outputs)
    out += _bytes_field(3, name.encode()) + _bytes_field(4, op_type.encode())
    for attr in attributes or []:
        body = _bytes_field(1, attr.name.encode()) + _int_field(20, attr.type)
        if attr.type == ATTR_INT:
            body += _int_field(3, int(attr.i or 0))
        elif attr.type == ATTR_FLOAT:
            body += _key(2, 5) + np.float32(attr.f).astype("<f4").tobytes()
        elif attr.type == ATTR_INTS:
            body += b"".join(_int_field(8, v) for v in attr.ints)
        elif attr.type == ATTR_STRINGS:
            body += b"".join(_bytes_field(9, v) for v in attr.strings)
        else:
            raise ProtoError(f"cannot write attribute {attr.name!r} of type {attr.type}")
        out += _bytes_field(5, body)
    if domain:
        out += _bytes_field(7, domain.encode())
    return out


def encode_value_info(name: str, elem_type: int, shape: list[int | str]) -> bytes:
    """A ValueInfoProto for a tensor (dims: int values or symbolic names)."""
    dims = b"".join(
        _bytes_field(1, _int_field(1, d) if isinstance(d, int) else _bytes_field(2, d.encode()))
        for d in shape
    )
    tensor_type = _int_field(1, elem_type) + _bytes_field(2, dims)
    return _bytes_field(1, name.encode()) + _bytes_field(2, _bytes_field(1, tensor_type))


def encode_model(
    nodes: list[bytes],
    initializers: list[Parts],
    inputs: list[bytes],
    outputs: list[bytes],
    *,
    ir_version: int,
    opsets: dict[str, int],
    name: str = "graph",
) -> bytes:
    """A ModelProto from encoded nodes, initializers and value infos."""
    graph: Parts = [_bytes_field(1, n) for n in nodes] + [_bytes_field(2, name.encode())]
    for t in initializers:
        graph += _parts_field(5, t)
    graph += [_bytes_field(11, v) for v in inputs] + [_bytes_field(12, v) for v in outputs]
    out: Parts = [_int_field(1, ir_version), _bytes_field(2, b"rnn-textgen")]
    out += _parts_field(7, graph)
    for domain, version in opsets.items():
        out.append(_bytes_field(8, _bytes_field(1, domain.encode()) + _int_field(2, version)))
    return b"".join(out)


def _count_varints(buf: memoryview, where: str) -> int:
    """Number of varints in a packed field, checked to end on a whole varint."""
    if not len(buf):
        return 0
    arr = np.frombuffer(buf, np.uint8)
    if arr[-1] & 0x80:
        raise ProtoError(f"{where}: packed varints are truncated")
    return int(np.count_nonzero(arr < 0x80))


def _value_info(reader: _Reader, buf: memoryview, where: str) -> ValueInfo:
    msg = _Message(reader, buf, where, _VALUE_INFO)
    out = ValueInfo(name=msg.one("name", ""))
    type_buf = msg.one("type")
    if type_buf is None:
        return out
    type_msg = _Message(reader, type_buf, f"{where}.type", _TYPE)
    tensor_buf = type_msg.one("tensor_type")
    if tensor_buf is None:
        raise ProtoError(f"{where} is not a tensor")
    tensor = _Message(reader, tensor_buf, f"{where}.type.tensor_type", _TENSOR_TYPE)
    out.elem_type = tensor.one("elem_type", 0)
    shape_buf = tensor.one("shape")
    if shape_buf is not None:
        out.shape = []
        for dim_buf in _Message(reader, shape_buf, f"{where}.shape", _SHAPE).all("dim"):
            dim = _Message(reader, dim_buf, f"{where}.shape.dim", _DIM)
            if "dim_value" in dim.values and "dim_param" in dim.values:
                raise ProtoError(f"{where}: a dimension with both a value and a name")
            out.shape.append(dim.one("dim_value", dim.one("dim_param")))
    return out


def _attribute(reader: _Reader, buf: memoryview, where: str) -> Attribute:
    msg = _Message(reader, buf, where, _ATTRIBUTE)
    s = msg.one("s")
    return Attribute(
        name=msg.one("name", ""),
        type=msg.one("type", 0),
        f=msg.one("f"),
        i=msg.one("i"),
        s=bytes(s) if s is not None else None,
        floats=msg.all("floats"),
        ints=msg.all("ints"),
        strings=[bytes(x) for x in msg.all("strings")],
    )


def _graph(reader: _Reader, buf: memoryview) -> Graph:
    msg = _Message(reader, buf, "graph", _GRAPH)
    graph = Graph(name=msg.one("name", ""))
    for i, node_buf in enumerate(msg.all("node")):
        node = _Message(reader, node_buf, f"node {i}", _NODE)
        graph.nodes.append(
            Node(
                inputs=node.all("input"),
                outputs=node.all("output"),
                name=node.one("name", ""),
                op_type=node.one("op_type", ""),
                domain=node.one("domain", ""),
                attributes=[
                    _attribute(reader, a, f"node {i} attribute") for a in node.all("attribute")
                ],
            )
        )
    graph.initializers = [
        _tensor(reader, t, f"initializer {i}") for i, t in enumerate(msg.all("initializer"))
    ]
    graph.inputs = [_value_info(reader, v, "graph input") for v in msg.all("input")]
    graph.outputs = [_value_info(reader, v, "graph output") for v in msg.all("output")]
    graph.value_info = [_value_info(reader, v, "value_info") for v in msg.all("value_info")]
    return graph


def parse_model(data: bytes | memoryview) -> Model:
    """Parse a serialized ModelProto; ProtoError says what is not in our exporters' form."""
    reader = _Reader([MAX_FIELDS])
    msg = _Message(reader, memoryview(data), "model", _MODEL)
    model = Model(ir_version=msg.one("ir_version", 0), producer_name=msg.one("producer_name", ""))
    for opset_buf in msg.all("opset_import"):
        opset = _Message(reader, opset_buf, "opset_import", _OPSET)
        domain = opset.one("domain", "")
        if domain in model.opsets:
            raise ProtoError(f"opset domain {domain!r} imported twice")
        model.opsets[domain] = opset.one("version", 0)
    for entry in msg.all("metadata_props"):
        _Message(reader, entry, "metadata_props", _ENTRY)  # checked, not used
    graph_buf = msg.one("graph")
    if graph_buf is None:
        raise ProtoError("no graph")
    model.graph = _graph(reader, graph_buf)
    return model
