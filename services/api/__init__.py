"""Generated protobuf/gRPC stubs for esgd.v1 (see generate.py; do not edit by hand)."""
