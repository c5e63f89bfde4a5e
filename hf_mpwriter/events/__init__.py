"""Event files: TFRecord framing, protobuf encoding, and the crash-safe event-file writer.

Written by the writer side, read back (cut at whole records) by the uploader side.
"""
