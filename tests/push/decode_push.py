#!/usr/bin/env python3
"""A second decoder of flameprobe's pushes, not flameprobe's own: Python's
protobuf package with the messages compiled by grpcio-tools (PyPI) from the
project's src/push/push.proto.

usage: decode_push.py PROTO BODY

Prints one JSON document: {"series": [{"labels": [[name, value], ...],
"samples": [{"id": ..., "raw_profile": HEX}]}], "round_trip": bool}, where
round_trip says that re-encoding the parsed request gives the same bytes
(nothing was left unparsed or unknown).
"""
import importlib
import json
import os
import sys
import tempfile

from grpc_tools import protoc


def main():
    proto, body = sys.argv[1], sys.argv[2]
    with open(body, "rb") as f:
        data = f.read()
    with tempfile.TemporaryDirectory() as out:
        include = os.path.dirname(os.path.abspath(proto))
        rc = protoc.main(
            ["protoc", f"-I{include}", f"--python_out={out}", os.path.basename(proto)]
        )
        if rc != 0:
            sys.exit(f"protoc failed on {proto}: {rc}")
        sys.path.insert(0, out)
        messages = importlib.import_module(
            os.path.splitext(os.path.basename(proto))[0] + "_pb2"
        )
        req = messages.PushRequest()
        req.ParseFromString(data)
    doc = {
        "series": [
            {
                "labels": [[l.name, l.value] for l in s.labels],
                "samples": [
                    {"id": x.ID, "raw_profile": x.raw_profile.hex()} for x in s.samples
                ],
            }
            for s in req.series
        ],
        "round_trip": req.SerializeToString() == data,
    }
    json.dump(doc, sys.stdout)


if __name__ == "__main__":
    main()
