"""Reads the golden records in schemas/testdata with Python Avro libraries.

Run from the repository root, in a virtualenv with `pip install fastavro avro`:

    python schemas/testdata/interop/check.py schemas

For every kind it checks the single-object header against the CRC-64-AVRO
fingerprint that fastavro computes from the .avsc, decodes the body with
fastavro and with Apache Avro's Python library, and compares every field with
testdata/<kind>.json. It exits non-zero on any mismatch.
"""

import datetime
import io
import json
import sys

import avro.io
import avro.schema
import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form

KINDS = ["request", "task", "manifest", "result", "reply"]
EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


def plain(v):
    """Maps a decoded datum onto the form of the .json files."""
    if isinstance(v, datetime.datetime):
        return (v - EPOCH) // datetime.timedelta(milliseconds=1)
    if isinstance(v, bytes):
        return v.decode("latin-1")  # Avro JSON: code points are the bytes
    if isinstance(v, dict):
        return {k: plain(x) for k, x in v.items()}
    if isinstance(v, list):
        return [plain(x) for x in v]
    return v


def unwrap_unions(v, schema):
    """The .json writes a union value as {"type": value}; readers return the value."""
    if isinstance(schema, list):
        if v is None:
            return None
        (branch, inner), = v.items()
        return unwrap_unions(inner, next(s for s in schema if s != "null"))
    if isinstance(schema, dict):
        t = schema["type"]
        if t == "record":
            return {f["name"]: unwrap_unions(v[f["name"]], f["type"]) for f in schema["fields"]}
        if t == "array":
            return [unwrap_unions(x, schema["items"]) for x in v]
        if t == "map":
            return {k: unwrap_unions(x, schema["values"]) for k, x in v.items()}
    return v


def main(root):
    failed = False
    for kind in KINDS:
        src = open(f"{root}/{kind}.avsc", encoding="utf-8").read()
        record = open(f"{root}/testdata/{kind}.bin", "rb").read()
        want = unwrap_unions(json.load(open(f"{root}/testdata/{kind}.json", encoding="utf-8")), json.loads(src))

        if record[:2] != b"\xc3\x01":
            print(f"{kind}: no single-object magic")
            failed = True
            continue
        parsed = fastavro.parse_schema(json.loads(src))
        fp = bytes.fromhex(fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO"))
        print(f"{kind}: header {record[2:10].hex()}, fastavro fingerprint {fp.hex()}: {'match' if fp == record[2:10] else 'MISMATCH'}")
        failed |= fp != record[2:10]

        got = {
            "fastavro": fastavro.schemaless_reader(io.BytesIO(record[10:]), parsed),
            "apache avro": avro.io.DatumReader(avro.schema.parse(src)).read(avro.io.BinaryDecoder(io.BytesIO(record[10:]))),
        }
        for reader, datum in got.items():
            datum = plain(datum)
            bad = [k for k in want if datum.get(k) != want[k]]
            for k in bad:
                print(f"  {reader}: field {k}: read {datum.get(k)!r}, want {want[k]!r}")
            if not bad:
                print(f"  {reader}: every field as in {kind}.json")
            failed |= bool(bad)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "schemas"))
