"""Stable hashing of raw ids (integers or strings) into a feature's cardinality, and random
generators keyed by stable hashes of names."""

import zlib
from typing import Any

import numpy as np
import pyarrow as pa

_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)


def _splitmix64(keys: np.ndarray) -> np.ndarray:
    """The splitmix64 finalizer: a bijection of uint64 that mixes every input bit."""
    with np.errstate(over="ignore"):
        z = keys.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def _fnv1a64(strings: pa.Array) -> np.ndarray:
    """FNV-1a 64 of the bytes (UTF-8 for strings) of every value; one vectorized pass per
    byte position, none per value."""
    strings = strings.cast(pa.large_binary())
    _, offsets_buffer, data_buffer = strings.buffers()
    first = strings.offset
    offsets = np.frombuffer(offsets_buffer, np.int64)[first : first + len(strings) + 1]
    data = np.frombuffer(data_buffer, np.uint8) if data_buffer else np.zeros(0, np.uint8)
    starts, lengths = offsets[:-1], np.diff(offsets)
    keys = np.full(len(strings), _FNV_OFFSET, np.uint64)
    with np.errstate(over="ignore"):
        for position in range(int(lengths.max(initial=0))):
            active = np.flatnonzero(lengths > position)
            byte = data[starts[active] + position].astype(np.uint64)
            keys[active] = (keys[active] ^ byte) * _FNV_PRIME
    return keys


def hash_ids(values: Any, cardinality: int) -> np.ndarray:
    """Map raw ids into [0, cardinality) with a stable hash (the hashing trick).

    Integer ids hash by the splitmix64 finalizer of their 64-bit two's complement;
    strings and bytes by FNV-1a 64 of their (UTF-8) bytes, then the same finalizer; the
    row is that hash modulo cardinality. Unlike Python's hash(), which is salted per
    process, this gives the same rows in every process, on every platform and release,
    so serving code can reproduce it. The integer 7 and the string "7" differ. Distinct
    raw ids can share a row: with n distinct ids, about n / cardinality of them collide
    with another, so choose a cardinality several times the number of distinct ids.

    Args:
        values: integer or string ids: a numpy array, a pyarrow array or a sequence.
        cardinality: number of rows of the feature's embedding table.

    Returns:
        1-D int64 array of rows in [0, cardinality), one per value.
    """
    if cardinality < 1:
        raise ValueError(f"cardinality must be at least 1, not {cardinality}")
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if isinstance(values, np.ndarray) and values.dtype.kind in "iub":
        keys = values.astype(np.int64).view(np.uint64)
    else:
        array = values if isinstance(values, pa.Array) else pa.array(values)
        if pa.types.is_dictionary(array.type):
            array = array.dictionary_decode()
        if array.null_count:
            raise ValueError(f"cannot hash {array.null_count} null ids")
        if pa.types.is_integer(array.type) or pa.types.is_boolean(array.type):
            ints = array.to_numpy(zero_copy_only=False).astype(np.int64)
            keys = ints.view(np.uint64)
        elif is_bytes_type(array.type):
            # Hash every distinct value once, then look the rows up.
            encoded = array.dictionary_encode()
            unique_keys = _fnv1a64(encoded.dictionary)
            keys = unique_keys[encoded.indices.to_numpy(zero_copy_only=False)]
        else:
            raise TypeError(f"cannot hash ids of type {array.type}; use integers or strings")
    return (_splitmix64(keys) % np.uint64(cardinality)).astype(np.int64)


def is_bytes_type(data_type: pa.DataType) -> bool:
    return any(
        check(data_type)
        for check in (
            pa.types.is_string,
            pa.types.is_large_string,
            pa.types.is_binary,
            pa.types.is_large_binary,
        )
    )


def keyed_rng(seed: int, *keys: str) -> np.random.Generator:
    """A generator keyed by the seed and stable hashes of keys.

    CRC32 rather than Python's hash(), which is salted per process; keying each
    feature separately keeps its column unchanged when other features are added.
    """
    return np.random.default_rng([seed, *(zlib.crc32(key.encode()) for key in keys)])
