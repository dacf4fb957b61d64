"""Produce through librdkafka's C API directly (ctypes): what confluent-kafka's Python producer refuses to send,
such as a header name that is not UTF-8, which another client (Java, Go, librdkafka) may send and the writer
must survive. The librdkafka is the one confluent-kafka ships (confluent_kafka.libs)."""

from __future__ import annotations

import ctypes
import glob
import os

import confluent_kafka

# rd_kafka_vtype_t (rdkafka.h)
_TOPIC, _PARTITION, _VALUE, _KEY, _MSGFLAGS, _HEADER = 1, 3, 4, 5, 7, 9
_MSG_F_COPY = 0x2
_PRODUCER = 0


class _Header(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("val", ctypes.c_void_p), ("size", ctypes.c_ssize_t)]


class _Mem(ctypes.Structure):
    _fields_ = [("ptr", ctypes.c_void_p), ("size", ctypes.c_size_t)]


class _Union(ctypes.Union):
    _fields_ = [("cstr", ctypes.c_char_p), ("i", ctypes.c_int32), ("mem", _Mem), ("header", _Header),
                ("_pad", ctypes.c_char * 64)]


class _Vu(ctypes.Structure):
    _fields_ = [("vtype", ctypes.c_int), ("u", _Union)]


def _library() -> ctypes.CDLL:
    libs = os.path.join(os.path.dirname(os.path.dirname(confluent_kafka.__file__)), "confluent_kafka.libs")
    lib = ctypes.CDLL(sorted(glob.glob(os.path.join(libs, "librdkafka*.so*")))[0])
    lib.rd_kafka_conf_new.restype = ctypes.c_void_p
    lib.rd_kafka_conf_set.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p,
                                      ctypes.c_size_t]
    lib.rd_kafka_new.restype = ctypes.c_void_p
    lib.rd_kafka_new.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t]
    lib.rd_kafka_produceva.restype = ctypes.c_void_p
    lib.rd_kafka_produceva.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
    lib.rd_kafka_flush.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.rd_kafka_error_string.restype = ctypes.c_char_p
    lib.rd_kafka_error_string.argtypes = [ctypes.c_void_p]
    lib.rd_kafka_destroy.argtypes = [ctypes.c_void_p]
    return lib


def produce_raw(config: dict[str, str], topic: str, key: bytes | None, value: bytes | None,
                headers: list[tuple[bytes, bytes]], partition: int = -1) -> None:
    """One message, header names as raw bytes; raises unless it left the queue (the caller reads it back)."""
    lib = _library()
    error = ctypes.create_string_buffer(512)
    conf = lib.rd_kafka_conf_new()
    for name, setting in config.items():
        if lib.rd_kafka_conf_set(conf, name.encode(), str(setting).encode(), error, 512) != 0:
            raise RuntimeError(error.value.decode())
    handle = lib.rd_kafka_new(_PRODUCER, conf, error, 512)
    if not handle:
        raise RuntimeError(error.value.decode())
    keep: list = []  # the buffers must outlive the call

    def arg(vtype: int) -> _Vu:
        item = _Vu()
        item.vtype = vtype
        return item

    args = [arg(_TOPIC), arg(_PARTITION), arg(_MSGFLAGS)]
    args[0].u.cstr = topic.encode()
    args[1].u.i = partition
    args[2].u.i = _MSG_F_COPY
    for vtype, data in ((_KEY, key), (_VALUE, value)):
        if data is not None:
            buffer = ctypes.create_string_buffer(data, len(data))
            keep.append(buffer)
            item = arg(vtype)
            item.u.mem.ptr, item.u.mem.size = ctypes.cast(buffer, ctypes.c_void_p), len(data)
            args.append(item)
    for name, data in headers:
        name_buffer, buffer = ctypes.create_string_buffer(name), ctypes.create_string_buffer(data, len(data))
        keep += [name_buffer, buffer]
        item = arg(_HEADER)
        item.u.header.name = ctypes.cast(name_buffer, ctypes.c_char_p)
        item.u.header.val, item.u.header.size = ctypes.cast(buffer, ctypes.c_void_p), len(data)
        args.append(item)
    try:
        failed = lib.rd_kafka_produceva(handle, (_Vu * len(args))(*args), len(args))
        if failed:
            raise RuntimeError(lib.rd_kafka_error_string(failed).decode())
        if lib.rd_kafka_flush(handle, 30_000) != 0:
            raise RuntimeError("not acknowledged within 30 s")
    finally:
        lib.rd_kafka_destroy(handle)
